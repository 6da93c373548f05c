package partition

import (
	"context"

	"github.com/hashicorp/raft"
)

// Observer takes one measurement in seconds; a prometheus.Histogram is one.
type Observer interface{ Observe(seconds float64) }

// Counter counts events; a prometheus.Counter is one.
type Counter interface{ Inc() }

// Observers receive a replica's measurements as they happen, for a
// metrics registry. A nil field is not measured.
type Observers struct {
	// Apply takes the time to apply one batch of entries to the state file
	// (one transaction; with SyncStateFile, its fsync too).
	Apply Observer
	// Snapshot takes the time to write one snapshot (the copy of the state
	// file into raft's snapshot store, and its fsync).
	Snapshot Observer
	// LeaderChange counts the leader changes this replica sees: a new
	// leader, or none (an election).
	LeaderChange Counter
}

// countLeaderChanges counts every leader observation of p's Raft instance
// until ctx ends. raft drops an observation rather than wait for this
// loop, so a burst of elections may count short, never long.
func (p *Partition) countLeaderChanges(ctx context.Context, c Counter) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	p.raft.RegisterObserver(obs)
	defer p.raft.DeregisterObserver(obs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			c.Inc()
		}
	}
}
