package storage_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/storage"
	"github.com/heraldhq/herald/storage/storagetest"
)

// bigText is a post of about 32 KB: each one needs new pages.
var bigText = strings.Repeat("0123456789abcdef", 2000)

// TestApplyNoRoom applies posts until the state file has no room, once on
// a full filesystem and once at Options.MaxSize: Apply must fail with
// ErrNoSpace and apply nothing, and the same entries must apply once there
// is room (the filler removed, or the file reopened with a larger limit).
func TestApplyNoRoom(t *testing.T) {
	tests := []struct {
		name string
		// open opens the DB; fill then takes its room away and returns a
		// function that gives it back.
		open func(t *testing.T) (db *storage.DB, fill func() (makeRoom func() *storage.DB))
	}{
		{"full filesystem", func(t *testing.T) (*storage.DB, func() func() *storage.DB) {
			dir := storagetest.MountTmpfs(t, 2<<20)
			db := openAt(t, filepath.Join(dir, "state.db"), storage.Options{})
			return db, func() func() *storage.DB {
				filler := storagetest.Fill(t, dir, 0)
				return func() *storage.DB {
					filler.Remove()
					return db
				}
			}
		}},
		{"max size", func(t *testing.T) (*storage.DB, func() func() *storage.DB) {
			path := filepath.Join(t.TempDir(), "state.db")
			db, err := storage.Open(path, storage.Options{MaxSize: 1 << 20, InitialMmapSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			return db, func() func() *storage.DB {
				return func() *storage.DB {
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					return openAt(t, path, storage.Options{})
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, fill := tt.open(t)
			h := &harness{t: t, db: db, term: 1}
			h.ok(as("alice", createCmd("c", false)))
			makeRoom := fill()
			var (
				entries []storage.Entry
				err     error
				posts   int
			)
			for ; posts < 1000; posts++ {
				entries = h.entries(as("alice", postCmd("c", bigText, "")))
				if _, _, err = h.db.Apply(entries); err != nil {
					break
				}
			}
			t.Logf("post %d: %v", posts+1, err)
			if !errors.Is(err, storage.ErrNoSpace) {
				t.Fatalf("Apply after %d posts of %d bytes: got %v, want ErrNoSpace", posts, len(bigText), err)
			}
			if applied, _, err := h.db.AppliedIndex(); err != nil || applied != entries[0].Index-1 {
				t.Fatalf("applied index after the failed Apply: got %d, %v; want %d (nothing applied)", applied, err, entries[0].Index-1)
			}
			h.db = makeRoom()
			res, _, err := h.db.Apply(entries)
			if err != nil {
				t.Fatalf("the same Apply with room: got %v, want nil", err)
			}
			if got, want := res[0].Message.GetSeq(), uint64(posts+1); got != want {
				t.Errorf("seq of the post applied with room: got %d, want %d", got, want)
			}
		})
	}
}

// TestSize checks that Size grows with the data and stays below the file.
func TestSize(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("c", false)))
	before, err := h.db.Size()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		h.post("alice", "c", bigText)
	}
	after, err := h.db.Size()
	if err != nil {
		t.Fatal(err)
	}
	if grew := after - before; grew < 20*int64(len(bigText)) {
		t.Errorf("Size after 20 posts of %d bytes: grew by %d (from %d to %d), want at least %d",
			len(bigText), grew, before, after, 20*len(bigText))
	}
	free, err := storage.DiskFree(h.db.Path())
	if err != nil || free == 0 {
		t.Errorf("DiskFree(%s): got %d, %v; want some room", h.db.Path(), free, err)
	}
}
