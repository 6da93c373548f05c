package partition

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/storage"
)

// fsm adapts storage.DB to raft.BatchingFSM. It is a thin layer: decode,
// apply in one transaction, publish the events. hashicorp/raft calls Apply,
// ApplyBatch, Snapshot and Restore from one goroutine.
type fsm struct {
	db      *storage.DB
	feed    *Feed
	applied *appliedIndex
	log     *slog.Logger
	onFatal func(error)
	// applyHook, if set (tests only, see export_test.go), runs before each
	// batch is applied.
	applyHook atomic.Pointer[func()]
}

var _ raft.BatchingFSM = (*fsm)(nil)

// newFSM returns the state machine over db, starting from the applied index
// db records.
func newFSM(db *storage.DB, feed *Feed, log *slog.Logger, onFatal func(error)) (*fsm, error) {
	index, _, err := db.AppliedIndex()
	if err != nil {
		return nil, fmt.Errorf("read applied index: %w", err)
	}
	return &fsm{db: db, feed: feed, applied: newAppliedIndex(index), log: log, onFatal: onFatal}, nil
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
	results, events, err := f.db.Apply(entries)
	out := make([]any, len(logs))
	if err != nil {
		// The log is committed but this replica cannot apply it: it must
		// not serve anything more.
		f.onFatal(fmt.Errorf("apply entries %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err))
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
	return out
}

// Snapshot starts a snapshot. It only opens a read transaction; the copy
// happens in Persist on raft's snapshot goroutine.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.db.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{s: s}, nil
}

// Restore replaces the state with a snapshot unless the state is already
// at or past it. Streams re-read from their cursors afterwards.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	restored, err := f.db.Restore(rc)
	if err != nil {
		return err
	}
	if restored {
		index, _, _ := f.db.AppliedIndex()
		f.log.Info("restored state from snapshot", "index", index)
		f.applied.advance(index)
		f.feed.reset()
	}
	return nil
}

type fsmSnapshot struct {
	s *storage.Snapshot
}

// Persist writes the snapshot to the sink; the file sink fsyncs on Close.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		_ = sink.Cancel() // best effort: the write error is the one to report
		return err
	}
	return sink.Close()
}

// Release ends the snapshot's read transaction.
func (s *fsmSnapshot) Release() { s.s.Release() }
