package raftstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/storage/raftstore"
)

func openShared(t *testing.T, dir string) *raftstore.SharedLog {
	t.Helper()
	s, err := raftstore.OpenSharedLog(dir, func(err error) { t.Errorf("shared log fatal: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openWith(t *testing.T, dir string, shared *raftstore.SharedLog) *raftstore.Stores {
	t.Helper()
	s, err := raftstore.Open(raftstore.Config{Dir: dir, Shared: shared})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entry(i, term uint64, group string) *raft.Log {
	l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "%s-%d", group, i),
		AppendedAt: time.Unix(1700000000, int64(i))}
	if i%3 == 0 {
		l.Extensions = []byte("ext")
	}
	return l
}

// wantLog checks that log holds exactly first..last, each as entry made it.
func wantLog(t *testing.T, what string, log raft.LogStore, first, last, term uint64, group string) {
	t.Helper()
	f, err := log.FirstIndex()
	must(t, err)
	l, err := log.LastIndex()
	must(t, err)
	if f != first || l != last {
		t.Fatalf("%s: first %d last %d, want %d and %d", what, f, l, first, last)
	}
	for i := first; i <= last && last > 0; i++ {
		var got raft.Log
		must(t, log.GetLog(i, &got))
		want := entry(i, term, group)
		if got.Index != i || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) ||
			!bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("%s: entry %d: got %+v, want %+v", what, i, got, want)
		}
	}
	var none raft.Log
	if err := log.GetLog(last+1, &none); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("%s: entry %d past the end: got %v, want raft.ErrLogNotFound", what, last+1, err)
	}
}

// TestSharedLogGroups keeps two replicas' logs in one shared log,
// appending to both, compacting one's head and truncating the other's
// tail, and checks each sees only its own entries, before and after the
// shared log and the replicas' stores are closed and opened again.
func TestSharedLogGroups(t *testing.T) {
	root := t.TempDir()
	sharedDir := filepath.Join(root, "raftlog")
	shared := openShared(t, sharedDir)
	a := openWith(t, filepath.Join(root, "a"), shared)
	b := openWith(t, filepath.Join(root, "b"), shared)
	for i := uint64(1); i <= 100; i += 10 {
		var la, lb []*raft.Log
		for j := i; j < i+10; j++ {
			la, lb = append(la, entry(j, 2, "a")), append(lb, entry(j, 2, "b"))
		}
		must(t, a.Log.StoreLogs(la))
		must(t, b.Log.StoreLogs(lb))
	}
	wantLog(t, "a", a.Log, 1, 100, 2, "a")
	wantLog(t, "b", b.Log, 1, 100, 2, "b")
	must(t, a.Log.DeleteRange(1, 40))   // compaction after a snapshot
	must(t, b.Log.DeleteRange(91, 100)) // a new leader's conflicting suffix
	wantLog(t, "a compacted", a.Log, 41, 100, 2, "a")
	wantLog(t, "b truncated", b.Log, 1, 90, 2, "b")

	must(t, a.Close())
	must(t, b.Close())
	must(t, shared.Close())
	shared = openShared(t, sharedDir)
	defer shared.Close()
	a = openWith(t, filepath.Join(root, "a"), shared)
	defer a.Close()
	b = openWith(t, filepath.Join(root, "b"), shared)
	defer b.Close()
	wantLog(t, "a reopened", a.Log, 41, 100, 2, "a")
	wantLog(t, "b reopened", b.Log, 1, 90, 2, "b")
	must(t, a.Log.DeleteRange(41, 100))
	wantLog(t, "a emptied", a.Log, 0, 0, 2, "a")

	// A replica directory dropped and made again starts empty.
	must(t, b.Close())
	must(t, shared.Drop(filepath.Join(root, "b")))
	b = openWith(t, filepath.Join(root, "b"), shared)
	wantLog(t, "b dropped", b.Log, 0, 0, 2, "b")
}

// TestSharedLogTakesOverOwnLog opens a replica written without the shared
// log (its entries in its own file) with it: the entries move into the
// shared log, and the replica can no longer be opened without it.
func TestSharedLogTakesOverOwnLog(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "p1")
	own := openWith(t, dir, nil)
	var logs []*raft.Log
	for i := uint64(5); i <= 60; i++ {
		logs = append(logs, entry(i, 3, "p1"))
	}
	must(t, own.Log.StoreLogs(logs))
	must(t, own.Stable.SetUint64([]byte("CurrentTerm"), 3))
	must(t, own.Close())

	shared := openShared(t, filepath.Join(root, "raftlog"))
	defer shared.Close()
	s := openWith(t, dir, shared)
	wantLog(t, "moved", s.Log, 5, 60, 3, "p1")
	term, err := s.Stable.GetUint64([]byte("CurrentTerm"))
	must(t, err)
	if term != 3 {
		t.Errorf("current term after the move: got %d, want 3", term)
	}
	must(t, s.Log.StoreLog(entry(61, 3, "p1")))
	wantLog(t, "appended", s.Log, 5, 61, 3, "p1")
	must(t, s.Close())

	_, err = raftstore.Open(raftstore.Config{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "shared raft log") {
		t.Fatalf("open without the shared log: got %v, want a refusal naming the shared raft log", err)
	}
	s = openWith(t, dir, shared)
	defer s.Close()
	wantLog(t, "reopened", s.Log, 5, 61, 3, "p1")
}

// BenchmarkSharedLogAppend appends one entry at a time from concurrent
// goroutines, each its own group, as a node's partitions do; Pebble
// shares their fsyncs.
func BenchmarkSharedLogAppend(b *testing.B) {
	root := b.TempDir()
	shared, err := raftstore.OpenSharedLog(filepath.Join(root, "raftlog"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer shared.Close()
	const groups = 16
	stores := make([]*raftstore.Stores, groups)
	for i := range stores {
		if stores[i], err = raftstore.Open(raftstore.Config{Dir: filepath.Join(root, fmt.Sprint(i)), Shared: shared}); err != nil {
			b.Fatal(err)
		}
		defer stores[i].Close()
	}
	data := bytes.Repeat([]byte("x"), 200)
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range groups {
		wg.Go(func() {
			for i := uint64(1); i <= uint64((b.N+groups-1)/groups); i++ {
				if err := stores[g].Log.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// observations records what an Observer is given.
type observations struct {
	mu sync.Mutex
	v  []float64
}

func (o *observations) Observe(s float64) {
	o.mu.Lock()
	o.v = append(o.v, s)
	o.mu.Unlock()
}

func TestSharedLogObservesAppends(t *testing.T) {
	root := t.TempDir()
	shared := openShared(t, filepath.Join(root, "raftlog"))
	defer shared.Close()
	var obs observations
	shared.ObserveAppends(&obs)
	s := openWith(t, filepath.Join(root, "p0"), shared)
	defer s.Close()
	must(t, s.Log.StoreLogs([]*raft.Log{entry(1, 1, "p0"), entry(2, 1, "p0")}))
	must(t, s.Log.StoreLog(entry(3, 1, "p0")))
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.v) != 2 {
		t.Fatalf("observed %d appends, want 2 (one per StoreLogs)", len(obs.v))
	}
	for _, v := range obs.v {
		if v <= 0 || v > 60 {
			t.Errorf("append took %v s: not a duration", v)
		}
	}
}
