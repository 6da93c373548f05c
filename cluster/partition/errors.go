package partition

import (
	"errors"
	"fmt"
)

var (
	// ErrNotLeader is returned by Propose and linearizable reads on a replica
	// that is not the leader; nothing was applied. The error is a
	// *NotLeaderError carrying the leader, if known.
	ErrNotLeader = errors.New("partition: not the leader")
	// ErrNotApplied is returned by Propose when the command was definitely
	// not applied (no leader, the replica is busy or shutting down before
	// dispatch). A retry is safe.
	ErrNotApplied = errors.New("partition: not applied")
	// ErrIndeterminate is returned by Propose when the command may or may
	// not have been applied: leadership was lost while it was in flight, or
	// the caller's deadline passed after it was proposed. Only a retry with
	// the same client_msg_id is safe.
	ErrIndeterminate = errors.New("partition: outcome indeterminate")
	// ErrTooStale is returned by stale reads on a replica that has not
	// heard from a leader within Config.MaxStale.
	ErrTooStale = errors.New("partition: replica too stale")
	// ErrStateLost is returned by New for a replica whose Config says it
	// had Raft state (RequireState) and whose directory has none.
	ErrStateLost = errors.New("partition: replica has lost its Raft state")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("partition: closed")
)

// NotLeaderError says which replica leads, when this one knows.
type NotLeaderError struct {
	Partition  uint32
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("partition %d: no leader known", e.Partition)
	}
	return fmt.Sprintf("partition %d: leader is %s (%s)", e.Partition, e.LeaderID, e.LeaderAddr)
}

// Unwrap returns ErrNotLeader.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
