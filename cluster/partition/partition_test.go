package partition_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

func TestConfigValidate(t *testing.T) {
	valid := partition.Config{NodeID: "n1", Dir: t.TempDir()}
	tests := []struct {
		name  string
		tweak func(*partition.Config)
		want  string // substring of the error; "" means valid
	}{
		{"defaults", func(*partition.Config) {}, ""},
		{"fast timers", func(c *partition.Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 100*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond
		}, ""},
		{"no node id", func(c *partition.Config) { c.NodeID = "" }, "NodeID"},
		{"no dir", func(c *partition.Config) { c.Dir = "" }, "Dir"},
		{"election below heartbeat", func(c *partition.Config) {
			c.HeartbeatTimeout, c.ElectionTimeout = 2*time.Second, time.Second
		}, "ElectionTimeout"},
		{"lease above heartbeat", func(c *partition.Config) {
			c.HeartbeatTimeout, c.LeaderLeaseTimeout = 100*time.Millisecond, 200*time.Millisecond
		}, "LeaderLeaseTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.tweak(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate(%+v): got %v, want nil", c, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate(%+v): got %v, want an error naming %s", c, err, tt.want)
			}
		})
	}
	if _, err := partition.New(partition.Config{Dir: t.TempDir()}, nil); err == nil {
		t.Errorf("New without NodeID: got nil error, want one")
	}
}

func TestNotLeaderError(t *testing.T) {
	var err error = &partition.NotLeaderError{Partition: 3, LeaderID: "n2", LeaderAddr: "127.0.0.1:7"}
	if !errors.Is(err, partition.ErrNotLeader) {
		t.Errorf("errors.Is(%v, ErrNotLeader): got false, want true", err)
	}
	if got, want := err.Error(), "partition 3: leader is n2 (127.0.0.1:7)"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
	err = &partition.NotLeaderError{Partition: 3}
	if got, want := err.Error(), "partition 3: no leader known"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}

// TestSingleReplica covers one replica: results carry gap-free seqs,
// domain errors come back as *storage.Error and change nothing, and reads
// see every acknowledged write.
func TestSingleReplica(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	ctx := t.Context()

	res := propose(t, p, createCmd("general"))
	if got := res.Channel.GetId(); got != "general" {
		t.Fatalf("create: got channel %q, want general", got)
	}
	if got := res.Channel.GetCreator(); got != user {
		t.Errorf("create: got creator %q, want %q", got, user)
	}
	for i := 1; i <= 5; i++ {
		text := fmt.Sprintf("hello %d", i)
		res := propose(t, p, postCmd("general", text, fmt.Sprintf("c%d", i)))
		if got, want := res.Message.GetSeq(), uint64(i); got != want {
			t.Fatalf("post %d: got seq %d, want %d", i, got, want)
		}
		if res.Duplicate {
			t.Errorf("post %d: got Duplicate, want a new message", i)
		}
		// A linearizable read sees the write just acknowledged.
		msgs := history(t, p, "general", false)
		if len(msgs) != i || msgs[i-1].GetText() != text {
			t.Fatalf("history after post %d: got %q, want %d messages ending in %q", i, texts(msgs), i, text)
		}
	}

	// A retry with the same client_msg_id returns the first result.
	res = propose(t, p, postCmd("general", "different text", "c2"))
	if !res.Duplicate || res.Message.GetSeq() != 2 || res.Message.GetText() != "hello 2" {
		t.Errorf("retry of c2: got seq %d %q duplicate %v, want seq 2 %q duplicate true",
			res.Message.GetSeq(), res.Message.GetText(), res.Duplicate, "hello 2")
	}

	domain := []struct {
		name string
		cmd  *clusterv1.Command
		kind error
	}{
		{"duplicate create", createCmd("general"), storage.ErrAlreadyExists},
		{"post to unknown channel", postCmd("nowhere", "hi", ""), storage.ErrNotFound},
		{"post by non-member", postAs("bob", "general", "hi", "b-1"), storage.ErrPermissionDenied},
		{"empty text", postCmd("general", "", ""), storage.ErrInvalidArgument},
		{"bad channel id", postCmd("Bad Id!", "hi", ""), storage.ErrInvalidArgument},
		{"edit unknown message", editCmd("general", 999, "x"), storage.ErrNotFound},
	}
	before := history(t, p, "general", false)
	for _, tt := range domain {
		t.Run(tt.name, func(t *testing.T) {
			res, err := p.Propose(ctx, tt.cmd)
			var se *storage.Error
			if !errors.As(err, &se) {
				t.Fatalf("Propose: got %v (%T), want a *storage.Error", err, err)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("Propose: got %v (kind %v), want kind %v", err, se.Kind, tt.kind)
			}
			if res != nil {
				t.Errorf("Propose: got result %v, want nil", res)
			}
			for _, sentinel := range []error{partition.ErrNotLeader, partition.ErrNotApplied, partition.ErrIndeterminate} {
				if errors.Is(err, sentinel) {
					t.Errorf("Propose: got %v, which is %v; want only the domain error", err, sentinel)
				}
			}
		})
	}
	after := history(t, p, "general", false)
	if fmt.Sprint(texts(after)) != fmt.Sprint(texts(before)) {
		t.Errorf("history after domain errors: got %q, want %q", texts(after), texts(before))
	}
	head, err := headSeq(ctx, p, "general", false)
	if err != nil || head != 5 {
		t.Errorf("head seq after domain errors: got %d, %v, want 5, nil", head, err)
	}
	// The next post takes the next seq: failed commands left no gap.
	if got := propose(t, p, postCmd("general", "after errors", "")).Message.GetSeq(); got != 6 {
		t.Errorf("post after domain errors: got seq %d, want 6", got)
	}
	// The refused post recorded no dedup entry: once bob joins (seq 7), the
	// same client_msg_id posts a new message.
	propose(t, p, joinCmd("bob", "general"))
	res = propose(t, p, postAs("bob", "general", "hi", "b-1"))
	if res.Duplicate || res.Message.GetSeq() != 8 {
		t.Errorf("bob's post after joining: got seq %d duplicate %v, want seq 8 duplicate false",
			res.Message.GetSeq(), res.Duplicate)
	}

	// Stale reads on the only replica (which leads) see the same state.
	for _, stale := range []bool{false, true} {
		msgs := history(t, p, "general", stale)
		if len(msgs) != 7 {
			t.Errorf("history (stale %v): got %d messages, want 7", stale, len(msgs))
		}
		checkNoDuplicates(t, msgs)
	}

	// A read's own error comes back unchanged.
	errRead := errors.New("reader failed")
	if err := p.Read(ctx, false, func(*storage.Reader) error { return errRead }); !errors.Is(err, errRead) {
		t.Errorf("Read returning an error: got %v, want %v", err, errRead)
	}
	st := p.Status()
	if st.State != "Leader" || st.LeaderID != "n1" || st.AppliedIndex == 0 || st.CommitIndex < st.AppliedIndex {
		t.Errorf("Status: got %+v, want leader n1 with applied <= commit", st)
	}
	if p.ID() != 0 || p.Feed() == nil {
		t.Errorf("accessors: got ID %d, Feed %p", p.ID(), p.Feed())
	}
}

// TestThreeReplicas covers routing errors and replica agreement: only the
// leader proposes and serves linearizable reads, followers name it, stale
// reads work on followers, and digests agree at equal applied index.
func TestThreeReplicas(t *testing.T) {
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	ctx := t.Context()

	propose(t, leader.p, createCmd("general"))
	seqs := postN(t, leader.p, "general", "m", 10)
	if got := seqs[len(seqs)-1]; got != 10 {
		t.Fatalf("last post: got seq %d, want 10", got)
	}

	for _, f := range g.followers(leader) {
		t.Run("follower "+f.id, func(t *testing.T) {
			res, err := f.p.Propose(ctx, postCmd("general", "via follower", ""))
			var nle *partition.NotLeaderError
			if !errors.As(err, &nle) || !errors.Is(err, partition.ErrNotLeader) {
				t.Fatalf("Propose on follower: got %v, %v, want a *NotLeaderError", res, err)
			}
			if nle.LeaderID != leader.id || nle.LeaderAddr != leader.addr {
				t.Errorf("NotLeaderError: got leader %q at %q, want %q at %q",
					nle.LeaderID, nle.LeaderAddr, leader.id, leader.addr)
			}

			err = f.p.Read(ctx, false, func(*storage.Reader) error {
				t.Errorf("linearizable Read on follower ran its function")
				return nil
			})
			if !errors.As(err, &nle) || nle.LeaderID != leader.id {
				t.Errorf("linearizable Read on follower: got %v, want a *NotLeaderError naming %s", err, leader.id)
			}

			// A stale read is served once the follower has applied the posts.
			start := time.Now()
			testkit.CheckFor(t, convergeWait, pollStep, func() error {
				head, err := headSeq(ctx, f.p, "general", true)
				if err != nil {
					return err
				}
				if head != 10 {
					return fmt.Errorf("stale head seq: got %d, want 10", head)
				}
				return nil
			})
			t.Logf("stale read on %s saw every post after %v", f.id, time.Since(start).Round(time.Millisecond))
			if got := len(history(t, f.p, "general", true)); got != 10 {
				t.Errorf("stale history: got %d messages, want 10", got)
			}
			if !f.p.Ready() || f.p.IsLeader() {
				t.Errorf("follower: got Ready %v IsLeader %v, want true, false", f.p.Ready(), f.p.IsLeader())
			}
		})
	}
	// The follower's rejected proposal did not apply anywhere.
	if got := len(history(t, leader.p, "general", false)); got != 10 {
		t.Errorf("history after follower proposals: got %d messages, want 10", got)
	}
	index := g.waitConverged()
	if want := appliedIndex(t, leader.p); index != want {
		t.Errorf("converged index: got %d, want the leader's %d", index, want)
	}
}

// TestProposeExpiredContext checks that a proposal whose ctx has already
// ended is not applied.
func TestProposeExpiredContext(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	propose(t, p, createCmd("general"))

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"canceled", canceled, context.Canceled},
		{"deadline passed", expired, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := p.Propose(tc.ctx, postCmd("general", "late", "late-"+tc.name[:4]))
			if !errors.Is(err, partition.ErrNotApplied) || !errors.Is(err, tc.want) {
				t.Errorf("Propose: got %v, %v, want ErrNotApplied wrapping %v", res, err, tc.want)
			}
			if errors.Is(err, partition.ErrIndeterminate) {
				t.Errorf("Propose: got %v, want no ErrIndeterminate", err)
			}
			if err := p.Read(tc.ctx, false, func(*storage.Reader) error { return nil }); !errors.Is(err, tc.want) {
				t.Errorf("Read: got %v, want %v", err, tc.want)
			}
		})
	}
	if got := history(t, p, "general", false); len(got) != 0 {
		t.Errorf("history: got %q, want nothing applied", texts(got))
	}
}

// TestProposeDeadlineWhileWaiting isolates a leader by stopping both
// followers: a proposal whose deadline passes while it waits for a quorum
// is indeterminate, and a retry with the same client_msg_id once the
// followers are back applies it exactly once.
func TestProposeDeadlineWhileWaiting(t *testing.T) {
	// A long lease keeps the isolated leader leading while the proposal
	// waits; the test does not depend on a race with its step-down.
	g := newGroup(t, 3, func(c *partition.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		c.MaxStale = 500 * time.Millisecond
	})
	leader := g.waitLeader()
	ctx := t.Context()
	propose(t, leader.p, createCmd("general"))
	postN(t, leader.p, "general", "m", 3)

	for _, f := range g.followers(leader) {
		f.stop()
	}
	if !leader.p.IsLeader() {
		t.Fatalf("leader stepped down within a lease of its followers stopping")
	}
	dctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := leader.p.Propose(dctx, postCmd("general", "in doubt", "doubt-1"))
	took := time.Since(start)
	t.Logf("isolated Propose returned after %v: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, partition.ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("isolated Propose: got %v, %v, want ErrIndeterminate wrapping context.DeadlineExceeded", res, err)
	}
	if took > 5*time.Second {
		t.Errorf("isolated Propose: took %v, want about its 150ms deadline", took)
	}

	// The isolated leader steps down; then it refuses writes and, past
	// MaxStale, stale reads.
	start = time.Now()
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if leader.p.IsLeader() {
			return errors.New("isolated leader still leads")
		}
		return nil
	})
	t.Logf("isolated leader stepped down after %v", time.Since(start).Round(time.Millisecond))
	if _, err := leader.p.Propose(ctx, postCmd("general", "refused", "")); !errors.Is(err, partition.ErrNotLeader) {
		t.Errorf("Propose after step-down: got %v, want ErrNotLeader", err)
	}
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		_, err := headSeq(ctx, leader.p, "general", true)
		if !errors.Is(err, partition.ErrTooStale) {
			return fmt.Errorf("stale read without a leader: got %v, want ErrTooStale", err)
		}
		return nil
	})
	if leader.p.Ready() {
		t.Errorf("Ready without a leader: got true, want false")
	}

	for _, r := range g.replicas {
		if !r.running() {
			r.start()
		}
	}
	newLeader := g.waitLeader()
	res = propose(t, newLeader.p, postCmd("general", "in doubt", "doubt-1"))
	t.Logf("retry of the indeterminate post: seq %d, duplicate %v", res.Message.GetSeq(), res.Duplicate)
	msgs := history(t, newLeader.p, "general", false)
	checkNoDuplicates(t, msgs)
	var n int
	for _, m := range msgs {
		if m.GetClientMsgId() == "doubt-1" {
			n++
			if m.GetSeq() != res.Message.GetSeq() {
				t.Errorf("doubt-1: got seq %d in history, want %d as the retry returned", m.GetSeq(), res.Message.GetSeq())
			}
		}
	}
	if n != 1 {
		t.Errorf("doubt-1 in history: got %d times, want once", n)
	}
	g.waitConverged()
}

// TestCloseIdempotent checks that Close may be called repeatedly and
// concurrently, and that a closed replica applies nothing.
func TestCloseIdempotent(t *testing.T) {
	g := newGroup(t, 1, nil)
	r := g.waitLeader()
	p := r.p
	propose(t, p, createCmd("general"))
	stream := p.Feed().Watch("general", 0)
	next := make(chan error, 1)
	go func() {
		_, err := stream.Next(t.Context(), 10) // the channel has no events: blocks
		next <- err
	}()

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = p.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close %d: got %v, want nil", i, err)
		}
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close again: got %v, want nil", err)
	}
	_, err := p.Propose(t.Context(), postCmd("general", "after close", ""))
	if !errors.Is(err, partition.ErrClosed) {
		t.Errorf("Propose after Close: got %v, want ErrClosed", err)
	}
	for _, stale := range []bool{true, false} {
		if err := p.Read(t.Context(), stale, func(*storage.Reader) error { return nil }); !errors.Is(err, partition.ErrClosed) {
			t.Errorf("Read(stale=%v) after Close: got %v, want ErrClosed", stale, err)
		}
	}
	select {
	case err := <-next:
		if !errors.Is(err, partition.ErrClosed) {
			t.Errorf("blocked Stream.Next at Close: got %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("blocked Stream.Next did not return within 10s of Close")
	}
	if _, err := p.Feed().Watch("general", 0).Next(t.Context(), 1); !errors.Is(err, partition.ErrClosed) {
		t.Errorf("Next on a stream watched after Close: got %v, want ErrClosed", err)
	}
	if err := r.mux.Close(); err != nil {
		t.Errorf("Mux.Close: %v", err)
	}
	r.mux, r.p = nil, nil
}
