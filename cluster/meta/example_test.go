package meta_test

import (
	"fmt"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
)

func ExampleInitialPlacement() {
	for _, p := range meta.InitialPlacement(4, 3, []string{"n1", "n2", "n3", "n4"}) {
		fmt.Println(p.GetPartition(), p.GetReplicas())
	}
	// Output:
	// 0 [n1 n2 n3]
	// 1 [n2 n3 n4]
	// 2 [n3 n4 n1]
	// 3 [n4 n1 n2]
}

// A draining node first hands its preferred leaderships over, then its
// replicas move, one replica per partition per step.
func ExamplePlan() {
	cmd := &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_InitCluster{InitCluster: &clusterv1.InitCluster{
		ClusterId: "c1", Partitions: 2, Replication: 2,
		Nodes:      []*heraldv1.Node{{Id: "n1"}, {Id: "n2"}, {Id: "n3"}},
		Placements: meta.InitialPlacement(2, 2, []string{"n1", "n2", "n3"}),
	}}}
	s, _ := meta.Apply(nil, cmd)
	s, _ = meta.Apply(s, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetNodeState{
		SetNodeState: &clusterv1.SetNodeState{NodeId: "n1", State: heraldv1.Node_STATE_DRAINING}}})
	for step := 1; ; step++ {
		plan := meta.Plan(s, func(uint32) bool { return true })
		if plan == nil {
			break
		}
		for _, p := range plan {
			fmt.Println("step", step, "partition", p.GetPartition(), s.GetPlacements()[p.GetPartition()].GetReplicas(), "->", p.GetReplicas())
		}
		s, _ = meta.Apply(s, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
			SetPlacement: &clusterv1.SetPlacement{Placements: plan}}})
	}
	// Output:
	// step 1 partition 0 [n1 n3] -> [n3 n1]
	// step 2 partition 0 [n3 n1] -> [n3 n2]
	// step 2 partition 1 [n2 n1] -> [n2 n3]
}
