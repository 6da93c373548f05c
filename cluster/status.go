package cluster

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/cluster/ring"
)

// statusTimeout bounds one NodeStatus call to a peer.
const statusTimeout = 2 * time.Second

// localStatus reports this node's replicas.
func (n *Node) localStatus() *clusterv1.NodeStatusResponse {
	resp := &clusterv1.NodeStatusResponse{Node: n.self()}
	resp.MetaLeader, _ = n.meta.Leader()
	resp.Space = n.space.localStatus()
	resp.Unreachable = n.reach.downPeers()
	for _, r := range n.reps.all() {
		s := r.Status()
		rs := &clusterv1.ReplicaStatus{
			Partition:    r.ID(),
			State:        s.State,
			Term:         s.Term,
			LeaderId:     s.LeaderID,
			CommitIndex:  s.CommitIndex,
			AppliedIndex: s.AppliedIndex,
		}
		if !s.LastContact.IsZero() {
			rs.LastContactMs = time.Since(s.LastContact).Milliseconds()
		}
		if cfg, err := r.Configuration(); err == nil {
			for _, m := range cfg.Members {
				rs.Configuration = append(rs.Configuration, &heraldv1.Replica{NodeId: m.ID, Voter: m.Voter})
			}
		}
		resp.Replicas = append(resp.Replicas, rs)
	}
	sort.Slice(resp.Replicas, func(i, j int) bool { return resp.Replicas[i].Partition < resp.Replicas[j].Partition })
	return resp
}

// nodeStatus asks a node for its replicas' state.
func (n *Node) nodeStatus(ctx context.Context, id string) (*clusterv1.NodeStatusResponse, error) {
	if id == n.cfg.NodeID {
		return n.localStatus(), nil
	}
	c, err := n.peers.to(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	resp, err := c.NodeStatus(ctx, &clusterv1.NodeStatusRequest{})
	n.reach.note(ctx, id, err, true) // a status call's own deadline is a probe's
	return resp, err
}

// statusCache returns a function that asks a node for its status at most
// once: one round's view of the cluster. It returns nil for an unreachable
// node.
func (n *Node) statusCache(ctx context.Context) func(id string) *clusterv1.NodeStatusResponse {
	statuses := map[string]*clusterv1.NodeStatusResponse{}
	return func(id string) *clusterv1.NodeStatusResponse {
		s, ok := statuses[id]
		if !ok {
			s, _ = n.nodeStatus(ctx, id) // nil when unreachable
			statuses[id] = s
		}
		return s
	}
}

// allStatus asks every node the metadata knows (but removed ones) for its
// status, in parallel. Unreachable nodes are missing from the map.
func (n *Node) allStatus(ctx context.Context) map[string]*clusterv1.NodeStatusResponse {
	var mu sync.Mutex
	out := map[string]*clusterv1.NodeStatusResponse{}
	var wg sync.WaitGroup
	for _, node := range n.meta.State().GetNodes() {
		if node.GetState() == heraldv1.Node_STATE_REMOVED {
			continue
		}
		wg.Go(func() {
			s, err := n.nodeStatus(ctx, node.GetId())
			if err != nil {
				return
			}
			mu.Lock()
			out[node.GetId()] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// stateUnknown is a replica's state in the ring when its node does not
// answer.
const stateUnknown = "unknown"

// ring builds the view of every partition from the nodes' statuses.
func (n *Node) ring(st *clusterv1.MetaState, statuses map[string]*clusterv1.NodeStatusResponse) []*heraldv1.Partition {
	parts := make([]*heraldv1.Partition, st.GetPartitions())
	for p := range parts {
		first, last := ring.Range(uint32(p), st.GetPartitions())
		parts[p] = &heraldv1.Partition{Id: uint32(p), FirstToken: first, LastToken: last,
			Health: heraldv1.Partition_HEALTH_NO_QUORUM}
		if pl := placementOf(st, uint32(p)); pl != nil {
			parts[p].DesiredReplicas = pl.GetReplicas()
		}
	}
	// Replica status by partition and node; the leader's configuration is
	// the partition's.
	type entry struct {
		node string
		rs   *clusterv1.ReplicaStatus
	}
	byPart := map[uint32][]entry{}
	var leaderTerm = map[uint32]uint64{}
	for id, s := range statuses {
		for _, rs := range s.GetReplicas() {
			p := rs.GetPartition()
			if int(p) >= len(parts) {
				continue
			}
			byPart[p] = append(byPart[p], entry{id, rs})
			if rs.GetState() == raft.Leader.String() && rs.GetTerm() >= leaderTerm[p] {
				leaderTerm[p] = rs.GetTerm()
				parts[p].Leader = id
				parts[p].CommitIndex = rs.GetCommitIndex()
				parts[p].AppliedIndex = rs.GetAppliedIndex()
				parts[p].Replicas = nil
				for _, c := range rs.GetConfiguration() {
					parts[p].Replicas = append(parts[p].Replicas, &heraldv1.Replica{NodeId: c.GetNodeId(), Voter: c.GetVoter()})
				}
			}
		}
	}
	for p, part := range parts {
		if part.Leader == "" {
			continue
		}
		healthy := true
		for _, r := range part.Replicas {
			found := false
			for _, e := range byPart[uint32(p)] {
				if e.node == r.NodeId {
					found = true
					r.State = e.rs.GetState()
					r.AppliedIndex = e.rs.GetAppliedIndex()
					r.CommitIndex = e.rs.GetCommitIndex()
				}
			}
			if !found {
				r.State = stateUnknown
			}
			healthy = healthy && found && r.Voter && r.AppliedIndex+caughtUpLag >= part.CommitIndex
		}
		part.Health = heraldv1.Partition_HEALTH_DEGRADED
		if healthy && len(part.Replicas) == len(part.DesiredReplicas) {
			part.Health = heraldv1.Partition_HEALTH_OK
		}
	}
	return parts
}

// trackCatchUp records which follower replicas have applied up to within
// caughtUpLag of their leader's commit index, asking the leaders' nodes:
// a follower only learns the commit index with new entries, so its own
// view cannot tell that it is behind. A replica stays caught up until it
// loses contact with a leader; steady state costs no calls.
func (c *controller) trackCatchUp(ctx context.Context) {
	n := c.n
	var pending []*partition.Partition
	for _, r := range n.reps.all() {
		_, _, caught, _ := n.reps.lookup(r.ID())
		switch {
		case !r.Ready():
			n.reps.setCaughtUp(r.ID(), r, false)
		case !r.IsLeader() && !caught:
			pending = append(pending, r)
		}
	}
	status := n.statusCache(ctx)
	for _, r := range pending {
		leader := r.Leader()
		if leader == "" {
			continue
		}
		for _, rs := range status(leader).GetReplicas() {
			if rs.GetPartition() == r.ID() && rs.GetState() == raft.Leader.String() &&
				r.Status().AppliedIndex+caughtUpLag >= rs.GetCommitIndex() {
				n.reps.setCaughtUp(r.ID(), r, true)
			}
		}
	}
}

// lead runs the metadata leader's duties: found the partitions once the
// founders have registered, then plan placement changes for partitions
// whose groups match their placement.
func (c *controller) lead(ctx context.Context) {
	n := c.n
	st := n.meta.State()
	if st.GetPartitions() == 0 {
		c.initCluster(ctx)
		return
	}
	c.tendMetaGroup(ctx)
	moves := meta.Plan(st, settledIn(n.ring(st, n.allStatus(ctx))))
	if len(moves) == 0 {
		return
	}
	_, err := n.meta.Propose(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
		SetPlacement: &clusterv1.SetPlacement{Placements: moves}}})
	if err != nil {
		n.log.Debug("placement change", "err", err)
		return
	}
	n.log.Info("placement changed", "partitions", len(moves))
}

// settledIn returns, for the ring parts, whether a partition has settled:
// it has a leader, its group's voters are its placement, and a majority
// of them answer. Placement changes are planned only for settled
// partitions, so that a group makes one move at a time: a second planned
// before the first is done could take two of three replicas out of the
// placement while the group still needs them for its quorum. A leader
// whose followers are gone reports itself leader until its lease runs
// out, and its group cannot make the move: hence the majority.
func settledIn(parts []*heraldv1.Partition) func(uint32) bool {
	return func(p uint32) bool {
		if int(p) >= len(parts) {
			return false
		}
		part := parts[p]
		if part.Leader == "" || len(part.Replicas) != len(part.DesiredReplicas) {
			return false
		}
		answering := 0
		for _, r := range part.Replicas {
			if !r.Voter || !contains(part.DesiredReplicas, r.NodeId) {
				return false
			}
			if r.State != stateUnknown {
				answering++
			}
		}
		return answering > len(part.Replicas)/2
	}
}
