package raftstore_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/storage/raftstore"
	"github.com/heraldhq/herald/storage/storagetest"
)

// TestWriteErrorIsFatal opens the stores on a small tmpfs, fills it, and
// writes until a write fails with ENOSPC: OnFatal must be called once,
// with an error that names the log file and wraps ENOSPC, and after that
// no write may reach the file, even once there is room again (a failed
// write or sync is never retried). Reads keep working.
func TestWriteErrorIsFatal(t *testing.T) {
	big := make([]byte, 64<<10)
	tests := []struct {
		name  string
		write func(s *raftstore.Stores, i uint64) error
	}{
		{"log", func(s *raftstore.Stores, i uint64) error {
			return s.Log.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: big}})
		}},
		{"stable", func(s *raftstore.Stores, i uint64) error {
			return s.Stable.Set(fmt.Appendf(nil, "key-%d", i), big)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := storagetest.MountTmpfs(t, 2<<20)
			var (
				mu     sync.Mutex
				fatals []error
			)
			s, err := raftstore.Open(raftstore.Config{Dir: dir, OnFatal: func(err error) {
				mu.Lock()
				defer mu.Unlock()
				fatals = append(fatals, err)
			}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			must(t, s.Log.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("first")}))
			must(t, s.Stable.SetUint64([]byte("CurrentTerm"), 1))

			filler := storagetest.Fill(t, dir, 0)
			var i uint64 = 2
			for ; i < 1000; i++ {
				if err = tt.write(s, i); err != nil {
					break
				}
			}
			t.Logf("write %d failed: %v", i, err)
			if err == nil {
				t.Fatalf("1000 writes of %d bytes to a full %d-byte tmpfs succeeded; want ENOSPC", len(big), 2<<20)
			}
			mu.Lock()
			got := append([]error(nil), fatals...)
			mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("OnFatal calls: got %d (%v), want 1", len(got), got)
			}
			path := filepath.Join(dir, raftstore.LogFile)
			if msg := got[0].Error(); !strings.Contains(msg, path) || !errors.Is(got[0], syscall.ENOSPC) {
				t.Errorf("OnFatal error: got %q, want it to name %s and wrap ENOSPC", msg, path)
			}

			filler.Remove()
			for _, w := range []struct {
				what string
				err  error
			}{
				{"StoreLog", s.Log.StoreLog(&raft.Log{Index: i + 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")})},
				{"SetUint64", s.Stable.SetUint64([]byte("CurrentTerm"), 2)},
				{"DeleteRange", s.Log.DeleteRange(1, 1)},
			} {
				if !errors.Is(w.err, raftstore.ErrFailed) {
					t.Errorf("%s after the failure, with room again: got %v, want ErrFailed", w.what, w.err)
				}
			}
			mu.Lock()
			if len(fatals) != 1 {
				t.Errorf("OnFatal calls after later writes: got %d, want still 1", len(fatals))
			}
			mu.Unlock()
			var l raft.Log
			must(t, s.Log.GetLog(1, &l))
			if string(l.Data) != "first" {
				t.Errorf("GetLog(1) after the failure: got %q, want %q", l.Data, "first")
			}
			term, err := s.Stable.GetUint64([]byte("CurrentTerm"))
			if err != nil || term != 1 {
				t.Errorf("CurrentTerm after the failure: got %d, %v; want 1, nil", term, err)
			}
		})
	}
}
