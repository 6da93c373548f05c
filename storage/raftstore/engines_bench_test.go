package raftstore_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/storage/raftstore"
	"github.com/heraldhq/herald/storage/raftstore/seglog"
)

// engine opens a node-wide log in dir: its groups' stores, a count of the
// syncs it made, and its close.
type engine struct {
	name string
	open func(b *testing.B, dir string) (group func(id uint64) raft.LogStore, syncs func() uint64, close func())
}

var engines = []engine{
	{"pebble", func(b *testing.B, dir string) (func(uint64) raft.LogStore, func() uint64, func()) {
		fs := &countingFS{FS: vfs.Default}
		s, err := raftstore.OpenSharedLogFS(dir, fs)
		if err != nil {
			b.Fatal(err)
		}
		group := func(id uint64) raft.LogStore {
			g, err := s.Group(id)
			if err != nil {
				b.Fatal(err)
			}
			return g
		}
		return group, fs.syncs.Load, func() { must(b, s.Close()) }
	}},
	{"seglog", func(b *testing.B, dir string) (func(uint64) raft.LogStore, func() uint64, func()) {
		l, err := seglog.Open(seglog.DefaultConfig(dir))
		if err != nil {
			b.Fatal(err)
		}
		group := func(id uint64) raft.LogStore { return l.Group(id) }
		return group, func() uint64 { return l.Stats().Syncs }, func() { must(b, l.Close()) }
	}},
}

// BenchmarkLogAppend compares the shared log (Pebble) with the segment log
// (seglog) in the shape of BenchmarkSharedLogAppend: G goroutines, each
// its own group, append one 200-byte entry at a time and wait until it is
// durable. Both engines' group stores are used bare (no log cache, no
// fail-stop wrapper). Besides ns/op it reports appends/s, appends per
// sync (every fsync and fdatasync the engine made, WAL, manifest, tables
// and directories alike) and the process's CPU time (user and system, all
// goroutines) per append.
func BenchmarkLogAppend(b *testing.B) {
	for _, groups := range []int{1, 16, 64} {
		for _, e := range engines {
			b.Run(fmt.Sprintf("G=%d/%s", groups, e.name), func(b *testing.B) { benchAppend(b, e, groups) })
		}
	}
}

func benchAppend(b *testing.B, e engine, groups int) {
	group, syncs, closeLog := e.open(b, filepath.Join(b.TempDir(), "raftlog"))
	defer closeLog()
	stores := make([]raft.LogStore, groups)
	for i := range stores {
		stores[i] = group(uint64(i) + 1)
	}
	data := bytes.Repeat([]byte("x"), 200)
	per := (b.N + groups - 1) / groups
	syncs0, cpu0 := syncs(), cpuTime(b)
	start := time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range groups {
		wg.Go(func() {
			for i := uint64(1); i <= uint64(per); i++ {
				if err := stores[g].StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	elapsed, n := time.Since(start), float64(per*groups)
	b.ReportMetric(n/elapsed.Seconds(), "appends/s")
	b.ReportMetric(n/float64(max(syncs()-syncs0, 1)), "appends/sync")
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/n, "cpu-µs/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingFS counts the syncs of every file and directory Pebble opens.
type countingFS struct {
	vfs.FS
	syncs atomic.Uint64
}

func (fs *countingFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &countingFile{File: f, syncs: &fs.syncs}, nil
}

func (fs *countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs *countingFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.Open(name, opts...))
}

func (fs *countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func (fs *countingFS) OpenDir(name string) (vfs.File, error) { return fs.wrap(fs.FS.OpenDir(name)) }

func (fs *countingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

type countingFile struct {
	vfs.File
	syncs *atomic.Uint64
}

func (f *countingFile) Sync() error {
	f.syncs.Add(1)
	return f.File.Sync()
}

func (f *countingFile) SyncData() error {
	f.syncs.Add(1)
	return f.File.SyncData()
}

func (f *countingFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if full {
		f.syncs.Add(1)
	}
	return full, err
}
