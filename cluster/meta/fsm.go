package meta

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

// view is one published state and the channel closed when a newer state
// replaces it. Neither changes after it is published.
type view struct {
	state   *clusterv1.MetaState
	changed chan struct{}
}

// fsm adapts Apply to raft.FSM and publishes each new state. hashicorp/raft
// calls Apply, Snapshot and Restore from one goroutine, which is therefore
// the only writer of cur; readers load cur without a lock. A published
// state is never modified: each change publishes a new one.
type fsm struct {
	log *slog.Logger
	cur atomic.Pointer[view]
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(log *slog.Logger) *fsm {
	f := &fsm{log: log}
	f.cur.Store(&view{state: &clusterv1.MetaState{}, changed: make(chan struct{})})
	return f
}

// publish makes s the current state and wakes the watchers of the old one.
func (f *fsm) publish(s *clusterv1.MetaState) {
	old := f.cur.Swap(&view{state: s, changed: make(chan struct{})})
	close(old.changed)
}

// Apply applies one committed command. The response is the state after it
// (*clusterv1.MetaState) or the command's domain error (*storage.Error).
func (f *fsm) Apply(l *raft.Log) any {
	cmd := &clusterv1.MetaCommand{}
	if err := proto.Unmarshal(l.Data, cmd); err != nil {
		return &storage.Error{Kind: storage.ErrInvalidArgument,
			Msg: fmt.Sprintf("metadata command at index %d does not decode", l.Index)}
	}
	cur := f.cur.Load().state
	next, err := Apply(cur, cmd)
	if err != nil {
		return err
	}
	if next != cur {
		f.publish(next)
		if cmd.GetInitCluster() != nil {
			f.log.Info("cluster initialised", "cluster", next.GetClusterId(),
				"partitions", next.GetPartitions(), "replication", next.GetReplication(), "index", l.Index)
		}
	}
	return next
}

// Snapshot captures the current state. The state is immutable, so the
// pointer is the snapshot; Persist encodes it on raft's snapshot goroutine.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{state: f.cur.Load().state}, nil
}

// Restore replaces the state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read metadata snapshot: %w", err)
	}
	s := &clusterv1.MetaState{}
	if err := proto.Unmarshal(b, s); err != nil {
		return fmt.Errorf("decode metadata snapshot: %w", err)
	}
	f.publish(s)
	f.log.Info("restored metadata from snapshot", "epoch", s.GetEpoch())
	return nil
}

type fsmSnapshot struct {
	state *clusterv1.MetaState
}

// Persist writes the state as a deterministic proto; the file sink fsyncs
// on Close.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.state)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel() // best effort: the encode or write error is the one to report
		return fmt.Errorf("persist metadata snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing: the snapshot holds no resources.
func (s *fsmSnapshot) Release() {}
