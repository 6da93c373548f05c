//go:build linux

package lossyfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// The pebble child sets pebbleSynced keys with pebble.Sync, flushing the
// memtable halfway (an sstable, a manifest edit), then pebbleUnsynced
// with pebble.NoSync.
const pebbleSynced, pebbleUnsynced = 200, 200

func pebbleKey(i int) []byte   { return fmt.Appendf(nil, "key%05d", i) }
func pebbleValue(i int) []byte { return bytes.Repeat(fmt.Appendf(nil, "%05d", i), 40) }

// pebbleWorkload is the pebble child's work on the store in dir.
func pebbleWorkload(dir string) error {
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		return err
	}
	for i := range pebbleSynced + pebbleUnsynced {
		opts := pebble.Sync
		if i >= pebbleSynced {
			opts = pebble.NoSync
		}
		if err := db.Set(pebbleKey(i), pebbleValue(i), opts); err != nil {
			return err
		}
		if i == pebbleSynced/2 {
			if err := db.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestPebbleOnPowerLoss runs Pebble in a child process on the mount (WAL
// write+fsync, sstable flush, manifest rename and directory fsync),
// SIGKILLs it, loses power and reopens: every synced key must be there,
// and the NoSync keys that survive must be a prefix.
func TestPebbleOnPowerLoss(t *testing.T) {
	fsys, mnt, _ := mount(t)
	for seed := range uint64(2) {
		dir := fmt.Sprintf("%s/seed%d", mnt, seed)
		runAndKill(t, "pebble", dir)
		rep, err := fsys.PowerLoss(rand.New(rand.NewPCG(seed, 4)))
		if err != nil {
			t.Fatalf("seed %d: power loss: %v", seed, err)
		}
		t.Logf("seed %d: %v", seed, rep)
		db, err := pebble.Open(dir, &pebble.Options{})
		if err != nil {
			t.Fatalf("seed %d: reopen: %v", seed, err)
		}
		visible := 0
		for i := range pebbleSynced + pebbleUnsynced {
			v, closer, err := db.Get(pebbleKey(i))
			if errors.Is(err, pebble.ErrNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("seed %d: get %d: %v", seed, i, err)
			}
			ok := bytes.Equal(v, pebbleValue(i))
			closer.Close() // best effort: releases a read buffer
			if !ok {
				t.Fatalf("seed %d: key %d: wrong value", seed, i)
			}
			if i != visible {
				t.Fatalf("seed %d: key %d present after a missing key %d", seed, i, visible)
			}
			visible++
		}
		if err := db.Close(); err != nil {
			t.Fatalf("seed %d: close: %v", seed, err)
		}
		t.Logf("seed %d: %d of %d keys visible (%d synced)", seed, visible, pebbleSynced+pebbleUnsynced, pebbleSynced)
		if visible < pebbleSynced {
			t.Fatalf("seed %d: got %d keys, want at least the %d synced ones", seed, visible, pebbleSynced)
		}
	}
}
