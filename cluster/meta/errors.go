package meta

import (
	"errors"
	"fmt"
)

// Errors of the Group's Raft-level operations. The metadata state
// machine's own rejections are *storage.Error values (see Apply), so that
// the gateway maps them with the same function as channel errors.
var (
	// ErrNotLeader is returned by Propose, AddVoter, AddNonvoter and
	// RemoveServer on a replica that is not the leader; nothing was
	// applied. The error is a *NotLeaderError carrying the leader, if
	// known.
	ErrNotLeader = errors.New("meta: not the leader")
	// ErrNotApplied is returned by Propose and the membership calls when
	// the change was definitely not applied (the caller's ctx was done
	// before it was handed to Raft, or Raft was too busy to take it). A
	// retry is safe.
	ErrNotApplied = errors.New("meta: not applied")
	// ErrIndeterminate is returned by Propose and the membership calls when
	// the change may or may not have been applied: leadership was lost or
	// Raft shut down while it was in flight, or the caller's ctx ended
	// after it was handed to Raft. Read the state to find out; commands
	// that compare epochs (SetPlacement) are safe to retry.
	ErrIndeterminate = errors.New("meta: outcome indeterminate")
	// ErrClosed is returned by every method that needs Raft after Close.
	ErrClosed = errors.New("meta: closed")
	// ErrBootstrapConflict is returned by Bootstrap when the replica
	// already has Raft state whose configuration is not the one given:
	// it was bootstrapped with other servers, joined a group, or the
	// group's membership has changed since. Check HasState first.
	ErrBootstrapConflict = errors.New("meta: already bootstrapped with another configuration")
)

// NotLeaderError says which replica leads, when this one knows.
type NotLeaderError struct {
	// LeaderID is the leader's node id; empty when no leader is known.
	LeaderID string
	// LeaderAddr is the leader's Raft address.
	LeaderAddr string
}

// Error describes the leader, if known.
func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "meta: not the leader; no leader known"
	}
	return fmt.Sprintf("meta: not the leader; leader is %s (%s)", e.LeaderID, e.LeaderAddr)
}

// Unwrap returns ErrNotLeader.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
