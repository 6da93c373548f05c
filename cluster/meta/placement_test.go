package meta_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
)

// Grid of the property tests.
var (
	gridPartitions  = []uint32{1, 4, 16, 64}
	gridReplication = []uint32{1, 3, 5}
)

const gridMaxNodes = 9

// maxRounds bounds how many Plan rounds a scenario may take to settle.
const maxRounds = 32

// nodeIDs returns n1..nN.
func nodeIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i+1)
	}
	return ids
}

func distinct(ids []string) bool {
	for i, id := range ids {
		if slices.Contains(ids[:i], id) {
			return false
		}
	}
	return true
}

// spread returns max-min of counts over ids.
func spread(counts map[string]int, ids []string) int {
	if len(ids) == 0 {
		return 0
	}
	lo, hi := counts[ids[0]], counts[ids[0]]
	for _, id := range ids[1:] {
		lo, hi = min(lo, counts[id]), max(hi, counts[id])
	}
	return hi - lo
}

// withState returns the ids of s's nodes in state st, sorted.
func withState(s *clusterv1.MetaState, st heraldv1.Node_State) []string {
	var ids []string
	for _, n := range s.GetNodes() {
		if n.GetState() == st {
			ids = append(ids, n.GetId())
		}
	}
	return ids
}

func TestInitialPlacement(t *testing.T) {
	for _, p := range gridPartitions {
		for _, r := range gridReplication {
			for n := 1; n <= gridMaxNodes; n++ {
				t.Run(fmt.Sprintf("P%d-R%d-N%d", p, r, n), func(t *testing.T) {
					ids := nodeIDs(n)
					got := meta.InitialPlacement(p, r, ids)
					if len(got) != int(p) {
						t.Fatalf("got %d placements, want %d", len(got), p)
					}
					want := min(int(r), n)
					for i, pl := range got {
						if pl.GetPartition() != uint32(i) {
							t.Errorf("placement %d: got partition %d, want %d", i, pl.GetPartition(), i)
						}
						if len(pl.GetReplicas()) != want {
							t.Errorf("partition %d: got %d replicas %v, want %d", i, len(pl.GetReplicas()), pl.GetReplicas(), want)
						}
						if !distinct(pl.GetReplicas()) {
							t.Errorf("partition %d: got replicas %v, want distinct", i, pl.GetReplicas())
						}
					}
					reps, leads := meta.Counts(&clusterv1.MetaState{Placements: got})
					if d := spread(reps, ids); d > 1 {
						t.Errorf("replica counts %v: got spread %d, want <= 1", reps, d)
					}
					if d := spread(leads, ids); d > 1 {
						t.Errorf("leader counts %v: got spread %d, want <= 1", leads, d)
					}
					rev := slices.Clone(ids)
					slices.Reverse(rev)
					again := meta.InitialPlacement(p, r, rev)
					for i := range got {
						if !proto.Equal(got[i], again[i]) {
							t.Fatalf("partition %d from reversed nodes: got %v, want %v (deterministic)", i, again[i], got[i])
						}
					}
				})
			}
		}
	}
}

// initState returns an initialised state over ids with InitialPlacement,
// built through Apply.
func initState(t testing.TB, partitions, replication uint32, ids []string) *clusterv1.MetaState {
	t.Helper()
	s, err := meta.Apply(nil, initCmd("c1", partitions, replication, ids))
	if err != nil {
		t.Fatalf("Apply(InitCluster %d×%d over %v): %v", partitions, replication, ids, err)
	}
	return s
}

// mustApply applies cmd to s and fails the test on an error.
func mustApply(t testing.TB, s *clusterv1.MetaState, cmd *clusterv1.MetaCommand) *clusterv1.MetaState {
	t.Helper()
	next, err := meta.Apply(s, cmd)
	if err != nil {
		t.Fatalf("Apply(%v): %v", cmd, err)
	}
	return next
}

// settle runs Plan and applies its placements (through Apply, as the
// metadata group would) until Plan returns nil, checking every round's
// invariants. settled, if not nil, decides per round and partition which
// partitions are settled; nil means all. It returns the final state and
// the number of rounds that changed something.
func settle(t testing.TB, s *clusterv1.MetaState, settled func(round int, p uint32) bool) (*clusterv1.MetaState, int) {
	t.Helper()
	for round := range maxRounds {
		isSettled := func(p uint32) bool { return settled == nil || settled(round, p) }
		plan := meta.Plan(s, isSettled)
		if plan == nil {
			if allSettled(s, isSettled) {
				return s, round
			}
			continue
		}
		checkPlan(t, round, s, plan, isSettled)
		next, err := meta.Apply(s, setPlacementCmd(plan...))
		if err != nil {
			t.Fatalf("round %d: Apply(plan %v): got %v, want nil", round, plan, err)
		}
		s = next
	}
	t.Fatalf("Plan still changing after %d rounds; last state %v", maxRounds, s)
	return nil, 0
}

func allSettled(s *clusterv1.MetaState, settled func(uint32) bool) bool {
	for _, pl := range s.GetPlacements() {
		if !settled(pl.GetPartition()) {
			return false
		}
	}
	return true
}

// checkPlan checks one round's plan against the state it was made from.
func checkPlan(t testing.TB, round int, s *clusterv1.MetaState, plan []*clusterv1.Placement, settled func(uint32) bool) {
	t.Helper()
	active := len(withState(s, heraldv1.Node_STATE_ACTIVE))
	state := make(map[string]heraldv1.Node_State)
	for _, n := range s.GetNodes() {
		state[n.GetId()] = n.GetState()
	}
	_, leads := meta.Counts(s)
	seen := make(map[uint32]bool)
	for _, pl := range plan {
		p := pl.GetPartition()
		if seen[p] {
			t.Fatalf("round %d: partition %d changed twice, want at most once", round, p)
		}
		seen[p] = true
		if !settled(p) {
			t.Fatalf("round %d: partition %d changed while not settled", round, p)
		}
		cur := s.GetPlacements()[p]
		if pl.GetExpectEpoch() != cur.GetEpoch() || pl.GetEpoch() != 0 {
			t.Fatalf("round %d: partition %d: got expect_epoch %d epoch %d, want %d and 0",
				round, p, pl.GetExpectEpoch(), pl.GetEpoch(), cur.GetEpoch())
		}
		old, reps := cur.GetReplicas(), pl.GetReplicas()
		if !distinct(reps) {
			t.Fatalf("round %d: partition %d: got replicas %v, want distinct", round, p, reps)
		}
		if want := min(len(old), int(s.GetReplication()), active); len(reps) < max(want, 1) {
			t.Fatalf("round %d: partition %d: %v -> %v: got %d replicas, want >= %d",
				round, p, old, reps, len(reps), max(want, 1))
		}
		added := slices.DeleteFunc(slices.Clone(reps), func(id string) bool { return slices.Contains(old, id) })
		dropped := slices.DeleteFunc(slices.Clone(old), func(id string) bool { return slices.Contains(reps, id) })
		if len(added) > 1 || len(dropped) > 1 {
			t.Fatalf("round %d: partition %d: %v -> %v: want one replica changed at most", round, p, old, reps)
		}
		if len(added)+len(dropped) == 0 && slices.Equal(old, reps) {
			t.Fatalf("round %d: partition %d: %v planned unchanged", round, p, old)
		}
		for _, id := range added {
			if state[id] != heraldv1.Node_STATE_ACTIVE {
				t.Fatalf("round %d: partition %d: %v -> %v adds %s in state %v, want ACTIVE",
					round, p, old, reps, id, state[id])
			}
		}
		for _, id := range dropped {
			if state[id] == heraldv1.Node_STATE_DRAINING && leads[id] > 0 {
				t.Fatalf("round %d: partition %d: %v -> %v moves a replica off draining %s while it is preferred leader of %d partitions",
					round, p, old, reps, id, leads[id])
			}
		}
	}
}

// checkSettled checks the fixed point of a scenario: no replica on a
// removed node, draining nodes lead nothing (and hold nothing when there
// are enough ACTIVE nodes), every partition has min(R, active) replicas or
// more, and ACTIVE nodes' replica counts are within one.
func checkSettled(t testing.TB, s *clusterv1.MetaState) {
	t.Helper()
	active := withState(s, heraldv1.Node_STATE_ACTIVE)
	if len(active) == 0 {
		return
	}
	reps, leads := meta.Counts(s)
	for _, id := range withState(s, heraldv1.Node_STATE_REMOVED) {
		if reps[id] != 0 {
			t.Errorf("settled: removed %s holds %d replicas, want 0", id, reps[id])
		}
	}
	for _, id := range withState(s, heraldv1.Node_STATE_DRAINING) {
		if leads[id] != 0 {
			t.Errorf("settled: draining %s leads %d partitions, want 0", id, leads[id])
		}
		if len(active) >= int(s.GetReplication()) && reps[id] != 0 {
			t.Errorf("settled: draining %s holds %d replicas, want 0", id, reps[id])
		}
	}
	want := min(int(s.GetReplication()), len(active))
	for _, pl := range s.GetPlacements() {
		if len(pl.GetReplicas()) < want {
			t.Errorf("settled: partition %d has replicas %v, want >= %d", pl.GetPartition(), pl.GetReplicas(), want)
		}
	}
	if d := spread(reps, active); d > 1 {
		t.Errorf("settled: replica counts %v over active %v: got spread %d, want <= 1", reps, active, d)
	}
}

// checkLeadersBalanced checks that ACTIVE nodes lead within one partition of
// each other.
func checkLeadersBalanced(t testing.TB, s *clusterv1.MetaState) {
	t.Helper()
	active := withState(s, heraldv1.Node_STATE_ACTIVE)
	_, leads := meta.Counts(s)
	if d := spread(leads, active); d > 1 {
		t.Errorf("settled: leader counts %v over active %v: got spread %d, want <= 1", leads, active, d)
	}
}

// TestPlanScenarios changes a balanced cluster (node added, draining,
// removed; leaderships piled on one node) and checks that repeated Plan
// rounds settle, keep the invariants on the way, and end balanced.
func TestPlanScenarios(t *testing.T) {
	worst := make(map[string]int)
	for _, p := range gridPartitions {
		for _, r := range gridReplication {
			for n := 1; n <= gridMaxNodes; n++ {
				base := initState(t, p, r, nodeIDs(n))
				name := fmt.Sprintf("P%d-R%d-N%d", p, r, n)
				if got := meta.Plan(base, nil); got != nil {
					t.Errorf("%s: Plan of the initial placement: got %v, want nil", name, got)
				}
				if n < gridMaxNodes {
					t.Run(name+"/add", func(t *testing.T) {
						id := fmt.Sprintf("n%d", n+1)
						s := mustApply(t, base, upsertCmd(id))
						s, rounds := settle(t, s, nil)
						worst["add"] = max(worst["add"], rounds)
						checkSettled(t, s)
						checkLeadersBalanced(t, s)
						if reps, _ := meta.Counts(s); reps[id] == 0 && p*r >= uint32(n+1) {
							t.Errorf("added %s holds nothing, want a share", id)
						}
					})
				}
				if n > 1 {
					victim := fmt.Sprintf("n%d", (n+1)/2)
					t.Run(name+"/drain", func(t *testing.T) {
						s := mustApply(t, base, setStateCmd(victim, heraldv1.Node_STATE_DRAINING))
						s, rounds := settle(t, s, nil)
						worst["drain"] = max(worst["drain"], rounds)
						checkSettled(t, s)
						checkLeadersBalanced(t, s)
					})
					t.Run(name+"/remove", func(t *testing.T) {
						s := mustApply(t, base, setStateCmd(victim, heraldv1.Node_STATE_REMOVED))
						s, rounds := settle(t, s, nil)
						worst["remove"] = max(worst["remove"], rounds)
						checkSettled(t, s)
						checkLeadersBalanced(t, s)
					})
				}
				t.Run(name+"/leaders", func(t *testing.T) {
					// Every partition prefers its smallest node id.
					s := proto.Clone(base).(*clusterv1.MetaState)
					for _, pl := range s.GetPlacements() {
						slices.Sort(pl.Replicas)
					}
					s, rounds := settle(t, s, nil)
					worst["leaders"] = max(worst["leaders"], rounds)
					checkSettled(t, s)
					checkLeadersBalanced(t, s)
				})
			}
		}
	}
	t.Logf("most rounds to settle: %v", worst)
}

// TestPlanDrainOrder checks, round by round, that a draining node first
// stops being preferred leader anywhere and only then loses replicas.
func TestPlanDrainOrder(t *testing.T) {
	s := initState(t, 16, 3, nodeIDs(5))
	s = mustApply(t, s, setStateCmd("n3", heraldv1.Node_STATE_DRAINING))
	var leadsSeen, repsSeen []int
	for range maxRounds {
		reps, leads := meta.Counts(s)
		leadsSeen, repsSeen = append(leadsSeen, leads["n3"]), append(repsSeen, reps["n3"])
		plan := meta.Plan(s, nil)
		if plan == nil {
			break
		}
		s = mustApply(t, s, setPlacementCmd(plan...))
	}
	t.Logf("n3 per round: leads %v, replicas %v", leadsSeen, repsSeen)
	if leadsSeen[0] == 0 || repsSeen[0] == 0 {
		t.Fatalf("n3 starts leading %d and holding %d, want both > 0", leadsSeen[0], repsSeen[0])
	}
	for i := 1; i < len(repsSeen); i++ {
		if repsSeen[i] < repsSeen[i-1] && leadsSeen[i-1] > 0 {
			t.Errorf("round %d: n3 lost replicas (%d -> %d) while leading %d, want leaderships first",
				i, repsSeen[i-1], repsSeen[i], leadsSeen[i-1])
		}
	}
	if last := len(repsSeen) - 1; leadsSeen[last] != 0 || repsSeen[last] != 0 {
		t.Errorf("settled: n3 leads %d and holds %d, want 0 and 0", leadsSeen[last], repsSeen[last])
	}
}

// TestPlanSettledOnly checks that partitions that are not settled are never
// changed, and that the rest settle once they are.
func TestPlanSettledOnly(t *testing.T) {
	s := initState(t, 16, 3, nodeIDs(4))
	s = mustApply(t, s, upsertCmd("n5"))
	s = mustApply(t, s, setStateCmd("n1", heraldv1.Node_STATE_REMOVED))
	busy := func(p uint32) bool { return p%3 == 0 }
	plan := meta.Plan(s, func(p uint32) bool { return !busy(p) })
	if plan == nil {
		t.Fatal("Plan: got nil, want changes")
	}
	for _, pl := range plan {
		if busy(pl.GetPartition()) {
			t.Errorf("Plan changed unsettled partition %d: %v", pl.GetPartition(), pl)
		}
	}
	if got := meta.Plan(s, func(uint32) bool { return false }); got != nil {
		t.Errorf("Plan with nothing settled: got %v, want nil", got)
	}
	// Unsettled for the first rounds, then settled: still converges.
	s, rounds := settle(t, s, func(round int, p uint32) bool { return round >= 3 || !busy(p) })
	checkSettled(t, s)
	t.Logf("settled after %d rounds", rounds)
}

func TestCounts(t *testing.T) {
	s := initState(t, 4, 2, nodeIDs(3))
	s = mustApply(t, s, upsertCmd("n4"))
	reps, leads := meta.Counts(s)
	wantReps := map[string]int{"n1": 3, "n2": 3, "n3": 2, "n4": 0}
	wantLeads := map[string]int{"n1": 2, "n2": 1, "n3": 1, "n4": 0}
	for id := range wantReps {
		if reps[id] != wantReps[id] || leads[id] != wantLeads[id] {
			t.Errorf("Counts[%s]: got %d replicas, %d leads; want %d, %d (placements %v)",
				id, reps[id], leads[id], wantReps[id], wantLeads[id], s.GetPlacements())
		}
	}
}

// FuzzPlan decodes a small cluster in any state (nodes active, draining or
// removed; partitions with any distinct replicas; some partitions not
// settled at first) and checks that Plan keeps its invariants every round
// and settles.
func FuzzPlan(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{15, 2, 8, 0, 0, 2, 0, 3, 1, 0, 2})
	f.Add([]byte{3, 0, 2, 2, 2, 1, 2, 0, 1, 0, 1})
	f.Add([]byte{7, 4, 8, 3, 3, 3, 0, 2, 2, 1, 0, 9, 9, 9, 200, 17, 4, 4, 4})
	f.Add([]byte{63, 2, 5, 1, 0, 0, 0, 0, 0, 255, 255, 255, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{1, 1, 1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, settledFirst := decodeCluster(data)
		s, _ = settle(t, s, func(round int, p uint32) bool {
			return round > 0 || settledFirst[p]
		})
		checkSettled(t, s)
	})
}

// decodeCluster builds a cluster from fuzz bytes: up to 16 partitions,
// replication 1-5, 1-9 nodes in any state, and for each partition 1 to
// min(R, nodes) distinct replicas. Missing bytes read as zero.
func decodeCluster(data []byte) (*clusterv1.MetaState, []bool) {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	partitions := 1 + next()%16
	replication := 1 + next()%5
	n := 1 + next()%9
	s := &clusterv1.MetaState{ClusterId: "fuzz", Partitions: uint32(partitions), Replication: uint32(replication)}
	states := []heraldv1.Node_State{heraldv1.Node_STATE_ACTIVE, heraldv1.Node_STATE_ACTIVE,
		heraldv1.Node_STATE_DRAINING, heraldv1.Node_STATE_REMOVED}
	ids := nodeIDs(n)
	for _, id := range ids {
		s.Nodes = append(s.Nodes, &heraldv1.Node{Id: id, State: states[next()%len(states)]})
	}
	settled := make([]bool, partitions)
	for p := range partitions {
		k := 1 + next()%min(replication, n)
		pool := slices.Clone(ids)
		var reps []string
		for range k {
			i := next() % len(pool)
			reps = append(reps, pool[i])
			pool = slices.Delete(pool, i, i+1)
		}
		s.Placements = append(s.Placements, &clusterv1.Placement{Partition: uint32(p), Replicas: reps, Epoch: 1})
		settled[p] = next()%4 != 0
	}
	return s, settled
}
