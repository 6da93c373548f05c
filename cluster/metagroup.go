package cluster

import (
	"context"

	"github.com/hashicorp/raft"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// tendMetaGroup keeps the metadata group's voters on active nodes, one
// change per round, on the metadata leader: a removed node leaves the
// group; while there are fewer than MetaVoters voters on active nodes, an
// active non-voter is promoted; then a draining voter is demoted to a
// non-voter, so that the group's quorum never depends on a node about to
// be stopped. It stays in the group: its copy of the metadata must stay
// current until it has handed every leadership and replica over.
func (c *controller) tendMetaGroup(ctx context.Context) {
	n := c.n
	servers, err := n.meta.Configuration()
	if err != nil {
		return
	}
	state := map[string]heraldv1.Node_State{}
	for _, node := range n.meta.State().GetNodes() {
		state[node.GetId()] = node.GetState()
	}
	activeVoters, candidate := 0, ""
	var draining string
	for _, s := range servers {
		id := string(s.ID)
		switch st := state[id]; {
		case st == heraldv1.Node_STATE_REMOVED:
			c.metaChange(ctx, "remove", id, n.meta.RemoveServer(ctx, id))
			return
		case s.Suffrage == raft.Voter && st == heraldv1.Node_STATE_ACTIVE:
			activeVoters++
		case s.Suffrage == raft.Voter && st == heraldv1.Node_STATE_DRAINING && id != n.cfg.NodeID:
			draining = id
		case s.Suffrage != raft.Voter && st == heraldv1.Node_STATE_ACTIVE && candidate == "":
			candidate = id
		}
	}
	switch {
	case activeVoters < n.cfg.MetaVoters && candidate != "":
		c.metaChange(ctx, "promote", candidate, n.meta.AddVoter(ctx, candidate, n.peers.raftAddr(candidate)))
	case draining != "" && activeVoters >= min(n.cfg.MetaVoters, 3):
		c.metaChange(ctx, "demote draining", draining, n.meta.DemoteVoter(ctx, draining))
	}
}

func (c *controller) metaChange(_ context.Context, what, id string, err error) {
	if err != nil {
		c.n.log.Warn("metadata group change", "change", what, "peer", id, "err", err)
		return
	}
	c.n.log.Info("metadata group changed", "change", what, "peer", id)
}
