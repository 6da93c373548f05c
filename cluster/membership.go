package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/internal/future"
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
func (n *Node) executeMembership(ctx context.Context) {
	st := n.meta.State()
	n.mu.Lock()
	var leading []*partition.Partition
	for _, r := range n.replicas {
		if r.IsLeader() {
			leading = append(leading, r)
		}
	}
	n.mu.Unlock()
	status := n.statusCache(ctx)
	for _, r := range leading {
		pl := placementOf(st, r.ID())
		n.mu.Lock()
		gen := n.gens[r.ID()]
		n.mu.Unlock()
		if pl == nil || len(pl.GetReplicas()) == 0 || gen != pl.GetGeneration() {
			continue // a recovery is being recorded: wait for the placement
		}
		if err := n.step(ctx, r, pl.GetReplicas(), status); err != nil {
			n.log.Warn("membership change", "partition", r.ID(), "err", err)
		}
	}
}

// step makes at most one membership change to r's group.
func (n *Node) step(ctx context.Context, r *partition.Partition, want []string, status func(string) *clusterv1.NodeStatusResponse) error {
	f := r.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	cfg, index := f.Configuration(), f.Index()
	in := map[string]raft.ServerSuffrage{}
	for _, s := range cfg.Servers {
		in[string(s.ID)] = s.Suffrage
	}
	caughtUp := func(id string) bool {
		s := status(id)
		for _, rs := range s.GetReplicas() {
			if rs.GetPartition() == r.ID() {
				return rs.GetAppliedIndex()+caughtUpLag >= r.Raft().CommitIndex()
			}
		}
		return false
	}
	rf := r.Raft()
	ctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	for _, id := range want {
		suffrage, ok := in[id]
		switch {
		case !ok:
			addr := n.peers.raftAddr(id)
			if addr == "" {
				continue
			}
			n.log.Info("adding replica as non-voter", "partition", r.ID(), "replica", id)
			return future.Wait(ctx, rf.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), index, membershipTimeout))
		case suffrage != raft.Voter && caughtUp(id):
			n.log.Info("promoting caught-up replica to voter", "partition", r.ID(), "replica", id)
			return future.Wait(ctx, rf.AddVoter(raft.ServerID(id), raft.ServerAddress(n.peers.raftAddr(id)), index, membershipTimeout))
		}
	}
	settled := true
	for id, suffrage := range in {
		if contains(want, id) {
			settled = settled && suffrage == raft.Voter
			continue
		}
		settled = false
		if !allVoters(in, want) {
			continue // add the replacement before removing anything
		}
		if id == n.cfg.NodeID {
			return n.handOver(ctx, r, want, caughtUp)
		}
		n.log.Info("removing replica", "partition", r.ID(), "replica", id)
		return future.Wait(ctx, rf.RemoveServer(raft.ServerID(id), index, membershipTimeout))
	}
	if settled && want[0] != n.cfg.NodeID && caughtUp(want[0]) {
		n.log.Info("handing leadership to the preferred leader", "partition", r.ID(), "to", want[0])
		return future.Wait(ctx, rf.LeadershipTransferToServer(raft.ServerID(want[0]), raft.ServerAddress(n.peers.raftAddr(want[0]))))
	}
	return nil
}

// handOver transfers r's leadership to a caught-up replica the placement
// keeps, preferring its first.
func (n *Node) handOver(ctx context.Context, r *partition.Partition, want []string, caughtUp func(string) bool) error {
	for _, id := range want {
		if caughtUp(id) {
			n.log.Info("handing leadership over before leaving", "partition", r.ID(), "to", id)
			return future.Wait(ctx, r.Raft().LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(n.peers.raftAddr(id))))
		}
	}
	return nil
}

func allVoters(in map[string]raft.ServerSuffrage, want []string) bool {
	for _, id := range want {
		if s, ok := in[id]; !ok || s != raft.Voter {
			return false
		}
	}
	return true
}
