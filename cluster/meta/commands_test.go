package meta_test

import (
	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
)

// Command builders shared by the tests.

// initCmd initialises cluster id with InitialPlacement over ids, every
// node active.
func initCmd(id string, partitions, replication uint32, ids []string) *clusterv1.MetaCommand {
	var nodes []*heraldv1.Node
	for _, n := range ids {
		nodes = append(nodes, &heraldv1.Node{Id: n, HttpAddr: n + ":http", RaftAddr: n + ":raft"})
	}
	return initNodesCmd(id, partitions, replication, nodes)
}

// initNodesCmd initialises cluster id with the given nodes and
// InitialPlacement over those not removed.
func initNodesCmd(id string, partitions, replication uint32, nodes []*heraldv1.Node) *clusterv1.MetaCommand {
	var ids []string
	for _, n := range nodes {
		if n.GetState() != heraldv1.Node_STATE_REMOVED {
			ids = append(ids, n.GetId())
		}
	}
	return &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_InitCluster{InitCluster: &clusterv1.InitCluster{
		ClusterId:   id,
		Partitions:  partitions,
		Replication: replication,
		Nodes:       nodes,
		Placements:  meta.InitialPlacement(partitions, replication, ids),
	}}}
}

func upsertCmd(id string) *clusterv1.MetaCommand {
	return upsertNodeCmd(&heraldv1.Node{Id: id, HttpAddr: id + ":http", RaftAddr: id + ":raft"})
}

func upsertNodeCmd(n *heraldv1.Node) *clusterv1.MetaCommand {
	return &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_UpsertNode{UpsertNode: &clusterv1.UpsertNode{Node: n}}}
}

func setStateCmd(id string, st heraldv1.Node_State) *clusterv1.MetaCommand {
	return &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetNodeState{
		SetNodeState: &clusterv1.SetNodeState{NodeId: id, State: st}}}
}

func setPlacementCmd(ps ...*clusterv1.Placement) *clusterv1.MetaCommand {
	return &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
		SetPlacement: &clusterv1.SetPlacement{Placements: ps}}}
}

// place is a SetPlacement entry.
func place(partition uint32, expect uint64, replicas ...string) *clusterv1.Placement {
	return &clusterv1.Placement{Partition: partition, Replicas: replicas, ExpectEpoch: expect}
}
