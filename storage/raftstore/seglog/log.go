package seglog

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Log is the segment log of one node. The flusher goroutine (started by
// Open, stopped and waited for by Close) is the only writer of the files
// and of the index; callers queue requests and wait for it.
type Log struct {
	dir     string
	segSize int64

	kick chan struct{} // size 1: a request is queued
	stop chan struct{} // closed by Close
	wg   sync.WaitGroup

	qmu sync.Mutex // guards following
	// queue holds the requests the flusher has not taken yet.
	queue  []*request
	closed bool

	mu sync.RWMutex // guards following, and every segment's fields
	// segs are the segment files, oldest first; the last one is written.
	segs   []*segment
	groups map[uint64]*index

	failed atomic.Pointer[error] // the first write or sync failure

	writes, syncs, records atomic.Uint64
}

// request is one caller's records, waiting for the flusher.
type request struct {
	buf  []byte
	ops  []op
	done chan error // size 1: the flusher's answer
}

// Stats counts the flusher's work since Open.
type Stats struct {
	// Writes is the number of write calls on segment files.
	Writes uint64
	// Syncs is the number of fdatasync and directory fsync calls.
	Syncs uint64
	// Records is the number of records written.
	Records uint64
}

// Open opens or creates the log in cfg.Dir, replaying its segments.
func Open(cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SegmentSize == 0 {
		cfg.SegmentSize = DefaultConfig(cfg.Dir).SegmentSize
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create segment log dir %q: %w", cfg.Dir, err)
	}
	l := &Log{
		dir:     cfg.Dir,
		segSize: cfg.SegmentSize,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		groups:  make(map[uint64]*index),
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("open segment log %q: %w", cfg.Dir, err)
	}
	l.wg.Go(l.flusher)
	return l, nil
}

// Close stops the flusher, failing the requests it has not taken with
// ErrClosed, and closes the files. It is idempotent; the groups' stores
// must not be used after it.
func (l *Log) Close() error {
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		return nil
	}
	l.closed = true
	l.qmu.Unlock()
	close(l.stop)
	l.wg.Wait()
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	l.segs = nil
	return errors.Join(errs...)
}

// Stats returns the flusher's counters.
func (l *Log) Stats() Stats {
	return Stats{Writes: l.writes.Load(), Syncs: l.syncs.Load(), Records: l.records.Load()}
}

// Group returns the raft.LogStore of group id. Groups need not be made:
// a group with no entries is empty.
func (l *Log) Group(id uint64) *Group { return &Group{l: l, id: id} }

// refusal is the error for a write after a failure, or nil.
func (l *Log) refusal() error {
	if first := l.failed.Load(); first != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *first)
	}
	return nil
}

// fail records err as the log's failure; the first one stays.
func (l *Log) fail(err error) error {
	l.failed.CompareAndSwap(nil, &err)
	return err
}

// submit queues r and waits until the flusher has made it durable (nil)
// or failed it.
func (l *Log) submit(r *request) error {
	if err := l.refusal(); err != nil {
		return err
	}
	r.done = make(chan error, 1)
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		return ErrClosed
	}
	l.queue = append(l.queue, r)
	l.qmu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default: // already kicked; the flusher takes the whole queue
	}
	return <-r.done
}

// flusher commits the queued requests, all that queued while the previous
// commit ran together, until Close.
func (l *Log) flusher() {
	// The flusher swaps two queues: callers append to one while it
	// commits the other.
	var spare []*request
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			l.qmu.Lock()
			reqs := l.queue
			l.queue = nil
			l.qmu.Unlock()
			for _, r := range reqs {
				r.done <- ErrClosed
			}
			return
		}
		l.qmu.Lock()
		reqs := l.queue
		l.queue = spare[:0]
		l.qmu.Unlock()
		if len(reqs) > 0 {
			err := l.commit(reqs)
			for i, r := range reqs {
				r.done <- err
				reqs[i] = nil
			}
		}
		spare = reqs // even when empty: l.queue now has the old spare's array
	}
}
