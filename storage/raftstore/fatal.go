package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// ErrFailed is returned, wrapping the first failure, by every write to
// stores after one of their writes failed: a write or sync that failed is
// never retried (see failStop).
var ErrFailed = errors.New("raftstore: an earlier write to the raft log failed; it takes no more writes")

// failStop is the log and stable store of one replica with the rule that
// any write, sync or delete error is fatal: OnFatal is called with the
// error (the default stops the process), and every later write fails
// without touching the file.
//
// hashicorp/raft does not stop on such errors. A leader whose StoreLogs
// fails steps down and, re-elected, writes again; a follower's failed
// append is only rejected, and the leader sends it again. Retrying a write
// after a failed fsync is the trap PostgreSQL fell into ("fsyncgate"): the
// kernel may have dropped the unwritten pages and marked them clean, so
// the retry's fsync succeeds and the replica acknowledges entries that are
// not on disk.
//
// Reads are passed through: bbolt serves them from its memory map, so an
// I/O error there is a SIGBUS that stops the process anyway, and the
// errors a read does return (raft.ErrLogNotFound for a compacted entry, a
// missing key) are answers that raft handles, not faults.
//
// It is safe for concurrent use, as raft uses it: the main loop appends
// while the snapshot goroutine deletes old entries.
type failStop struct {
	bolt    *raftboltdb.BoltStore // the stable store, and the log unless log is set
	log     raft.LogStore         // the log: bolt, or a group of a SharedLog
	path    string
	onFatal func(error)
	failed  atomic.Pointer[error] // the first failure
}

var (
	_ raft.LogStore    = (*failStop)(nil)
	_ raft.StableStore = (*failStop)(nil)
)

// cachedLog is the log as raft sees it: raft.LogCache in front of
// failStop. The cache flattens its store's errors into text, so its write
// errors are replaced by failStop's, which wrap the cause.
type cachedLog struct {
	*raft.LogCache
	fs *failStop
}

func (c cachedLog) StoreLog(log *raft.Log) error {
	return c.StoreLogs([]*raft.Log{log})
}

func (c cachedLog) StoreLogs(logs []*raft.Log) error {
	if err := c.fs.refusal(); err != nil {
		return err
	}
	if err := c.LogCache.StoreLogs(logs); err != nil {
		return c.fs.cause(err)
	}
	return nil
}

func (c cachedLog) DeleteRange(min, max uint64) error {
	if err := c.fs.refusal(); err != nil {
		return err
	}
	return c.LogCache.DeleteRange(min, max)
}

// exitOnFatal is the default OnFatal: one line on the default logger,
// then exit status 1.
func exitOnFatal(err error) {
	slog.Error("raft log cannot be written; stopping the process", "err", err)
	os.Exit(1)
}

// write runs one write. Its error is wrapped with the file and what was
// being written; the first one goes to onFatal.
func (s *failStop) write(what string, fn func() error) error {
	if err := s.refusal(); err != nil {
		return err
	}
	err := fn()
	if err == nil {
		return nil
	}
	err = fmt.Errorf("raft log %s: %s: %w", s.path, what, err)
	if s.failed.CompareAndSwap(nil, &err) {
		s.onFatal(err)
	}
	return err
}

// refusal returns the error for a write after a failure, or nil.
func (s *failStop) refusal() error {
	if first := s.failed.Load(); first != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *first)
	}
	return nil
}

// cause returns the failure behind err, a write error that reached the
// caller through the log cache.
func (s *failStop) cause(err error) error {
	if first := s.failed.Load(); first != nil {
		return *first
	}
	return err
}

func (s *failStop) FirstIndex() (uint64, error) { return s.log.FirstIndex() }
func (s *failStop) LastIndex() (uint64, error)  { return s.log.LastIndex() }

func (s *failStop) GetLog(index uint64, log *raft.Log) error { return s.log.GetLog(index, log) }

func (s *failStop) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

func (s *failStop) StoreLogs(logs []*raft.Log) error {
	what := "store entries"
	switch {
	case len(logs) == 1:
		what = fmt.Sprintf("store entry %d", logs[0].Index)
	case len(logs) > 1:
		what = fmt.Sprintf("store entries %d-%d", logs[0].Index, logs[len(logs)-1].Index)
	}
	return s.write(what, func() error { return s.log.StoreLogs(logs) })
}

func (s *failStop) DeleteRange(min, max uint64) error {
	return s.write(fmt.Sprintf("delete entries %d-%d", min, max), func() error { return s.log.DeleteRange(min, max) })
}

func (s *failStop) Set(key, val []byte) error {
	return s.write(fmt.Sprintf("set %s", key), func() error { return s.bolt.Set(key, val) })
}

func (s *failStop) Get(key []byte) ([]byte, error) { return s.bolt.Get(key) }

func (s *failStop) SetUint64(key []byte, val uint64) error {
	return s.write(fmt.Sprintf("set %s", key), func() error { return s.bolt.SetUint64(key, val) })
}

func (s *failStop) GetUint64(key []byte) (uint64, error) { return s.bolt.GetUint64(key) }
