//go:build linux

package lossyfs_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The bbolt child commits boltSynced transactions with bbolt's fsync,
// then boltUnsynced with NoSync.
const boltSynced, boltUnsynced = 20, 30

func boltKey(i int) []byte   { return fmt.Appendf(nil, "k%04d", i) }
func boltValue(i int) []byte { return bytes.Repeat(fmt.Appendf(nil, "v%04d-", i), 200) }

// boltWorkload is the bbolt child's work on the database at path.
func boltWorkload(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	for i := range boltSynced + boltUnsynced {
		db.NoSync = i >= boltSynced
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put(boltKey(i), boltValue(i))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// boltCheck opens the database at path, runs bbolt's consistency check
// and returns the number of commits visible, which must be a prefix.
func boltCheck(path string) (string, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return "", fmt.Errorf("reopen: %w", err)
	}
	defer db.Close()
	visible := 0
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("check: %w", err)
		}
		b := tx.Bucket([]byte("b"))
		for i := range boltSynced + boltUnsynced {
			v := b.Get(boltKey(i))
			switch {
			case v == nil:
			case i != visible:
				return fmt.Errorf("key %d present after a missing key %d", i, visible)
			case !bytes.Equal(v, boltValue(i)):
				return fmt.Errorf("key %d: got %d bytes %.20q..., want %.20q...", i, len(v), v, boltValue(i))
			default:
				visible++
			}
		}
		return nil
	})
	if err != nil {
		return err.Error(), nil
	}
	return strconv.Itoa(visible), db.Close()
}

// TestBboltOnPowerLoss runs bbolt in a child process on the mount (flock,
// read-only mmap, pwrite, fdatasync), SIGKILLs it, loses power and reopens
// the database in another child: it must pass bbolt's consistency check, hold every synced
// commit and a prefix of the NoSync ones, and, with the fixed seeds, lose
// the last NoSync commit at least once — the canary firing.
func TestBboltOnPowerLoss(t *testing.T) {
	fsys, mnt, _ := mount(t)
	lost := 0
	for seed := range uint64(6) {
		name := fmt.Sprintf("seed%d.db", seed)
		path := filepath.Join(mnt, name)
		runAndKill(t, "bbolt", path)
		rep, err := fsys.PowerLoss(rand.New(rand.NewPCG(seed, 3)))
		if err != nil {
			t.Fatalf("seed %d: power loss: %v", seed, err)
		}
		t.Logf("seed %d: %v", seed, rep)
		if len(rep.Files) != 1 || rep.Files[0].Path != name {
			t.Fatalf("seed %d: got report %v, want one entry for %s", seed, rep, name)
		}
		fr := rep.Files[0]

		out := runOutput(t, "boltcheck", path)
		visible, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("seed %d: reopen and check: %s", seed, out)
		}
		t.Logf("seed %d: %d of %d commits visible (%d synced)", seed, visible, boltSynced+boltUnsynced, boltSynced)
		if visible < boltSynced {
			t.Fatalf("seed %d: got %d commits, want at least the %d synced ones", seed, visible, boltSynced)
		}
		if fr.Kept == fr.Pending && visible != boltSynced+boltUnsynced {
			t.Fatalf("seed %d: every pending write kept, got %d commits, want all %d", seed, visible, boltSynced+boltUnsynced)
		}
		if visible < boltSynced+boltUnsynced {
			lost++
		}
	}
	if lost == 0 {
		t.Fatal("no seed lost a NoSync commit: the canary never fired")
	}
}
