package partition

import (
	"errors"
	"fmt"
	"time"
)

// ErrNotCurrent says a replica's feed may trail its group: it is a
// follower that has not heard from a leader lately, or whose state machine
// is far behind its commit index. What it serves is correct but late, or
// never comes; a watcher should read from another replica.
var ErrNotCurrent = errors.New("partition: replica is not current")

// MaxApplyLag is how many committed entries a follower's state machine may
// trail by and still count as current.
const MaxApplyLag = 10_000

// Current reports whether the replica's feed publishes events about as
// soon as they commit: nil for a leader and for a follower that heard from
// a leader within two election timeouts and has applied to within
// MaxApplyLag entries of its commit index, an error wrapping ErrNotCurrent
// saying why otherwise, and ErrClosed after Close.
func (p *Partition) Current() error {
	if p.closed.Load() {
		return ErrClosed
	}
	if p.IsLeader() {
		return nil
	}
	if _, id := p.raft.LeaderWithID(); id == "" {
		return fmt.Errorf("%w: partition %d knows no leader", ErrNotCurrent, p.cfg.ID)
	}
	if since := time.Since(p.raft.LastContact()); since > 2*p.cfg.ElectionTimeout {
		return fmt.Errorf("%w: partition %d last heard from its leader %v ago",
			ErrNotCurrent, p.cfg.ID, since.Round(time.Millisecond))
	}
	applied, _ := p.fsm.applied.get()
	applied = max(applied, p.stateless.Load())
	if commit := p.raft.CommitIndex(); commit > applied+MaxApplyLag {
		return fmt.Errorf("%w: partition %d has applied up to index %d of %d committed",
			ErrNotCurrent, p.cfg.ID, applied, commit)
	}
	return nil
}
