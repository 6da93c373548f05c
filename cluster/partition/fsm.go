package partition

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// fsm adapts storage.DB to raft.BatchingFSM. It is a thin layer: decode,
// apply in one transaction, publish the events. hashicorp/raft calls Apply,
// ApplyBatch, Snapshot and Restore from one goroutine.
//
// A batch the state file has no room for (storage.ErrNoSpace) is applied
// again, with backoff, until it fits or stop is closed (see applyWhenRoom).
// Once a batch was given up, the state file is behind the entries raft
// believes applied, so broken is set: later batches are not applied and
// Snapshot fails, so that raft never records or compacts past the gap.
type fsm struct {
	db      *storage.DB
	feed    *Feed
	applied *appliedIndex
	log     *slog.Logger
	onFatal func(error)
	// onApplied, if set, is called after each batch with its last index.
	onApplied func(index uint64)
	// onEvents, if set, is called after each batch with its events.
	onEvents func(events []*heraldv1.Event)
	obs      Observers
	// applyHook, if set (tests only, see export_test.go), runs before each
	// batch is applied.
	applyHook atomic.Pointer[func()]
	stop      <-chan struct{} // closed: give up waiting for room (the replica is closing)
	broken    atomic.Bool     // set on the FSM goroutine; Recover reads it afterwards
	// restored is the applied index of the last snapshot that replaced
	// the state, for RestoreUserSnapshot to check that its snapshot did.
	restored atomic.Uint64
}

// Backoff of applyWhenRoom: the first pause and the longest.
const (
	roomRetryMin = 50 * time.Millisecond
	roomRetryMax = 2 * time.Second
)

var _ raft.BatchingFSM = (*fsm)(nil)

// newFSM returns the state machine over db, starting from the applied index
// db records; closing stop makes it give up waiting for room.
func newFSM(db *storage.DB, feed *Feed, log *slog.Logger, onFatal func(error), stop <-chan struct{}) (*fsm, error) {
	index, _, err := db.AppliedIndex()
	if err != nil {
		return nil, fmt.Errorf("read applied index: %w", err)
	}
	return &fsm{db: db, feed: feed, applied: newAppliedIndex(index), log: log, onFatal: onFatal, stop: stop}, nil
}

// Apply applies one entry.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies entries in one bbolt transaction. Each response is a
// *storage.Result, or the command's domain error.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]storage.Entry, len(logs))
	for i, l := range logs {
		entries[i] = storage.Entry{Index: l.Index, Term: l.Term}
		if l.Type != raft.LogCommand {
			continue
		}
		cmd := &clusterv1.Command{}
		if err := proto.Unmarshal(l.Data, cmd); err != nil {
			entries[i].Err = &storage.Error{Kind: storage.ErrInvalidArgument,
				Msg: fmt.Sprintf("command at index %d does not decode", l.Index)}
			continue
		}
		entries[i].Cmd = cmd
	}
	if hook := f.applyHook.Load(); hook != nil {
		(*hook)()
	}
	out := make([]any, len(logs))
	first, last := logs[0].Index, logs[len(logs)-1].Index
	if f.broken.Load() {
		err := fmt.Errorf("%w: entries %d-%d not applied: the replica gave up an earlier batch",
			ErrIndeterminate, first, last)
		for i := range out {
			out[i] = err
		}
		return out
	}
	start := time.Now()
	results, events, err := f.db.Apply(entries)
	if f.obs.Apply != nil {
		f.obs.Apply.Observe(time.Since(start).Seconds())
	}
	if errors.Is(err, storage.ErrNoSpace) {
		results, events, err = f.applyWhenRoom(entries, err)
	}
	if err != nil {
		f.broken.Store(true)
		if !errors.Is(err, errGaveUp) {
			// The log is committed but this replica cannot apply it: it
			// must not serve anything more.
			f.onFatal(fmt.Errorf("apply entries %d-%d: %w", first, last, err))
		}
		// Committed: it may apply on the other replicas.
		err = fmt.Errorf("%w: entries %d-%d not applied here: %w", ErrIndeterminate, first, last, err)
		for i := range out {
			out[i] = err
		}
		return out
	}
	for i := range results {
		if results[i].Err != nil {
			out[i] = results[i].Err
		} else {
			out[i] = &results[i]
		}
	}
	f.applied.advance(logs[len(logs)-1].Index)
	f.feed.publish(events)
	if f.onEvents != nil {
		f.onEvents(events)
	}
	if f.onApplied != nil {
		f.onApplied(logs[len(logs)-1].Index)
	}
	return out
}

// What a replica logs when its state file has no room for entries
// committed to it (applyWhenRoom, and storage.Options.NoRoom for held
// commits), and when it applied them after all.
const (
	logNoRoom    = "state file has no room for committed entries; retrying until it has"
	logRoomAgain = "applied the entries the state file had no room for"
)

// errGaveUp is applyWhenRoom's error when stop was closed first.
var errGaveUp = errors.New("gave up waiting for room in the state file")

// applyWhenRoom applies entries again, with backoff, after the state file
// had no room for them (err), until they fit, Apply fails otherwise, or
// stop is closed (errGaveUp). The entries are committed, and skipping them
// would leave this replica's state different from the others', so the FSM
// goroutine waits here, and raft's with it; see cluster/DESIGN.md for what
// the replica does meanwhile. It logs once when it starts waiting and once
// when the entries are applied.
func (f *fsm) applyWhenRoom(entries []storage.Entry, err error) ([]storage.Result, []*heraldv1.Event, error) {
	first, last := entries[0].Index, entries[len(entries)-1].Index
	f.log.Error(logNoRoom, "first", first, "last", last, "err", err)
	begin := time.Now()
	pause := roomRetryMin
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(pause)
		select {
		case <-f.stop:
			t.Stop()
			f.log.Warn("gave up waiting for room in the state file",
				"first", first, "last", last, "attempts", attempt)
			return nil, nil, errGaveUp
		case <-t.C:
		}
		results, events, err := f.db.Apply(entries)
		if !errors.Is(err, storage.ErrNoSpace) {
			if err == nil {
				f.log.Info(logRoomAgain, "first", first, "last", last,
					"attempts", attempt, "waited", time.Since(begin).Round(time.Millisecond))
			}
			return results, events, err
		}
		pause = min(2*pause, roomRetryMax)
	}
}

// Snapshot starts a snapshot. It only opens a read transaction; the copy
// happens in Persist on raft's snapshot goroutine. It fails once a batch
// was given up: raft would record the snapshot at an index the state file
// has not reached, and compact the entries it lacks.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.broken.Load() {
		return nil, errors.New("partition: the state file is behind the log (an apply was given up); no snapshot")
	}
	s, err := f.db.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{s: s, obs: f.obs.Snapshot}, nil
}

// Restore replaces the state with a snapshot unless the state is already
// at or past it. Streams re-read from their cursors afterwards, or end if
// their channel's head went back below them (Feed.reset).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	before := f.feed.heads()
	restored, err := f.db.Restore(rc)
	if err != nil {
		return err
	}
	if restored {
		index, _, _ := f.db.AppliedIndex()
		f.restored.Store(index)
		f.log.Info("restored state from snapshot", "index", index)
		f.applied.advance(index)
		f.feed.reset(before)
	}
	return nil
}

type fsmSnapshot struct {
	s   *storage.Snapshot
	obs Observer // Observers.Snapshot
}

// Persist writes the snapshot to the sink; the file sink fsyncs on Close.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	if _, err := s.s.WriteTo(sink); err != nil {
		_ = sink.Cancel() // best effort: the write error is the one to report
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	if s.obs != nil {
		s.obs.Observe(time.Since(start).Seconds())
	}
	return nil
}

// Release ends the snapshot's read transaction.
func (s *fsmSnapshot) Release() { s.s.Release() }
