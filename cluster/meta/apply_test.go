package meta_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/storage"
)

// baseNodes are the nodes of the rejection tests' cluster: n4 is removed.
func baseNodes() []*heraldv1.Node {
	return []*heraldv1.Node{
		{Id: "n1", RaftAddr: "n1:raft", MetaVoter: true},
		{Id: "n2", RaftAddr: "n2:raft", MetaVoter: true},
		{Id: "n3", RaftAddr: "n3:raft", MetaVoter: true},
		{Id: "n4", RaftAddr: "n4:raft", State: heraldv1.Node_STATE_REMOVED},
	}
}

// baseInit initialises the rejection tests' cluster: 4 partitions × 3
// replicas on n1..n3, every partition at epoch 1.
func baseInit() *clusterv1.MetaCommand { return initNodesCmd("c1", 4, 3, baseNodes()) }

// rejection is a command the state machine must reject, with the kind of
// error and, if set, a phrase of its message.
type rejection struct {
	name  string
	cmd   *clusterv1.MetaCommand
	kind  error
	words string
}

// rejectedBeforeInit are rejected by an empty state.
var rejectedBeforeInit = []rejection{
	{"set node state", setStateCmd("n1", heraldv1.Node_STATE_DRAINING), storage.ErrFailedPrecondition, "not initialised"},
	{"set placement", setPlacementCmd(place(0, 1, "n1")), storage.ErrFailedPrecondition, "not initialised"},
	{"init without id", initCmd("", 4, 3, []string{"n1"}), storage.ErrInvalidArgument, "cluster_id"},
	{"init without partitions", initCmd("c1", 0, 3, []string{"n1"}), storage.ErrInvalidArgument, "partitions"},
	{"init without replication", initCmd("c1", 4, 0, []string{"n1"}), storage.ErrInvalidArgument, "replication"},
	{"init with duplicate node", initCmd("c1", 4, 3, []string{"n1", "n1"}), storage.ErrInvalidArgument, "twice"},
	{"init with unknown node", func() *clusterv1.MetaCommand {
		c := initCmd("c1", 2, 1, []string{"n1"})
		c.GetInitCluster().Placements[1].Replicas = []string{"n9"}
		return c
	}(), storage.ErrNotFound, "n9"},
	{"init with missing placement", func() *clusterv1.MetaCommand {
		c := initCmd("c1", 2, 1, []string{"n1"})
		c.GetInitCluster().Placements = c.GetInitCluster().Placements[:1]
		return c
	}(), storage.ErrInvalidArgument, "placements"},
	{"upsert without id", upsertNodeCmd(&heraldv1.Node{HttpAddr: "x"}), storage.ErrInvalidArgument, "node id"},
	{"empty command", &clusterv1.MetaCommand{}, storage.ErrInvalidArgument, ""},
}

// rejectedAfterInit are rejected by the state baseInit makes.
var rejectedAfterInit = []rejection{
	{"init twice", baseInit(), storage.ErrFailedPrecondition, "already initialised"},
	{"state of unknown node", setStateCmd("n9", heraldv1.Node_STATE_DRAINING), storage.ErrNotFound, "n9"},
	{"unspecified state", setStateCmd("n1", heraldv1.Node_STATE_UNSPECIFIED), storage.ErrInvalidArgument, "state"},
	{"placement on unknown node", setPlacementCmd(place(0, 1, "n1", "n2", "n9")), storage.ErrNotFound, "n9"},
	{"placement with stale epoch", setPlacementCmd(place(0, 0, "n1", "n2")), storage.ErrFailedPrecondition, "placement changed"},
	{"placement one stale of two", setPlacementCmd(place(0, 1, "n2", "n1", "n3"), place(1, 7, "n3", "n1", "n2")),
		storage.ErrFailedPrecondition, "placement changed"},
	{"placement with duplicate node", setPlacementCmd(place(0, 1, "n1", "n1", "n2")), storage.ErrInvalidArgument, "twice"},
	{"placement on removed node", setPlacementCmd(place(0, 1, "n1", "n2", "n4")), storage.ErrInvalidArgument, "removed"},
	{"placement of partition out of range", setPlacementCmd(place(4, 1, "n1")), storage.ErrInvalidArgument, "out of range"},
	{"placement listed twice", setPlacementCmd(place(0, 1, "n1"), place(0, 1, "n2")), storage.ErrInvalidArgument, "twice"},
	{"placement without replicas", setPlacementCmd(place(0, 1)), storage.ErrInvalidArgument, "no replicas"},
	{"set placement without placements", setPlacementCmd(), storage.ErrInvalidArgument, "no placements"},
}

// checkRejected checks err against r.
func checkRejected(t *testing.T, r rejection, err error) {
	t.Helper()
	var de *storage.Error
	if !errors.As(err, &de) || !errors.Is(err, r.kind) {
		t.Fatalf("%s: got error %v (%T), want a *storage.Error of kind %v", r.name, err, err, r.kind)
	}
	if !strings.Contains(de.Msg, r.words) {
		t.Errorf("%s: got message %q, want it to contain %q", r.name, de.Msg, r.words)
	}
}

func TestApplyRejects(t *testing.T) {
	check := func(t *testing.T, s *clusterv1.MetaState, rs []rejection) {
		for _, r := range rs {
			t.Run(r.name, func(t *testing.T) {
				before := proto.Clone(s)
				got, err := meta.Apply(s, r.cmd)
				checkRejected(t, r, err)
				if !proto.Equal(s, before) {
					t.Errorf("%s: Apply modified its input: got %v, want %v", r.name, s, before)
				}
				if got != s {
					t.Errorf("%s: got state %v, want the input state", r.name, got)
				}
			})
		}
	}
	empty := &clusterv1.MetaState{}
	t.Run("before init", func(t *testing.T) { check(t, empty, rejectedBeforeInit) })
	s := mustApply(t, empty, baseInit())
	t.Run("after init", func(t *testing.T) { check(t, s, rejectedAfterInit) })
}

func TestApply(t *testing.T) {
	s := mustApply(t, nil, upsertNodeCmd(&heraldv1.Node{Id: "n5", RaftAddr: "n5:raft", State: heraldv1.Node_STATE_DRAINING,
		Replicas: 7, Leaders: 3, Reachable: true}))
	if got := s.GetNodes()[0]; got.GetState() != heraldv1.Node_STATE_ACTIVE || got.GetReplicas() != 0 ||
		got.GetLeaders() != 0 || got.GetReachable() {
		t.Errorf("upserted node before init: got %v, want ACTIVE and no counts", got)
	}
	if s.GetEpoch() != 1 {
		t.Errorf("epoch after one change: got %d, want 1", s.GetEpoch())
	}

	s = mustApply(t, s, baseInit())
	if s.GetClusterId() != "c1" || s.GetPartitions() != 4 || s.GetReplication() != 3 || s.GetEpoch() != 2 {
		t.Errorf("after init: got cluster %q, %d partitions, replication %d, epoch %d; want c1, 4, 3, 2",
			s.GetClusterId(), s.GetPartitions(), s.GetReplication(), s.GetEpoch())
	}
	var ids []string
	for _, n := range s.GetNodes() {
		ids = append(ids, n.GetId())
	}
	if want := []string{"n1", "n2", "n3", "n4", "n5"}; !slices.Equal(ids, want) {
		t.Errorf("nodes after init: got %v, want %v (sorted, upserted one kept)", ids, want)
	}
	for _, p := range s.GetPlacements() {
		if p.GetEpoch() != 1 || len(p.GetReplicas()) != 3 {
			t.Errorf("placement after init: got %v, want epoch 1 and 3 replicas", p)
		}
	}

	// Upsert keeps state and meta_voter, updates the rest.
	s = mustApply(t, s, setStateCmd("n2", heraldv1.Node_STATE_DRAINING))
	s = mustApply(t, s, upsertNodeCmd(&heraldv1.Node{Id: "n2", HttpAddr: "new:http", RaftAddr: "new:raft",
		Roles: []string{"edge"}, Region: "eu", State: heraldv1.Node_STATE_ACTIVE}))
	n2 := s.GetNodes()[1]
	if n2.GetState() != heraldv1.Node_STATE_DRAINING || !n2.GetMetaVoter() || n2.GetHttpAddr() != "new:http" ||
		n2.GetRegion() != "eu" || !slices.Equal(n2.GetRoles(), []string{"edge"}) {
		t.Errorf("n2 after upsert: got %v, want DRAINING, meta voter, new addresses, roles and region", n2)
	}

	// A command that changes nothing returns the same state.
	epoch := s.GetEpoch()
	same := mustApply(t, s, upsertNodeCmd(proto.Clone(n2).(*heraldv1.Node)))
	if same != s {
		t.Errorf("repeated upsert: got a new state at epoch %d, want the same state at %d", same.GetEpoch(), epoch)
	}
	same = mustApply(t, s, setStateCmd("n2", heraldv1.Node_STATE_DRAINING))
	if same != s {
		t.Errorf("repeated set state: got a new state at epoch %d, want the same state at %d", same.GetEpoch(), epoch)
	}

	// SetPlacement: all or nothing, epochs bumped, removed node kept only
	// where it already is.
	keep := slices.Clone(s.GetPlacements()[1].GetReplicas())
	s = mustApply(t, s, setPlacementCmd(place(0, 1, "n5", "n2", "n3"), place(1, 1, keep...)))
	p0, p1 := s.GetPlacements()[0], s.GetPlacements()[1]
	if !slices.Equal(p0.GetReplicas(), []string{"n5", "n2", "n3"}) || p0.GetEpoch() != 2 || p0.GetExpectEpoch() != 0 {
		t.Errorf("partition 0: got %v, want [n5 n2 n3] at epoch 2", p0)
	}
	if p1.GetEpoch() != 1 {
		t.Errorf("partition 1 (same replicas): got epoch %d, want 1", p1.GetEpoch())
	}
	if s.GetEpoch() != epoch+1 {
		t.Errorf("epoch after placement: got %d, want %d", s.GetEpoch(), epoch+1)
	}
	s = mustApply(t, s, setStateCmd("n3", heraldv1.Node_STATE_REMOVED))
	s = mustApply(t, s, setPlacementCmd(place(0, 2, "n1", "n2", "n3")))
	if got := s.GetPlacements()[0]; !slices.Equal(got.GetReplicas(), []string{"n1", "n2", "n3"}) {
		t.Errorf("partition 0 keeping removed n3: got %v, want [n1 n2 n3]", got)
	}
}

// TestApplyDeterministic replays the same commands twice and compares the
// encoded states byte for byte.
func TestApplyDeterministic(t *testing.T) {
	cmds := []*clusterv1.MetaCommand{
		upsertCmd("n9"), upsertCmd("n0"), baseInit(), upsertCmd("n5"),
		setStateCmd("n1", heraldv1.Node_STATE_DRAINING),
	}
	run := func() []byte {
		var s *clusterv1.MetaState
		for _, c := range cmds {
			s, _ = meta.Apply(s, c)
		}
		for {
			plan := meta.Plan(s, nil)
			if plan == nil {
				break
			}
			s = mustApply(t, s, setPlacementCmd(plan...))
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		return b
	}
	if a, b := run(), run(); !slices.Equal(a, b) {
		t.Errorf("two replays: got different states (%d and %d bytes), want identical", len(a), len(b))
	}
}

// TestUpsertKeepsAMembersDataDirectory upserts a member with another
// incarnation than its own: refused while it is a member, accepted once it
// is removed (it rejoins with a new data directory), and then a late
// registration of its old directory, which was in flight when it was
// removed, is refused too instead of taking the member's id back.
func TestUpsertKeepsAMembersDataDirectory(t *testing.T) {
	s := mustApply(t, &clusterv1.MetaState{}, baseInit())
	node := func(inc string) *heraldv1.Node {
		return &heraldv1.Node{Id: "n1", RaftAddr: "n1:raft", HttpAddr: "n1:http", Incarnation: inc}
	}
	state := func(s *clusterv1.MetaState) (heraldv1.Node_State, string) {
		for _, n := range s.GetNodes() {
			if n.GetId() == "n1" {
				return n.GetState(), n.GetIncarnation()
			}
		}
		t.Fatal("n1 not in the state")
		return 0, ""
	}
	s = mustApply(t, s, upsertNodeCmd(node("old")))
	_, err := meta.Apply(s, upsertNodeCmd(node("new")))
	checkRejected(t, rejection{"member with another directory", nil, storage.ErrFailedPrecondition, "another data directory"}, err)

	s = mustApply(t, s, setStateCmd("n1", heraldv1.Node_STATE_REMOVED))
	s = mustApply(t, s, upsertNodeCmd(node("new")))
	if st, inc := state(s); st != heraldv1.Node_STATE_ACTIVE || inc != "new" {
		t.Fatalf("removed n1 upserted with a new directory: got %v %q, want ACTIVE \"new\"", st, inc)
	}
	got, err := meta.Apply(s, upsertNodeCmd(node("old")))
	checkRejected(t, rejection{"late registration of the old directory", nil, storage.ErrFailedPrecondition, "another data directory"}, err)
	if st, inc := state(got); st != heraldv1.Node_STATE_ACTIVE || inc != "new" {
		t.Errorf("after the late registration: got %v %q, want ACTIVE \"new\"", st, inc)
	}
}
