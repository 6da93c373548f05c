package meta_test

import (
	"testing"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
)

// TestPlanRoles: placement never gives a replica to a node without the
// channel role, and moves every replica and leadership off a node that
// comes back without it, as a drain would.
func TestPlanRoles(t *testing.T) {
	gatewayOnly := func(id string) *heraldv1.Node {
		return &heraldv1.Node{Id: id, HttpAddr: id + ":http", RaftAddr: id + ":raft",
			Roles: []string{meta.RoleEdge, meta.RoleGateway}}
	}
	s := initState(t, 16, 3, nodeIDs(4))
	s = mustApply(t, s, upsertNodeCmd(gatewayOnly("n5")))
	if plan := meta.Plan(s, nil); plan != nil {
		t.Fatalf("Plan after a gateway-only node joined: %v, want nothing to move", plan)
	}

	// n4 restarts as a gateway-only node: its replicas move to n1-n3.
	s = mustApply(t, s, upsertNodeCmd(gatewayOnly("n4")))
	if len(meta.Plan(s, nil)) == 0 {
		t.Fatal("Plan after n4 lost the channel role: nothing to move, want its replicas moved off")
	}
	s, rounds := settle(t, s, nil)
	reps, leaders := meta.Counts(s)
	for _, id := range []string{"n4", "n5"} {
		if reps[id] != 0 || leaders[id] != 0 {
			t.Errorf("%s, without the channel role: %d replicas, %d preferred leaderships after %d rounds; want none",
				id, reps[id], leaders[id], rounds)
		}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if reps[id] != 16 {
			t.Errorf("%s: %d replicas, want 16 (every partition, replication 3 over 3 channel nodes)", id, reps[id])
		}
	}
	for _, pl := range s.GetPlacements() {
		if len(pl.GetReplicas()) != 3 {
			t.Errorf("partition %d: replicas %v, want 3", pl.GetPartition(), pl.GetReplicas())
		}
	}
}

// TestHoldsReplicas: the channel role, or no roles at all (a node
// recorded before roles existed), lets placement use a node.
func TestHoldsReplicas(t *testing.T) {
	for _, c := range []struct {
		roles []string
		want  bool
	}{
		{nil, true},
		{meta.AllRoles, true},
		{[]string{meta.RoleChannel}, true},
		{[]string{meta.RoleEdge, meta.RoleGateway}, false},
		{[]string{meta.RoleAdmin}, false},
	} {
		if got := meta.HoldsReplicas(&heraldv1.Node{Id: "n1", Roles: c.roles}); got != c.want {
			t.Errorf("HoldsReplicas(roles %v) = %v, want %v", c.roles, got, c.want)
		}
	}
}
