package cluster

import (
	"context"

	"github.com/hashicorp/raft"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
)

// tendMetaGroup keeps the metadata group's voters on active nodes with
// the channel role, one change per round, on the metadata leader:
//
//   - a removed node leaves the group;
//   - while there are fewer than MetaVoters voters on active nodes, an
//     active non-voter is promoted, one with the channel role first;
//   - a draining voter is demoted to a non-voter, so that the group's
//     quorum never depends on a node about to be stopped. It stays in the
//     group: its copy of the metadata must stay current until it has
//     handed every leadership and replica over;
//   - a voter without the channel role (a gateway-only node, which is
//     meant to come and go) is swapped for an active non-voter with it:
//     the non-voter is promoted first, the voter demoted in a later
//     round, so the quorum never shrinks on the way. A leader without the
//     role hands its leadership to a voter with it, which does the swap.
//
// Without enough nodes with the channel role, voters without it stay:
// MetaVoters voters tolerate more failures than fewer would.
func (c *controller) tendMetaGroup(ctx context.Context) {
	n := c.n
	servers, err := n.meta.Configuration()
	if err != nil {
		return
	}
	nodes := map[string]*heraldv1.Node{}
	for _, node := range n.meta.State().GetNodes() {
		nodes[node.GetId()] = node
	}
	activeVoters := 0
	var candidate, draining, roleless, heir string
	selfRoleless, better := false, false // better: candidate has the channel role
	for _, s := range servers {
		id := string(s.ID)
		node := nodes[id]
		st := node.GetState()
		channel := node != nil && meta.HoldsReplicas(node)
		switch {
		case st == heraldv1.Node_STATE_REMOVED:
			c.metaChange(ctx, "remove", id, n.meta.RemoveServer(ctx, id))
			return
		case s.Suffrage == raft.Voter && st == heraldv1.Node_STATE_ACTIVE:
			activeVoters++
			switch {
			case !channel && id == n.cfg.NodeID:
				selfRoleless = true
			case !channel && roleless == "":
				roleless = id
			case channel && id != n.cfg.NodeID && heir == "":
				heir = id
			}
		case s.Suffrage == raft.Voter && st == heraldv1.Node_STATE_DRAINING && id != n.cfg.NodeID:
			draining = id
		case s.Suffrage != raft.Voter && st == heraldv1.Node_STATE_ACTIVE:
			if candidate == "" || channel && !better {
				candidate, better = id, channel
			}
		}
	}
	switch {
	case activeVoters < n.cfg.MetaVoters && candidate != "":
		c.metaChange(ctx, "promote", candidate, n.meta.AddVoter(ctx, candidate, n.peers.raftAddr(candidate)))
	case draining != "" && activeVoters >= min(n.cfg.MetaVoters, 3):
		c.metaChange(ctx, "demote draining", draining, n.meta.DemoteVoter(ctx, draining))
	case roleless != "" && activeVoters > n.cfg.MetaVoters:
		c.metaChange(ctx, "demote voter without the channel role", roleless, n.meta.DemoteVoter(ctx, roleless))
	case roleless != "" && better:
		c.metaChange(ctx, "promote in place of "+roleless, candidate, n.meta.AddVoter(ctx, candidate, n.peers.raftAddr(candidate)))
	case selfRoleless && heir != "" && (better || activeVoters > n.cfg.MetaVoters):
		c.metaChange(ctx, "hand leadership to a voter with the channel role", heir,
			n.meta.TransferLeadership(ctx, heir, n.peers.raftAddr(heir)))
	}
}

func (c *controller) metaChange(_ context.Context, what, id string, err error) {
	if err != nil {
		c.n.log.Warn("metadata group change", "change", what, "peer", id, "err", err)
		return
	}
	c.n.log.Info("metadata group changed", "change", what, "peer", id)
}
