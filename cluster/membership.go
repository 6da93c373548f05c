package cluster

import (
	"context"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/partition"
)

// caughtUpLag is how many entries behind its leader's commit index a new
// replica may be and still count as caught up.
const caughtUpLag = 64

// membershipTimeout bounds one membership change.
const membershipTimeout = 10 * time.Second

// executeMembership moves each partition this node leads one step toward
// its placement: add a missing replica as a non-voter, promote it to voter
// once it has caught up, hand leadership to another replica before this
// one is removed, remove a replica the placement no longer wants, and hand
// leadership to the preferred leader (the placement's first replica).
// Every change is conditional on the configuration index it was planned on.
func (c *controller) executeMembership(ctx context.Context) {
	n := c.n
	st := n.meta.State()
	status := n.statusCache(ctx)
	c.handOverUnreachable(ctx, status)
	for _, r := range n.reps.leading() {
		pl := placementOf(st, r.ID())
		_, gen, _, _ := n.reps.lookup(r.ID())
		if pl == nil || len(pl.GetReplicas()) == 0 || gen != pl.GetGeneration() {
			continue // a recovery is being recorded: wait for the placement
		}
		if err := c.step(ctx, r, pl.GetReplicas(), status); err != nil {
			n.log.Warn("membership change", "partition", r.ID(), "err", err)
		}
	}
}

// step makes at most one membership change to r's group.
func (c *controller) step(ctx context.Context, r *partition.Partition, want []string, status func(string) *clusterv1.NodeStatusResponse) error {
	n := c.n
	cfg, err := r.Configuration()
	if err != nil {
		return err
	}
	in := map[string]bool{} // id → voter
	for _, m := range cfg.Members {
		in[m.ID] = m.Voter
	}
	caughtUp := func(id string) bool {
		for _, rs := range status(id).GetReplicas() {
			if rs.GetPartition() == r.ID() {
				return rs.GetAppliedIndex()+caughtUpLag >= r.Status().CommitIndex
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	for _, id := range want {
		voter, ok := in[id]
		switch {
		case !ok:
			addr := n.peers.raftAddr(id)
			if addr == "" {
				continue
			}
			n.log.Info("adding replica as non-voter", "partition", r.ID(), "replica", id)
			return r.AddNonvoter(ctx, id, addr, cfg.Index)
		case !voter && caughtUp(id):
			n.log.Info("promoting caught-up replica to voter", "partition", r.ID(), "replica", id)
			return r.AddVoter(ctx, id, n.peers.raftAddr(id), cfg.Index)
		}
	}
	settled := true
	for id, voter := range in {
		if contains(want, id) {
			settled = settled && voter
			continue
		}
		settled = false
		if !allVoters(in, want) {
			continue // add the replacement before removing anything
		}
		if id == n.cfg.NodeID {
			return c.handOver(ctx, r, want, caughtUp)
		}
		n.log.Info("removing replica", "partition", r.ID(), "replica", id)
		return r.RemoveServer(ctx, id, cfg.Index)
	}
	if settled && want[0] != n.cfg.NodeID && caughtUp(want[0]) {
		n.log.Info("handing leadership to the preferred leader", "partition", r.ID(), "to", want[0])
		return r.TransferLeadership(ctx, want[0], n.peers.raftAddr(want[0]))
	}
	return nil
}

// handOver transfers r's leadership to a caught-up replica the placement
// keeps, preferring its first.
func (c *controller) handOver(ctx context.Context, r *partition.Partition, want []string, caughtUp func(string) bool) error {
	for _, id := range want {
		if caughtUp(id) {
			c.n.log.Info("handing leadership over before leaving", "partition", r.ID(), "to", id)
			return r.TransferLeadership(ctx, id, c.n.peers.raftAddr(id))
		}
	}
	return nil
}

func allVoters(in map[string]bool, want []string) bool {
	for _, id := range want {
		if voter, ok := in[id]; !ok || !voter {
			return false
		}
	}
	return true
}
