package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/cluster/partition"
)

// currency tracks whether each of the node's replicas is current
// (Node.current) and hands event streams a context that ends when the
// replica they read stops being so. One goroutine checks every replica four
// times an election timeout, so a stream notices within a quarter election
// timeout, and an idle node pays a few checks a second, not one per stream.
type currency struct {
	current func(*partition.Partition) error // Node.current

	mu    sync.Mutex // guards following
	parts map[uint32]*currentState
}

type currentState struct {
	r      *partition.Partition
	since  time.Time       // current since; zero while it is not
	lapsed context.Context // ends when r stops being current or leaves the node
	end    context.CancelFunc
}

func newCurrency(current func(*partition.Partition) error) *currency {
	return &currency{current: current, parts: make(map[uint32]*currentState)}
}

// lease returns a context that ends when r, partition p's replica, stops
// being current, if it is current now and has been for at least settled.
func (c *currency) lease(p uint32, r *partition.Partition, settled time.Duration) (context.Context, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	st := c.stateLocked(p, r)
	if st.since.IsZero() {
		// Maybe current since the last check: the tracker is only a cache.
		st.set(c.current(r) == nil, now)
	}
	if st.since.IsZero() || now.Sub(st.since) < settled {
		return nil, false
	}
	return st.lapsed, true
}

// stateLocked returns r's state, a new one (not current) when r is new to
// the tracker. c.mu must be held.
func (c *currency) stateLocked(p uint32, r *partition.Partition) *currentState {
	st := c.parts[p]
	if st != nil && st.r == r {
		return st
	}
	if st != nil {
		st.end()
	}
	st = &currentState{r: r, end: func() {}}
	c.parts[p] = st
	return st
}

// set records whether the replica is current at now: a replica that
// becomes current gets a new lapse context, one that stops being current
// ends it.
func (st *currentState) set(current bool, now time.Time) {
	switch {
	case current && st.since.IsZero():
		st.since = now
		st.lapsed, st.end = context.WithCancel(context.Background())
	case !current && !st.since.IsZero():
		st.since = time.Time{}
		st.end()
	}
}

// check updates every replica's state; replicas holds the node's replicas
// by partition.
func (c *currency) check(replicas map[uint32]*partition.Partition) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, st := range c.parts {
		if replicas[p] != st.r {
			st.end()
			delete(c.parts, p)
		}
	}
	for p, r := range replicas {
		c.stateLocked(p, r).set(c.current(r) == nil, now)
	}
}

// trackCurrency runs currency checks until the node closes.
func (n *Node) trackCurrency() {
	t := time.NewTicker(n.electionTimeout() / 4)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			n.cur.check(nil)
			return
		case <-t.C:
			reps := make(map[uint32]*partition.Partition)
			for _, r := range n.reps.all() {
				reps[r.ID()] = r
			}
			n.cur.check(reps)
		}
	}
}

// current reports whether r, this node's replica, may feed event streams:
// it is current (partition.Current) and, as a follower, has caught up with
// its leader's commit index as the leader's node reported it (trackCatchUp).
// A follower's own commit index cannot tell that it is behind, and one
// still installing a snapshot or replaying its log after a restart would
// stream from far back, or report a channel it has not applied as missing:
// it is the read index of a watch, taken once per replica, not per watch.
func (n *Node) current(r *partition.Partition) error {
	if err := r.Current(); err != nil {
		return err
	}
	if _, _, caughtUp, _ := n.reps.lookup(r.ID()); !caughtUp && !r.IsLeader() {
		return fmt.Errorf("%w: partition %d has not caught up with its leader yet", partition.ErrNotCurrent, r.ID())
	}
	return nil
}

// electionTimeout is the replicas' election timeout.
func (n *Node) electionTimeout() time.Duration {
	if et := n.cfg.Partition.ElectionTimeout; et > 0 {
		return et
	}
	return partition.DefaultConfig().ElectionTimeout
}
