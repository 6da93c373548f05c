package meta_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/storage"
	"github.com/heraldhq/herald/storage/raftstore"
)

// suffrage returns id's suffrage in servers, and whether it is there.
func suffrage(servers []raft.Server, id string) (raft.ServerSuffrage, bool) {
	for _, s := range servers {
		if string(s.ID) == id {
			return s.Suffrage, true
		}
	}
	return 0, false
}

// checkNotLeader checks that err is a *NotLeaderError naming leader.
func checkNotLeader(t *testing.T, what string, err error, leader *replica) {
	t.Helper()
	nle, ok := errors.AsType[*meta.NotLeaderError](err)
	if !ok || !errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("%s: got error %v, want a *NotLeaderError", what, err)
	}
	if nle.LeaderID != leader.id || nle.LeaderAddr != leader.addr {
		t.Errorf("%s: got leader %q at %q, want %q at %q", what, nle.LeaderID, nle.LeaderAddr, leader.id, leader.addr)
	}
}

// TestReplicate bootstraps three voters, initialises the cluster on the
// leader and checks that every replica, and a non-voter added later, gets
// the same state; followers refuse proposals with the leader's name.
func TestReplicate(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.waitLeader()
	var watches []<-chan struct{}
	for _, r := range c.running() {
		if r.g.Ready() {
			t.Errorf("%s: Ready before InitCluster: got true, want false", r.id)
		}
		s, ch := r.g.Watch()
		if s == nil || s.GetEpoch() != 0 || s.GetClusterId() != "" {
			t.Errorf("%s: state before InitCluster: got %v, want empty", r.id, s)
		}
		watches = append(watches, ch)
	}

	// Bootstrap is repeatable with the same servers, in any order; another
	// configuration is a conflict.
	rev := slices.Clone(c.servers)
	slices.Reverse(rev)
	for _, r := range c.running() {
		if err := r.g.Bootstrap(rev); err != nil {
			t.Errorf("%s: Bootstrap again: got %v, want nil", r.id, err)
		}
		if has, err := r.g.HasState(); !has || err != nil {
			t.Errorf("%s: HasState after Bootstrap: got %v, %v; want true, nil", r.id, has, err)
		}
	}
	if err := leader.g.Bootstrap(c.servers[:1]); !errors.Is(err, meta.ErrBootstrapConflict) {
		t.Errorf("Bootstrap with one server: got %v, want ErrBootstrapConflict", err)
	}

	state := propose(t, leader.g, initCmd("c1", 4, 3, ids(c.replicas)))
	if state.GetEpoch() != 1 || state.GetClusterId() != "c1" || len(state.GetPlacements()) != 4 {
		t.Fatalf("Propose(InitCluster): got %v, want cluster c1 at epoch 1 with 4 placements", state)
	}
	c.waitSame(state)
	for i, ch := range watches {
		if !closed(ch) {
			t.Errorf("%s: Changed channel after InitCluster: got open, want closed", c.replicas[i].id)
		}
	}
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		for _, r := range c.running() {
			if !r.g.Ready() {
				return errors.New(r.id + " not ready")
			}
		}
		return nil
	})

	f := c.followers(leader)[0]
	_, err := tryPropose(t, f.g, upsertCmd("n4"))
	checkNotLeader(t, "Propose on follower "+f.id, err, leader)
	err = f.g.AddNonvoter(t.Context(), "n4", "127.0.0.1:1")
	checkNotLeader(t, "AddNonvoter on follower "+f.id, err, leader)
	if got := f.g.State(); !proto.Equal(got, state) {
		t.Errorf("%s after refused proposals: got %v, want %v", f.id, got, state)
	}

	// A non-voter gets the state and knows the leader.
	n4 := c.addReplica("n4")
	if has, err := n4.g.HasState(); has || err != nil {
		t.Errorf("n4: HasState before joining: got %v, %v; want false, nil", has, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	if err := leader.g.AddNonvoter(ctx, "n4", n4.addr); err != nil {
		t.Fatalf("AddNonvoter(n4): %v", err)
	}
	state = propose(t, leader.g, upsertCmd("n4"))
	c.waitSame(state)
	servers, err := leader.g.Configuration()
	if err != nil {
		t.Fatalf("Configuration: %v", err)
	}
	if s, ok := suffrage(servers, "n4"); !ok || s != raft.Nonvoter {
		t.Errorf("n4 in configuration %v: got %v (present %v), want Nonvoter", servers, s, ok)
	}
	if has, err := n4.g.HasState(); !has || err != nil {
		t.Errorf("n4: HasState after joining: got %v, %v; want true, nil", has, err)
	}
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if !n4.g.Ready() {
			return errors.New("n4 not ready")
		}
		return nil
	})
	_, err = tryPropose(t, n4.g, upsertCmd("n5"))
	checkNotLeader(t, "Propose on non-voter n4", err, leader)

	// Promote it, then remove it.
	if err := leader.g.AddVoter(ctx, "n4", n4.addr); err != nil {
		t.Fatalf("AddVoter(n4): %v", err)
	}
	servers, _ = leader.g.Configuration()
	if s, _ := suffrage(servers, "n4"); s != raft.Voter {
		t.Errorf("n4 after AddVoter: got %v, want Voter", s)
	}
	if err := leader.g.RemoveServer(ctx, "n4"); err != nil {
		t.Fatalf("RemoveServer(n4): %v", err)
	}
	servers, _ = leader.g.Configuration()
	if _, ok := suffrage(servers, "n4"); ok || len(servers) != 3 {
		t.Errorf("configuration after RemoveServer(n4): got %v, want n1..n3", servers)
	}
}

// TestProposeRejected runs every state machine rule through Raft: the
// error is the *storage.Error Apply gives, and the state is unchanged on
// the replica.
func TestProposeRejected(t *testing.T) {
	c := newCluster(t, 1)
	g := c.waitLeader().g
	check := func(rs []rejection) {
		for _, r := range rs {
			before := g.State()
			_, err := tryPropose(t, g, r.cmd)
			checkRejected(t, r, err)
			if after := g.State(); after != before || after.GetEpoch() != before.GetEpoch() {
				t.Errorf("%s: state changed from epoch %d to %d, want unchanged", r.name, before.GetEpoch(), after.GetEpoch())
			}
		}
	}
	check(rejectedBeforeInit)
	state := propose(t, g, baseInit())
	check(rejectedAfterInit)
	if got := g.State(); got != state {
		t.Errorf("state after rejections: got epoch %d, want %d", got.GetEpoch(), state.GetEpoch())
	}

	// A compare-and-set that matches applies, and the next one that
	// expects the old epoch is refused.
	cur := state.GetPlacements()[0]
	next := slices.Clone(cur.GetReplicas())
	next[0], next[1] = next[1], next[0]
	s := propose(t, g, setPlacementCmd(place(0, cur.GetEpoch(), next...)))
	if got := s.GetPlacements()[0]; got.GetEpoch() != cur.GetEpoch()+1 || !slices.Equal(got.GetReplicas(), next) {
		t.Errorf("partition 0 after SetPlacement: got %v, want %v at epoch %d", got, next, cur.GetEpoch()+1)
	}
	_, err := tryPropose(t, g, setPlacementCmd(place(0, cur.GetEpoch(), cur.GetReplicas()...)))
	if !errors.Is(err, storage.ErrFailedPrecondition) || !strings.Contains(err.Error(), "placement changed") {
		t.Errorf("second SetPlacement on epoch %d: got %v, want failed precondition \"placement changed\"", cur.GetEpoch(), err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := g.Propose(ctx, upsertCmd("n9")); !errors.Is(err, meta.ErrNotApplied) {
		t.Errorf("Propose with a done ctx: got %v, want ErrNotApplied", err)
	}
}

// TestRestart restarts a follower from its directory, first with the log
// only, then after a snapshot, and finally restarts the whole group.
func TestRestart(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.waitLeader()
	state := propose(t, leader.g, initCmd("c1", 4, 3, ids(c.replicas)))
	c.waitSame(state)
	f := c.followers(leader)[0]

	t.Run("from log", func(t *testing.T) {
		f.stop()
		state = propose(t, leader.g, upsertCmd("n4"))
		f.start()
		c.waitSame(state)
		if n := f.logs.Count(msgRestored); n != 0 {
			t.Errorf("%s: got %d snapshot restores, want 0 (the log suffices)", f.id, n)
		}
	})

	t.Run("from snapshot and log", func(t *testing.T) {
		if err := meta.ForceSnapshot(f.g); err != nil {
			t.Fatalf("%s: snapshot: %v", f.id, err)
		}
		snap := f.g.State()
		state = propose(t, leader.g, upsertCmd("n5"))
		c.waitSame(state)
		f.stop()
		state = propose(t, leader.g, setStateCmd("n5", heraldv1.Node_STATE_DRAINING))
		f.start()
		if n := f.logs.Count(msgRestored); n != 1 {
			t.Errorf("%s: got %d snapshot restores, want 1", f.id, n)
		}
		if got := f.g.State().GetEpoch(); got < snap.GetEpoch() {
			t.Errorf("%s right after start: got epoch %d, want at least the snapshot's %d", f.id, got, snap.GetEpoch())
		}
		c.waitSame(state)
	})

	t.Run("whole group", func(t *testing.T) {
		for _, r := range c.replicas {
			r.stop()
		}
		for _, r := range c.replicas {
			r.start()
			if has, err := r.g.HasState(); !has || err != nil {
				t.Fatalf("%s: HasState after restart: got %v, %v; want true, nil", r.id, has, err)
			}
		}
		leader := c.waitLeader()
		c.waitSame(state)
		state = propose(t, leader.g, upsertCmd("n6"))
		c.waitSame(state)
	})
}

// TestFailover stops the leader, handing leadership over (Close) or not
// (as a crash would): another replica leads and takes proposals, and the
// old one catches up when it comes back.
func TestFailover(t *testing.T) {
	for _, tt := range []struct {
		name string
		stop func(*replica)
	}{
		{"close", func(r *replica) { r.stop() }},
		{"crash", func(r *replica) {
			if err := r.g.Kill(); err != nil {
				t.Errorf("%s: Kill: %v", r.id, err)
			}
			r.stop() // Close again (a no-op now) and free the port
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 3)
			old := c.waitLeader()
			state := propose(t, old.g, initCmd("c1", 4, 3, ids(c.replicas)))
			c.waitSame(state)

			start := time.Now()
			tt.stop(old)
			leader := c.waitLeader()
			if leader == old {
				t.Fatalf("leader after stopping %s: got %s, want another", old.id, leader.id)
			}
			state = propose(t, leader.g, setStateCmd(old.id, heraldv1.Node_STATE_DRAINING))
			t.Logf("first proposal on the new leader %s committed %v after stopping %s",
				leader.id, time.Since(start).Round(time.Millisecond), old.id)
			c.waitSame(state)

			old.start()
			c.waitSame(state)
		})
	}
}

// TestPartialBootstrap starts a replica whose stores hold only a term, as a
// crash in the middle of BootstrapCluster leaves them: it reports no
// state, bootstraps again and leads.
func TestPartialBootstrap(t *testing.T) {
	c := &cluster{t: t, dir: t.TempDir()}
	r := c.newReplica("n1")
	stores, err := raftstore.Open(raftstore.Config{Dir: r.cfg.Dir})
	if err != nil {
		t.Fatalf("raftstore.Open: %v", err)
	}
	if err := stores.Stable.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatalf("set term: %v", err)
	}
	if err := stores.Close(); err != nil {
		t.Fatalf("close stores: %v", err)
	}
	r.start()
	t.Cleanup(r.stop)
	if has, err := r.g.HasState(); has || err != nil {
		t.Fatalf("HasState after a partial bootstrap: got %v, %v; want false, nil", has, err)
	}
	if n := r.logs.Count(msgReset); n != 1 {
		t.Errorf("warnings about the cleared term: got %d, want 1", n)
	}
	servers := []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: raft.ServerAddress(r.addr)}}
	if err := r.g.Bootstrap(servers); err != nil {
		t.Fatalf("Bootstrap: got %v, want nil", err)
	}
	if got := c.waitLeader(); got != r {
		t.Fatalf("leader: got %s, want n1", got.id)
	}
	propose(t, r.g, baseInit())
}

// TestClose checks that Close is idempotent and what the Group does after.
func TestClose(t *testing.T) {
	c := newCluster(t, 1)
	r := c.waitLeader()
	state := propose(t, r.g, baseInit())
	g := r.g
	r.stop()
	if err := g.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if _, err := tryPropose(t, g, upsertCmd("n9")); !errors.Is(err, meta.ErrClosed) {
		t.Errorf("Propose after Close: got %v, want ErrClosed", err)
	}
	if err := g.AddVoter(t.Context(), "n9", "127.0.0.1:1"); !errors.Is(err, meta.ErrClosed) {
		t.Errorf("AddVoter after Close: got %v, want ErrClosed", err)
	}
	if _, err := g.HasState(); !errors.Is(err, meta.ErrClosed) {
		t.Errorf("HasState after Close: got %v, want ErrClosed", err)
	}
	if _, err := g.Configuration(); !errors.Is(err, meta.ErrClosed) {
		t.Errorf("Configuration after Close: got %v, want ErrClosed", err)
	}
	if err := g.Bootstrap(c.servers); !errors.Is(err, meta.ErrClosed) {
		t.Errorf("Bootstrap after Close: got %v, want ErrClosed", err)
	}
	if g.IsLeader() || g.Ready() {
		t.Errorf("after Close: got IsLeader %v, Ready %v; want false, false", g.IsLeader(), g.Ready())
	}
	if got := g.State(); got != state {
		t.Errorf("State after Close: got epoch %d, want the last state at %d", got.GetEpoch(), state.GetEpoch())
	}
}

func TestConfigValidate(t *testing.T) {
	ok := meta.Config{NodeID: "n1", Dir: "/tmp/x"}
	tests := []struct {
		name  string
		tweak func(*meta.Config)
		words string // "" means valid
	}{
		{"defaults", func(*meta.Config) {}, ""},
		{"no node id", func(c *meta.Config) { c.NodeID = "" }, "NodeID"},
		{"no dir", func(c *meta.Config) { c.Dir = "" }, "Dir"},
		{"election below heartbeat", func(c *meta.Config) {
			c.HeartbeatTimeout, c.ElectionTimeout = time.Second, 100*time.Millisecond
		}, "ElectionTimeout"},
		{"lease above heartbeat", func(c *meta.Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 100*time.Millisecond, time.Second, time.Second
		}, "LeaderLeaseTimeout"},
		{"negative timer", func(c *meta.Config) { c.CommitTimeout = -time.Second }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.tweak(&c)
			err := c.Validate()
			switch {
			case tt.words == "" && err != nil:
				t.Errorf("Validate(%+v): got %v, want nil", c, err)
			case tt.words != "" && (err == nil || !strings.Contains(err.Error(), tt.words)):
				t.Errorf("Validate(%+v): got %v, want an error naming %s", c, err, tt.words)
			}
		})
	}
}
