package cluster

import (
	"errors"

	"github.com/heraldhq/herald/cluster/partition"
)

// Outcome errors of a routed request. Each wraps the partition error that
// caused it, so errors.Is works against either.
var (
	// ErrNotApplied is returned when a write definitely did not apply (no
	// leader within the deadline, the leader was busy); a retry is safe.
	ErrNotApplied = partition.ErrNotApplied
	// ErrIndeterminate is returned when a write may have applied; only a
	// retry with the same client_msg_id is safe.
	ErrIndeterminate = partition.ErrIndeterminate
	// ErrNoLeader is returned when a partition had no reachable leader
	// within the caller's deadline; for writes nothing was applied.
	ErrNoLeader = partition.ErrNotLeader
	// ErrNoMetaLeader is returned, beside ErrNoLeader, when a change to
	// the cluster's metadata (an admin request) found no metadata leader
	// within the caller's deadline; nothing was applied.
	ErrNoMetaLeader = errors.New("cluster: no metadata leader")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: node closed")
	// ErrNoSpace is returned by Apply when the channel's partition refuses
	// writes because a replica of its group is out of space: its node is
	// below its free-disk reserve or the replica's state is over the
	// quota (SpaceConfig). Nothing was applied, and retrying will not help
	// until space is freed. The error is a *NoSpaceError that says which.
	ErrNoSpace = errors.New("cluster: out of space")
)

// NoSpaceError is a refused write: which partition, and a reason that
// names the node, its free space and reserve or the state size and quota,
// and what to do. The reason is meant for clients and operators.
type NoSpaceError struct {
	Partition uint32
	Reason    string
}

func (e *NoSpaceError) Error() string { return e.Reason }

// Unwrap returns ErrNoSpace.
func (e *NoSpaceError) Unwrap() error { return ErrNoSpace }
