package partition_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
)

// TestPausedLeaderResumes freezes the leader the way SIGSTOP freezes a
// process (its traffic held, its leadership not yet doubted), lets the
// other replicas elect a leader and commit posts, and resumes the old
// leader with posts in flight on it that passed its leadership check
// before it learnt of the new term: the requests a paused process finds
// queued on its sockets. The first thing it hears is the new leader's
// heartbeat.
//
// hashicorp/raft handles heartbeats on the transport's goroutine, beside
// its main loop: a heartbeat carrying a newer term bumps the term while
// the leader loop goes on appending, so the resumed leader stamped its
// posts with the new leader's term at the indexes where the new leader
// had entries of its own. The logs then passed Raft's consistency check
// although they differed, the old leader applied its own entries, and
// acknowledged posts had other seqs there than on the other replicas
// (hashicorp/raft issue 695). Every round checks that the replicas
// converge to one digest and that every acknowledged post keeps its seq
// everywhere.
func TestPausedLeaderResumes(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 10
	}
	var mu sync.Mutex
	wrapped := map[string]*pausable{}
	g := newWrappedGroup(t, 3, nil, func(id string, tr raft.Transport) raft.Transport {
		p := newPausable(tr)
		mu.Lock()
		wrapped[id] = p
		mu.Unlock()
		return p
	})
	// Held traffic would keep the replicas from stopping.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range wrapped {
			p.resume()
		}
	})
	propose(t, g.waitLeader().p, createCmd("c"))
	acked := map[string]uint64{} // client_msg_id → acknowledged seq
	stamped := 0                 // posts the resumed leader acknowledged
	for round := range rounds {
		old := g.awaitLeader()
		waitIdle(t, g, old)
		term := old.p.Status().Term
		mu.Lock()
		pt := wrapped[old.id]
		mu.Unlock()
		pt.pause()

		// The others elect a leader in a later term, which commits.
		var next *replica
		testkit.CheckFor(t, electionWait, pollStep, func() error {
			for _, r := range g.followers(old) {
				if r.p.IsLeader() && r.p.Status().Term > term && r.p.Ready() {
					next = r
					return nil
				}
			}
			return fmt.Errorf("no new leader after %s's pause in term %d", old.id, term)
		})
		for i := range 3 {
			id := fmt.Sprintf("r%d-next-%d", round, i)
			acked[id] = propose(t, next.p, postCmd("c", id, id)).Message.GetSeq()
		}

		// Posts reach the paused leader, pass its leadership check and
		// wait there; then its clock starts again with the new leader's
		// heartbeat.
		held := make(chan struct{})
		var passed sync.WaitGroup
		partition.SetProposeHook(old.p, func() {
			passed.Done()
			<-held
		})
		const queued = 8
		passed.Add(queued)
		results := make(chan error, queued)
		var posts sync.WaitGroup
		for i := range queued {
			id := fmt.Sprintf("r%d-old-%d", round, i)
			posts.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				res, err := old.p.Propose(ctx, postCmd("c", id, id))
				if err == nil {
					mu.Lock()
					acked[id] = res.Message.GetSeq()
					stamped++
					mu.Unlock()
				}
				results <- err
			})
		}
		passed.Wait()
		pt.releaseHeartbeats()
		testkit.CheckFor(t, electionWait, time.Millisecond, func() error {
			if got := old.p.Status().Term; got <= term {
				return fmt.Errorf("%s still in term %d after the new leader's heartbeat", old.id, got)
			}
			return nil
		})
		close(held)
		partition.SetProposeHook(old.p, nil)
		posts.Wait()
		pt.resume()
		close(results)
		for err := range results {
			var nle *partition.NotLeaderError
			if err != nil && !errors.As(err, &nle) && !errors.Is(err, partition.ErrIndeterminate) {
				t.Errorf("round %d: post through the resumed leader: got %v, want success, ErrNotLeader or ErrIndeterminate", round, err)
			}
		}
		checkSameState(t, g, round)
		checkAcked(t, g, acked, round)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d rounds: %d posts acknowledged, %d of them by a resumed leader", rounds, len(acked), stamped)
}

// waitIdle waits until leader has nothing in flight: every running
// replica's log ends where the leader's does, and all of it is committed.
func waitIdle(t *testing.T, g *testGroup, leader *replica) {
	t.Helper()
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		ls := leader.p.Status()
		if ls.CommitIndex != ls.LastIndex {
			return fmt.Errorf("leader %s: commit index %d, last index %d", leader.id, ls.CommitIndex, ls.LastIndex)
		}
		for _, r := range g.followers(leader) {
			if got := r.p.Status().LastIndex; got != ls.LastIndex {
				return fmt.Errorf("%s: last index %d, leader's %d", r.id, got, ls.LastIndex)
			}
		}
		return nil
	})
}

// checkSameState waits until every running replica has applied the same
// index, and fails the test at once if two of them then differ.
func checkSameState(t *testing.T, g *testGroup, round int) {
	t.Helper()
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		var first *replica
		var index uint64
		var sum [32]byte
		for _, r := range g.running() {
			i, s, err := r.p.DB().Digest()
			if err != nil {
				return fmt.Errorf("%s: Digest: %v", r.id, err)
			}
			switch {
			case first == nil:
				first, index, sum = r, i, s
			case i != index:
				return fmt.Errorf("%s applied index %d, %s %d", r.id, i, first.id, index)
			case s != sum:
				t.Fatalf("round %d: replicas diverged: at applied index %d %s has digest %x, %s %x",
					round, i, r.id, s, first.id, sum)
			}
		}
		return nil
	})
}

// checkAcked fails the test unless every replica holds every acknowledged
// post at its acknowledged seq.
func checkAcked(t *testing.T, g *testGroup, acked map[string]uint64, round int) {
	t.Helper()
	for _, r := range g.running() {
		got := map[string]uint64{}
		for _, m := range history(t, r.p, "c", true) {
			got[m.GetClientMsgId()] = m.GetSeq()
		}
		for id, seq := range acked {
			if got[id] != seq {
				t.Errorf("round %d: %s has post %s at seq %d, want the acknowledged seq %d", round, r.id, id, got[id], seq)
			}
		}
	}
}
