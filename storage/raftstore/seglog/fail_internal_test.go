package seglog

import (
	"errors"
	"os"
	"testing"

	"github.com/hashicorp/raft"
)

// TestFailureIsSticky makes the flusher's write fail (the segment's file
// is closed under it) and checks that the append reports it, that every
// later append fails with ErrFailed wrapping it and leaves the file alone,
// and that a reopen recovers the entries written before.
func TestFailureIsSticky(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	g := l.Group(1)
	for i := uint64(1); i <= 5; i++ {
		if err := g.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.RLock()
	active := l.segs[len(l.segs)-1]
	l.mu.RUnlock()
	if err := active.f.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(active.path)
	if err != nil {
		t.Fatal(err)
	}

	err = g.StoreLog(&raft.Log{Index: 6, Term: 1, Data: []byte("x")})
	if !errors.Is(err, os.ErrClosed) || errors.Is(err, ErrFailed) {
		t.Fatalf("append whose write fails: got %v, want the write's error (os.ErrClosed)", err)
	}
	for _, fn := range []func() error{
		func() error { return g.StoreLog(&raft.Log{Index: 6, Term: 1, Data: []byte("x")}) },
		func() error { return g.DeleteRange(1, 2) },
	} {
		if err := fn(); !errors.Is(err, ErrFailed) || !errors.Is(err, os.ErrClosed) {
			t.Fatalf("write after the failure: got %v, want ErrFailed wrapping os.ErrClosed", err)
		}
	}
	if last, err := g.LastIndex(); err != nil || last != 5 {
		t.Fatalf("last index after the failure: got %d, %v, want 5", last, err)
	}
	after, err := os.Stat(active.path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Fatalf("segment size after the failed writes: got %d, want %d", after.Size(), before.Size())
	}
	if err := l.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("close with the segment already closed: got %v, want os.ErrClosed", err)
	}

	l, err = Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	first, err := l.Group(1).FirstIndex()
	if err != nil || first != 1 {
		t.Fatalf("first index after reopen: got %d, %v, want 1", first, err)
	}
	if last, err := l.Group(1).LastIndex(); err != nil || last != 5 {
		t.Fatalf("last index after reopen: got %d, %v, want 5", last, err)
	}
}
