package raftstore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/storage/raftstore"
)

func open(t *testing.T, dir string) *raftstore.Stores {
	t.Helper()
	s, err := raftstore.Open(raftstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestResetPartialBootstrap(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, s *raftstore.Stores)
		wantReset bool
	}{
		{"fresh", func(*testing.T, *raftstore.Stores) {}, false},
		{"term only", func(t *testing.T, s *raftstore.Stores) {
			must(t, s.Stable.SetUint64([]byte("CurrentTerm"), 1))
		}, true},
		// A term learnt from a leader (there is none in term 1) is a
		// promise not to follow older leaders: it stays.
		{"a leader's term only", func(t *testing.T, s *raftstore.Stores) {
			must(t, s.Stable.SetUint64([]byte("CurrentTerm"), 4))
		}, false},
		{"term and vote", func(t *testing.T, s *raftstore.Stores) {
			must(t, s.Stable.SetUint64([]byte("CurrentTerm"), 3))
			must(t, s.Stable.SetUint64([]byte("LastVoteTerm"), 3))
		}, false},
		{"term and log", func(t *testing.T, s *raftstore.Stores) {
			must(t, s.Stable.SetUint64([]byte("CurrentTerm"), 1))
			must(t, s.Log.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogConfiguration}))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			tt.setup(t, s)
			before, err := s.HasState()
			must(t, err)
			reset, err := s.ResetPartialBootstrap()
			must(t, err)
			if reset != tt.wantReset {
				t.Fatalf("ResetPartialBootstrap: got %v, want %v", reset, tt.wantReset)
			}
			after, err := s.HasState()
			must(t, err)
			if want := before && !tt.wantReset; after != want {
				t.Errorf("HasState after: got %v, want %v (before %v)", after, want, before)
			}
		})
	}
}

func TestOpenLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	if _, err := raftstore.Open(raftstore.Config{Dir: dir}); err == nil {
		t.Fatal("second Open of the same dir: got nil error, want locked")
	} else if got := err.Error(); !strings.Contains(got, "locked by another process") {
		t.Errorf("second Open: got %q, want it to say locked by another process", got)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenAfterTornCreation: a replica whose raft.db was cut short while
// bbolt created it (power lost before its first sync) opens with a new,
// empty one instead of dying of SIGBUS at every start.
func TestOpenAfterTornCreation(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, raftstore.LogFile), 8318); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	if v, err := s.Stable.GetUint64([]byte("CurrentTerm")); err == nil || v != 0 {
		t.Fatalf("term after reopening: %d, %v; want none, from an empty store", v, err)
	}
	if err := s.Stable.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatalf("write to the new store: %v", err)
	}
}
