package meta

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// Apply returns the state after cmd is applied to s. It is the metadata
// group's state machine, deterministic and free of I/O: the Group's FSM
// calls it for every committed entry, and tests and planners may call it
// directly.
//
// Apply never modifies s or cmd. A command that is applied returns a new
// state with Epoch one higher; a command that would leave the state as it
// was (an UpsertNode repeating what is stored, a SetNodeState to the state
// the node is in, a SetPlacement to the replicas already there) returns s
// itself and no error. A rejected command returns s and a *storage.Error
// whose Kind is storage.ErrInvalidArgument, storage.ErrNotFound or
// storage.ErrFailedPrecondition; a command applies entirely or not at all.
// A nil s is read as the empty state.
//
// The rules:
//   - InitCluster applies once (then failed precondition "cluster already
//     initialised"). It needs a cluster_id, partitions and replication of
//     at least 1, distinct node ids, and one placement per partition, in
//     order, on distinct known nodes that are not REMOVED. It sets the
//     partition count, replication and placements (each at epoch 1) and
//     records the nodes, ACTIVE unless a state is given; nodes recorded
//     earlier by UpsertNode stay.
//   - UpsertNode inserts a node as ACTIVE (meta_voter as given) or updates
//     its addresses, roles, region and incarnation (if given), keeping its
//     state and meta_voter; a REMOVED node upserted with a new incarnation
//     (it rejoins with a new data directory) becomes ACTIVE again; a
//     member (not REMOVED) upserted with another incarnation than its own
//     is refused (failed precondition).
//     It is the one command, with InitCluster, allowed before InitCluster;
//     any other then fails with failed precondition.
//   - SetNodeState sets a known node (else not found) to ACTIVE, DRAINING
//     or REMOVED.
//   - SetPlacement replaces the replicas of each listed partition and bumps
//     its epoch, if every listed expect_epoch equals its partition's epoch
//     (else failed precondition, "placement changed"). Each placement must
//     name a partition in range, once, with distinct known nodes (unknown:
//     not found), none REMOVED unless the partition already has it.
//
// Node counts (replicas, leaders, reachable) are never stored: readers
// fill them in.
func Apply(s *clusterv1.MetaState, cmd *clusterv1.MetaCommand) (*clusterv1.MetaState, error) {
	if s == nil {
		s = &clusterv1.MetaState{}
	}
	next, err := applyOp(s, cmd)
	if err != nil {
		return s, err
	}
	if next == s || proto.Equal(next, s) {
		return s, nil
	}
	next.Epoch = s.Epoch + 1
	return next, nil
}

func applyOp(s *clusterv1.MetaState, cmd *clusterv1.MetaCommand) (*clusterv1.MetaState, error) {
	initialised := s.GetClusterId() != ""
	switch op := cmd.GetOp().(type) {
	case *clusterv1.MetaCommand_InitCluster:
		if initialised {
			return nil, domainErr(storage.ErrFailedPrecondition, "cluster already initialised")
		}
		return initCluster(s, op.InitCluster)
	case *clusterv1.MetaCommand_UpsertNode:
		return upsertNode(s, op.UpsertNode.GetNode())
	case *clusterv1.MetaCommand_SetNodeState:
		if !initialised {
			return nil, notInitialised()
		}
		return setNodeState(s, op.SetNodeState)
	case *clusterv1.MetaCommand_SetPlacement:
		if !initialised {
			return nil, notInitialised()
		}
		return setPlacement(s, op.SetPlacement.GetPlacements())
	default:
		return nil, domainErr(storage.ErrInvalidArgument, "metadata command has no known operation")
	}
}

func domainErr(kind error, format string, args ...any) *storage.Error {
	return &storage.Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func notInitialised() *storage.Error {
	return domainErr(storage.ErrFailedPrecondition, "cluster not initialised")
}

// initCluster applies InitCluster to a state that has not been initialised
// (it may hold nodes recorded by UpsertNode).
func initCluster(s *clusterv1.MetaState, c *clusterv1.InitCluster) (*clusterv1.MetaState, error) {
	switch {
	case c.GetClusterId() == "":
		return nil, domainErr(storage.ErrInvalidArgument, "init cluster: cluster_id is required")
	case c.GetPartitions() == 0:
		return nil, domainErr(storage.ErrInvalidArgument, "init cluster: partitions must be at least 1")
	case c.GetReplication() == 0:
		return nil, domainErr(storage.ErrInvalidArgument, "init cluster: replication must be at least 1")
	case len(c.GetPlacements()) != int(c.GetPartitions()):
		return nil, domainErr(storage.ErrInvalidArgument,
			"init cluster: got %d placements, want one per partition (%d)", len(c.GetPlacements()), c.GetPartitions())
	}
	next := proto.Clone(s).(*clusterv1.MetaState)
	next.ClusterId = c.GetClusterId()
	next.Partitions = c.GetPartitions()
	next.Replication = c.GetReplication()
	seen := make(map[string]bool, len(c.GetNodes()))
	for _, n := range c.GetNodes() {
		if err := checkNodeID(n.GetId()); err != nil {
			return nil, err
		}
		if seen[n.GetId()] {
			return nil, domainErr(storage.ErrInvalidArgument, "init cluster: node %q is listed twice", n.GetId())
		}
		seen[n.GetId()] = true
		if !validState(n.GetState()) && n.GetState() != heraldv1.Node_STATE_UNSPECIFIED {
			return nil, domainErr(storage.ErrInvalidArgument, "init cluster: node %q has an unknown state", n.GetId())
		}
		node := cleanNode(n)
		if node.State == heraldv1.Node_STATE_UNSPECIFIED {
			node.State = heraldv1.Node_STATE_ACTIVE
		}
		next.Nodes = putNode(next.Nodes, node)
	}
	next.Placements = make([]*clusterv1.Placement, len(c.GetPlacements()))
	for i, p := range c.GetPlacements() {
		if p.GetPartition() != uint32(i) {
			return nil, domainErr(storage.ErrInvalidArgument,
				"init cluster: placement %d names partition %d, want %d", i, p.GetPartition(), i)
		}
		if err := checkReplicas(next, p, nil); err != nil {
			return nil, err
		}
		next.Placements[i] = &clusterv1.Placement{
			Partition: p.GetPartition(),
			Replicas:  slices.Clone(p.GetReplicas()),
			Epoch:     1,
		}
	}
	return next, nil
}

// upsertNode inserts n as ACTIVE or updates its addresses, roles and region.
func upsertNode(s *clusterv1.MetaState, n *heraldv1.Node) (*clusterv1.MetaState, error) {
	if n == nil {
		return nil, domainErr(storage.ErrInvalidArgument, "upsert node: node is required")
	}
	if err := checkNodeID(n.GetId()); err != nil {
		return nil, err
	}
	next := proto.Clone(s).(*clusterv1.MetaState)
	node := cleanNode(n)
	if old := findNode(next.Nodes, n.GetId()); old != nil {
		node.State = old.GetState()
		node.MetaVoter = old.GetMetaVoter()
		switch {
		case node.Incarnation == "":
			node.Incarnation = old.GetIncarnation()
		case old.GetState() == heraldv1.Node_STATE_REMOVED && node.Incarnation != old.GetIncarnation():
			// A removed node back with a new data directory: a new member.
			node.State = heraldv1.Node_STATE_ACTIVE
		case old.GetIncarnation() != "" && node.Incarnation != old.GetIncarnation():
			// A member's id from another data directory: the member's
			// lost one, late (its registration was in flight when it was
			// removed and came back), or another node with its id.
			return nil, domainErr(storage.ErrFailedPrecondition,
				"upsert node: node %q is a member with another data directory; remove it first", n.GetId())
		}
	} else {
		node.State = heraldv1.Node_STATE_ACTIVE
	}
	next.Nodes = putNode(next.Nodes, node)
	return next, nil
}

func setNodeState(s *clusterv1.MetaState, c *clusterv1.SetNodeState) (*clusterv1.MetaState, error) {
	if !validState(c.GetState()) {
		return nil, domainErr(storage.ErrInvalidArgument,
			"set node state: state must be active, draining or removed, got %v", c.GetState())
	}
	if findNode(s.GetNodes(), c.GetNodeId()) == nil {
		return nil, domainErr(storage.ErrNotFound, "node %q not found", c.GetNodeId())
	}
	next := proto.Clone(s).(*clusterv1.MetaState)
	findNode(next.Nodes, c.GetNodeId()).State = c.GetState()
	return next, nil
}

// setPlacement checks every placement of the command, then compares every
// expected epoch, and only then changes anything.
func setPlacement(s *clusterv1.MetaState, ps []*clusterv1.Placement) (*clusterv1.MetaState, error) {
	if len(ps) == 0 {
		return nil, domainErr(storage.ErrInvalidArgument, "set placement: no placements")
	}
	seen := make(map[uint32]bool, len(ps))
	for _, p := range ps {
		if p.GetPartition() >= s.GetPartitions() || int(p.GetPartition()) >= len(s.GetPlacements()) {
			return nil, domainErr(storage.ErrInvalidArgument,
				"set placement: partition %d out of range [0, %d)", p.GetPartition(), s.GetPartitions())
		}
		if seen[p.GetPartition()] {
			return nil, domainErr(storage.ErrInvalidArgument,
				"set placement: partition %d is listed twice", p.GetPartition())
		}
		seen[p.GetPartition()] = true
		if err := checkReplicas(s, p, s.GetPlacements()[p.GetPartition()].GetReplicas()); err != nil {
			return nil, err
		}
	}
	for _, p := range ps {
		cur := s.GetPlacements()[p.GetPartition()]
		if p.GetExpectEpoch() != cur.GetEpoch() {
			return nil, domainErr(storage.ErrFailedPrecondition,
				"placement changed: partition %d is at epoch %d, the change expected %d",
				p.GetPartition(), cur.GetEpoch(), p.GetExpectEpoch())
		}
	}
	for _, p := range ps {
		if cur := s.GetPlacements()[p.GetPartition()]; p.GetGeneration() < cur.GetGeneration() {
			return nil, domainErr(storage.ErrInvalidArgument,
				"set placement: partition %d is at generation %d; a change cannot go back to %d",
				p.GetPartition(), cur.GetGeneration(), p.GetGeneration())
		}
	}
	next := proto.Clone(s).(*clusterv1.MetaState)
	for _, p := range ps {
		cur := next.Placements[p.GetPartition()]
		if slices.Equal(cur.Replicas, p.GetReplicas()) && p.GetGeneration() == cur.GetGeneration() {
			continue
		}
		cur.Replicas = slices.Clone(p.GetReplicas())
		cur.Generation = p.GetGeneration()
		cur.Epoch++
	}
	return next, nil
}

// checkReplicas checks that p's replicas are distinct, known nodes of s,
// none of them REMOVED unless it is among keep (the partition's current
// replicas, which a planner replaces one at a time).
func checkReplicas(s *clusterv1.MetaState, p *clusterv1.Placement, keep []string) error {
	reps := p.GetReplicas()
	if len(reps) == 0 {
		return domainErr(storage.ErrInvalidArgument, "placement of partition %d has no replicas", p.GetPartition())
	}
	for i, id := range reps {
		if slices.Contains(reps[:i], id) {
			return domainErr(storage.ErrInvalidArgument,
				"placement of partition %d names node %q twice", p.GetPartition(), id)
		}
		n := findNode(s.GetNodes(), id)
		if n == nil {
			return domainErr(storage.ErrNotFound,
				"placement of partition %d: node %q not found", p.GetPartition(), id)
		}
		if n.GetState() == heraldv1.Node_STATE_REMOVED && !slices.Contains(keep, id) {
			return domainErr(storage.ErrInvalidArgument,
				"placement of partition %d: node %q is removed", p.GetPartition(), id)
		}
	}
	return nil
}

func checkNodeID(id string) error {
	if id == "" {
		return domainErr(storage.ErrInvalidArgument, "node id is required")
	}
	return nil
}

func validState(st heraldv1.Node_State) bool {
	switch st {
	case heraldv1.Node_STATE_ACTIVE, heraldv1.Node_STATE_DRAINING, heraldv1.Node_STATE_REMOVED:
		return true
	}
	return false
}

// cleanNode copies the fields the metadata stores; the counts and
// reachability are filled in by readers.
func cleanNode(n *heraldv1.Node) *heraldv1.Node {
	return &heraldv1.Node{
		Id:          n.GetId(),
		HttpAddr:    n.GetHttpAddr(),
		RaftAddr:    n.GetRaftAddr(),
		Roles:       slices.Clone(n.GetRoles()),
		Region:      n.GetRegion(),
		State:       n.GetState(),
		MetaVoter:   n.GetMetaVoter(),
		Incarnation: n.GetIncarnation(),
	}
}

// findNode returns the node with id in nodes, sorted by id, or nil.
func findNode(nodes []*heraldv1.Node, id string) *heraldv1.Node {
	i, ok := slices.BinarySearchFunc(nodes, id, func(n *heraldv1.Node, id string) int {
		return strings.Compare(n.GetId(), id)
	})
	if !ok {
		return nil
	}
	return nodes[i]
}

// putNode inserts n into nodes, sorted by id, or replaces the node with
// its id.
func putNode(nodes []*heraldv1.Node, n *heraldv1.Node) []*heraldv1.Node {
	i, ok := slices.BinarySearchFunc(nodes, n.GetId(), func(m *heraldv1.Node, id string) int {
		return strings.Compare(m.GetId(), id)
	})
	if ok {
		nodes[i] = n
		return nodes
	}
	return slices.Insert(nodes, i, n)
}
