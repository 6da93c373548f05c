package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage"
)

// The admin API. Each method is safe for concurrent use and answers with
// *storage.Error for bad requests (unknown node or partition: not found;
// a change the cluster cannot make: failed precondition), so the gateway's
// one error mapping applies.

func invalidf(format string, args ...any) error {
	return &storage.Error{Kind: storage.ErrInvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

func notFoundf(format string, args ...any) error {
	return &storage.Error{Kind: storage.ErrNotFound, Msg: fmt.Sprintf(format, args...)}
}

func preconditionf(format string, args ...any) error {
	return &storage.Error{Kind: storage.ErrFailedPrecondition, Msg: fmt.Sprintf(format, args...)}
}

// knownNodes returns the nodes this node knows: the metadata's, plus
// those only heard of through Hello, sorted by id.
func (n *Node) knownNodes() ([]*heraldv1.Node, map[string]bool) {
	seen := map[string]bool{}
	var out []*heraldv1.Node
	for _, node := range n.meta.State().GetNodes() {
		seen[node.GetId()] = true
		out = append(out, proto.CloneOf(node))
	}
	n.mu.Lock()
	for id, node := range n.heard {
		if !seen[id] {
			out = append(out, proto.CloneOf(node))
		}
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b *heraldv1.Node) int { return strings.Compare(a.GetId(), b.GetId()) })
	return out, seen
}

// requireMeta fails when the node does not have the cluster's metadata yet.
func (n *Node) requireMeta() (*clusterv1.MetaState, error) {
	st := n.meta.State()
	if st.GetPartitions() == 0 {
		return nil, fmt.Errorf("%w: the node has no cluster metadata yet", ErrNotApplied)
	}
	return st, nil
}

// GetRing lists every partition with its replicas, leader, indexes and
// health, as the nodes report them now.
func (n *Node) GetRing(ctx context.Context) (*heraldv1.GetRingResponse, error) {
	st, err := n.requireMeta()
	if err != nil {
		return nil, err
	}
	parts := n.ring(st, n.allStatus(ctx))
	var epoch uint64
	for _, pl := range st.GetPlacements() {
		epoch += pl.GetEpoch()
	}
	return &heraldv1.GetRingResponse{PartitionCount: st.GetPartitions(), Partitions: parts, PlacementEpoch: epoch}, nil
}

// LookupChannel says which partition owns a channel and where it lives.
func (n *Node) LookupChannel(ctx context.Context, channel string) (*heraldv1.LookupChannelResponse, error) {
	if err := storage.ValidateChannelID(channel); err != nil {
		return nil, err
	}
	st, err := n.requireMeta()
	if err != nil {
		return nil, err
	}
	p := ring.Partition(channel, st.GetPartitions())
	parts := n.ring(st, n.allStatus(ctx))
	return &heraldv1.LookupChannelResponse{ChannelId: channel, Token: ring.Hash(channel), Partition: parts[p]}, nil
}

// ListNodes lists the nodes with how many replicas each holds and leads.
func (n *Node) ListNodes(ctx context.Context) (*heraldv1.ListNodesResponse, error) {
	statuses := n.allStatus(ctx)
	nodes, _ := n.knownNodes()
	voters := map[string]bool{}
	if servers, err := n.meta.Configuration(); err == nil {
		for _, s := range servers {
			voters[string(s.ID)] = s.Suffrage == raft.Voter
		}
	}
	for _, node := range nodes {
		s, ok := statuses[node.GetId()]
		node.Reachable = ok
		node.MetaVoter = voters[node.GetId()]
		for _, rs := range s.GetReplicas() {
			node.Replicas++
			if rs.GetState() == raft.Leader.String() {
				node.Leaders++
			}
		}
	}
	leader, _ := n.meta.Leader()
	return &heraldv1.ListNodesResponse{Nodes: nodes, MetaLeader: leader}, nil
}

// node returns a node of the metadata, or a not-found error.
func (n *Node) node(st *clusterv1.MetaState, id string) (*heraldv1.Node, error) {
	for _, node := range st.GetNodes() {
		if node.GetId() == id {
			return node, nil
		}
	}
	return nil, notFoundf("node %q is not in the cluster", id)
}

// setNodeState records a node's state through the metadata leader. Setting
// a state twice changes nothing, so an attempt that may have applied (the
// metadata leader changed under it: removing a metadata voter can do that)
// is made again within the request's deadline.
func (n *Node) setNodeState(ctx context.Context, id string, state heraldv1.Node_State) (*heraldv1.Node, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	cmd := &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetNodeState{
		SetNodeState: &clusterv1.SetNodeState{NodeId: id, State: state}}}
	for {
		st, err := n.proposeMeta(ctx, cmd)
		switch {
		case err == nil:
			return n.node(st, id)
		case !errors.Is(err, ErrIndeterminate) || ctx.Err() != nil:
			return nil, err
		}
		n.log.Warn("set node state: outcome indeterminate; again", "node", id, "state", state, "err", err)
	}
}

// DrainNode marks a node draining: the placement moves its leaderships
// away, then its replicas. It needs more active nodes than replicas.
func (n *Node) DrainNode(ctx context.Context, id string) (*heraldv1.Node, error) {
	st, err := n.requireMeta()
	if err != nil {
		return nil, err
	}
	if _, err := n.node(st, id); err != nil {
		return nil, err
	}
	if active := activeBesides(st, id); active < int(st.GetReplication()) {
		return nil, preconditionf("cannot drain %q: %d other active nodes cannot hold %d replicas of each partition",
			id, active, st.GetReplication())
	}
	return n.setNodeState(ctx, id, heraldv1.Node_STATE_DRAINING)
}

// RemoveNode forgets a node: its replicas are replaced elsewhere and it
// leaves the metadata group. It goes ahead even when too few active nodes
// are left to hold every replica (a dead node must be removable), and then
// says so in the answer's warning.
func (n *Node) RemoveNode(ctx context.Context, id string) (*heraldv1.RemoveNodeResponse, error) {
	st, err := n.requireMeta()
	if err != nil {
		return nil, err
	}
	if _, err := n.node(st, id); err != nil {
		return nil, err
	}
	if id == n.cfg.NodeID {
		return nil, preconditionf("node %q cannot remove itself; ask another node", id)
	}
	node, err := n.setNodeState(ctx, id, heraldv1.Node_STATE_REMOVED)
	if err != nil {
		return nil, err
	}
	if err := n.removeMetaServer(ctx, id); err != nil {
		n.log.Warn("remove node from the metadata group", "removed", id, "err", err)
	}
	return &heraldv1.RemoveNodeResponse{Node: node, Warning: fewerReplicas(st, id)}, nil
}

// fewerReplicas is the warning for removing node id from st when fewer
// active nodes are left than replicas a partition, else "".
func fewerReplicas(st *clusterv1.MetaState, id string) string {
	active, want := activeBesides(st, id), int(st.GetReplication())
	if active >= want {
		return ""
	}
	return fmt.Sprintf("%s is removed with %s left: each partition keeps %s, not %d, until another node joins",
		id, plural(active, "active node"), plural(active, "replica"), want)
}

// activeBesides counts the active nodes of st other than id.
func activeBesides(st *clusterv1.MetaState, id string) int {
	active := 0
	for _, node := range st.GetNodes() {
		if node.GetState() == heraldv1.Node_STATE_ACTIVE && node.GetId() != id {
			active++
		}
	}
	return active
}

// plural is "k things".
func plural(k int, thing string) string {
	if k == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", k, thing)
}

// removeMetaServer takes a node out of the metadata group, on the
// metadata leader.
func (n *Node) removeMetaServer(ctx context.Context, id string) error {
	if !n.meta.IsLeader() {
		return nil // the leader's reconcile does it (see lead)
	}
	return n.meta.RemoveServer(ctx, id)
}

// TransferLeadership makes node id the preferred leader of partition p and
// waits (within ctx) until it leads. So that the metadata leader's
// continuous leader balancing does not move the leadership straight back,
// the same placement change moves other partitions' preferred leaders as
// balancing would, leaving p's alone.
func (n *Node) TransferLeadership(ctx context.Context, p uint32, id string) (*heraldv1.Partition, error) {
	st, err := n.requireMeta()
	if err != nil {
		return nil, err
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	for {
		pl := placementOf(st, p)
		if pl == nil {
			return nil, notFoundf("partition %d does not exist; the cluster has %d", p, st.GetPartitions())
		}
		if !contains(pl.GetReplicas(), id) {
			return nil, preconditionf("node %q holds no replica of partition %d (replicas: %s)",
				id, p, strings.Join(pl.GetReplicas(), ", "))
		}
		if pl.GetReplicas()[0] == id {
			break
		}
		_, err := n.proposeMeta(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
			SetPlacement: &clusterv1.SetPlacement{Placements: transferPlan(st, pl, id)}}})
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrFailedPrecondition) {
			return nil, err
		}
		// The planner changed a placement meanwhile: plan again.
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
		st = n.meta.State()
	}
	for {
		parts := n.ring(n.meta.State(), n.allStatus(ctx))
		if parts[p].GetLeader() == id {
			return parts[p], nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("partition %d: %s does not lead yet: %w", p, id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// transferPlan returns the placement changes that make id the preferred
// leader of pl's partition: that reorder, and the reorders of other
// partitions (moves of preferred leaders only, no replica moves) that
// balancing plans once it is made.
func transferPlan(st *clusterv1.MetaState, pl *clusterv1.Placement, id string) []*clusterv1.Placement {
	order := []string{id}
	for _, r := range pl.GetReplicas() {
		if r != id {
			order = append(order, r)
		}
	}
	p := pl.GetPartition()
	next := proto.CloneOf(st)
	placementOf(next, p).Replicas = order
	changes := []*clusterv1.Placement{{Partition: p, Replicas: order, ExpectEpoch: pl.GetEpoch(), Generation: pl.GetGeneration()}}
	for _, c := range meta.Plan(next, func(q uint32) bool { return q != p }) {
		cur := placementOf(st, c.GetPartition()).GetReplicas()
		if len(cur) == len(c.GetReplicas()) && !slices.ContainsFunc(c.GetReplicas(), func(r string) bool { return !contains(cur, r) }) {
			changes = append(changes, c)
		}
	}
	return changes
}

// Rebalance plans placement changes now, as the metadata leader does
// continuously, and returns how many partitions change. Like the leader,
// it leaves a partition that has not settled from its last move (see
// settledIn) until it has.
func (n *Node) Rebalance(ctx context.Context) (uint32, error) {
	st, err := n.requireMeta()
	if err != nil {
		return 0, err
	}
	moves := meta.Plan(st, settledIn(n.ring(st, n.allStatus(ctx))))
	if len(moves) == 0 {
		return 0, nil
	}
	_, err = n.proposeMeta(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
		SetPlacement: &clusterv1.SetPlacement{Placements: moves}}})
	if err != nil {
		return 0, err
	}
	return uint32(len(moves)), nil
}

// ReplicaDigest returns a replica's applied index and state digest.
func (n *Node) ReplicaDigest(ctx context.Context, p uint32, id string) (*heraldv1.GetReplicaDigestResponse, error) {
	resp, err := n.replicaOpAt(ctx, id, &clusterv1.ReplicaOpRequest{Partition: p,
		Op: &clusterv1.ReplicaOpRequest_Digest{Digest: &clusterv1.DigestOp{}}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetReplicaDigestResponse{Partition: p, NodeId: id,
		AppliedIndex: resp.GetAppliedIndex(), Sha256: resp.GetSha256()}, nil
}

// CompactLog makes partition p's replica on node id take a Raft snapshot
// now, truncating its log behind it, and returns the snapshot's index.
func (n *Node) CompactLog(ctx context.Context, p uint32, id string) (*heraldv1.CompactLogResponse, error) {
	resp, err := n.replicaOpAt(ctx, id, &clusterv1.ReplicaOpRequest{Partition: p,
		Op: &clusterv1.ReplicaOpRequest_Snapshot{Snapshot: &clusterv1.SnapshotOp{}}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.CompactLogResponse{Partition: p, NodeId: id, SnapshotIndex: resp.GetSnapshotIndex()}, nil
}

// replicaOpAt runs a replica operation on node id.
func (n *Node) replicaOpAt(ctx context.Context, id string, req *clusterv1.ReplicaOpRequest) (*clusterv1.ReplicaOpResponse, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	var resp *clusterv1.ReplicaOpResponse
	if id == n.cfg.NodeID {
		var err error
		if resp, err = n.replicaOp(ctx, req); err != nil {
			return nil, err
		}
	} else {
		c, err := n.peers.to(id)
		if err != nil {
			return nil, notFoundf("node %q is not in the cluster", id)
		}
		if resp, err = c.ReplicaOp(ctx, req); err != nil {
			return nil, fmt.Errorf("node %s: %w", id, err)
		}
	}
	if resp.GetError() != nil {
		return nil, domainError(resp.GetError())
	}
	return resp, nil
}

// replicaOp runs a replica operation on this node.
func (n *Node) replicaOp(ctx context.Context, req *clusterv1.ReplicaOpRequest) (*clusterv1.ReplicaOpResponse, error) {
	p := req.GetPartition()
	fail := func(err error) (*clusterv1.ReplicaOpResponse, error) {
		if w, ok := toWire(err); ok {
			return &clusterv1.ReplicaOpResponse{Error: w}, nil
		}
		return nil, err
	}
	if op, ok := req.GetOp().(*clusterv1.ReplicaOpRequest_Recover); ok {
		if err := n.recoverLocal(ctx, p, op.Recover.GetGeneration()); err != nil {
			return fail(err)
		}
		return &clusterv1.ReplicaOpResponse{}, nil
	}
	r := n.Replica(p)
	if r == nil {
		return fail(notFoundf("node %s holds no replica of partition %d", n.cfg.NodeID, p))
	}
	switch op := req.GetOp().(type) {
	case *clusterv1.ReplicaOpRequest_Digest:
		index, sum, err := r.DB().Digest()
		if err != nil {
			return nil, err
		}
		return &clusterv1.ReplicaOpResponse{AppliedIndex: index, Sha256: sum[:]}, nil
	case *clusterv1.ReplicaOpRequest_Snapshot:
		if err := r.Snapshot(ctx); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return nil, fmt.Errorf("partition %d on %s: snapshot: %w", p, n.cfg.NodeID, err)
		}
		return &clusterv1.ReplicaOpResponse{SnapshotIndex: r.LastSnapshotIndex()}, nil
	case *clusterv1.ReplicaOpRequest_TransferLeadership:
		if !r.IsLeader() {
			return &clusterv1.ReplicaOpResponse{NotLeader: &clusterv1.NotLeader{}}, nil
		}
		to := op.TransferLeadership.GetToNodeId()
		if err := r.TransferLeadership(ctx, to, n.peers.raftAddr(to)); err != nil {
			return nil, err
		}
		return &clusterv1.ReplicaOpResponse{}, nil
	}
	return fail(invalidf("replica operation missing"))
}
