package boltfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/heraldhq/herald/storage/boltfile"
)

// newBolt creates a bbolt file with one committed bucket and returns its
// path and size.
func newBolt(t *testing.T) (string, int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, fi.Size()
}

func TestCheckTorn(t *testing.T) {
	t.Run("whole file kept", func(t *testing.T) {
		path, _ := newBolt(t)
		if removed, err := boltfile.CheckTorn(path); removed || err != nil {
			t.Fatalf("got removed %v, %v; want kept", removed, err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if removed, err := boltfile.CheckTorn(filepath.Join(t.TempDir(), "none.db")); removed || err != nil {
			t.Fatalf("got removed %v, %v; want nothing", removed, err)
		}
	})
	t.Run("creation cut short: removed, and bbolt opens a new one", func(t *testing.T) {
		path, _ := newBolt(t)
		if err := os.Truncate(path, 8318); err != nil { // two meta pages and a torn third, as a power loss left one
			t.Fatal(err)
		}
		if removed, err := boltfile.CheckTorn(path); !removed || err != nil {
			t.Fatalf("got removed %v, %v; want removed", removed, err)
		}
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatalf("open after removal: %v", err)
		}
		_ = db.Close()
	})
	t.Run("committed file cut short: refused", func(t *testing.T) {
		path, size := newBolt(t)
		// Grow the file's high-water mark past its end the way lost synced
		// pages would: keep the first four pages of a file that needs more.
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		big := make([]byte, 64<<10)
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte("k"), big) }); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		if err := os.Truncate(path, max(size, 4*int64(os.Getpagesize()))); err != nil {
			t.Fatal(err)
		}
		removed, err := boltfile.CheckTorn(path)
		if removed || err == nil || !strings.Contains(err.Error(), "lost data it had synced") {
			t.Fatalf("got removed %v, %v; want a refusal saying the disk lost synced data", removed, err)
		}
	})
}
