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
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: node closed")
)
