package partition_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// ack is one acknowledged post, in acknowledgement order.
type ack struct {
	id        string
	seq       uint64
	at        time.Time
	duplicate bool
	// maybeApplied is true when an earlier attempt of the same
	// client_msg_id failed with ErrIndeterminate.
	maybeApplied bool
}

// failoverWriter posts messages with client_msg_ids one at a time, as a
// router would: it follows NotLeader hints, and retries a failed post with
// the same client_msg_id until it is acknowledged. It is mutex-guarded; run
// owns its goroutine, which exits when stop is closed (between posts) or
// its deadline passes.
type failoverWriter struct {
	t     *testing.T
	parts []*partition.Partition
	ids   []string

	mu sync.Mutex // guards following
	// acks are the acknowledged posts in order.
	acks []ack
	// failures counts failed attempts by class.
	failures map[string]int
}

func (w *failoverWriter) acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

func (w *failoverWriter) ackedSince(t time.Time) (n int, first time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.acks {
		if a.at.After(t) {
			if n == 0 {
				first = a.at
			}
			n++
		}
	}
	return n, first
}

func (w *failoverWriter) run(ctx context.Context, stop <-chan struct{}, channel string) {
	target := 0
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("msg-%05d", i)
		maybeApplied := false
		for {
			if ctx.Err() != nil {
				w.t.Errorf("post %s: not acknowledged before the test deadline", id)
				return
			}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			res, err := w.parts[target].Propose(pctx, postCmd(channel, "text of "+id, id))
			cancel()
			if err == nil {
				w.mu.Lock()
				w.acks = append(w.acks, ack{id: id, seq: res.Message.GetSeq(), at: time.Now(),
					duplicate: res.Duplicate, maybeApplied: maybeApplied})
				w.mu.Unlock()
				break
			}
			var nle *partition.NotLeaderError
			class := ""
			switch {
			case errors.As(err, &nle):
				class = "not leader"
				if j := w.index(nle.LeaderID); j >= 0 {
					target = j
				} else {
					target = (target + 1) % len(w.parts)
				}
			case errors.Is(err, partition.ErrNotApplied):
				class = "not applied"
			case errors.Is(err, partition.ErrClosed):
				// This replica was closed: nothing was proposed. Try the
				// next one, as a router would.
				class = "closed"
				target = (target + 1) % len(w.parts)
			case errors.Is(err, partition.ErrIndeterminate):
				class = "indeterminate"
				maybeApplied = true
				target = (target + 1) % len(w.parts)
			default:
				w.t.Errorf("post %s: got %v, want success, ErrNotLeader, ErrNotApplied, ErrClosed or ErrIndeterminate", id, err)
				return
			}
			w.mu.Lock()
			w.failures[class]++
			w.mu.Unlock()
			// Client back-off before the retry; the retry, not the pause,
			// is what finds the new leader.
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func (w *failoverWriter) index(id string) int {
	for i, x := range w.ids {
		if x == id {
			return i
		}
	}
	return -1
}

// TestLeaderFailover stops the leader while a writer keeps posting. Every
// acknowledged post is in the new leader's history exactly once, in
// acknowledgement order; failed attempts are classified, and none that
// said "not applied" was applied.
func TestLeaderFailover(t *testing.T) {
	t.Run("close", func(t *testing.T) { testLeaderFailover(t, false) })
	// Shutting Raft down first skips the leadership transfer in Close, as a
	// crash would: followers must time out and elect, and proposals in
	// flight end indeterminate.
	t.Run("abrupt", func(t *testing.T) { testLeaderFailover(t, true) })
}

func testLeaderFailover(t *testing.T, abrupt bool) {
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))

	w := &failoverWriter{t: t, failures: make(map[string]int)}
	for _, r := range g.replicas {
		w.parts = append(w.parts, r.p)
		w.ids = append(w.ids, r.id)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, stop, "general") })
	stopWriter := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopWriter()

	const before, after = 30, 30
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if n := w.acked(); n < before {
			return fmt.Errorf("writer: got %d acks, want %d before the failover", n, before)
		}
		return nil
	})
	closed := time.Now()
	if abrupt {
		if err := partition.RaftOf(leader.p).Shutdown().Error(); err != nil {
			t.Fatalf("raft Shutdown: %v", err)
		}
	}
	leader.stop()
	t.Logf("closed leader %s in %v", leader.id, time.Since(closed).Round(time.Millisecond))
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if n, _ := w.ackedSince(closed); n < after {
			return fmt.Errorf("writer: got %d acks since the leader closed, want %d", n, after)
		}
		return nil
	})
	_, first := w.ackedSince(closed)
	t.Logf("writes resumed %v after the leader began closing", first.Sub(closed).Round(time.Millisecond))
	stopWriter()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("acks: %d; failed attempts: %v", len(w.acks), w.failures)

	newLeader := g.waitLeader()
	if newLeader == leader {
		t.Fatalf("new leader: got the closed replica %s", leader.id)
	}
	msgs := history(t, newLeader.p, "general", false)
	checkNoDuplicates(t, msgs)
	bySeq := make(map[uint64]string)
	count := make(map[string]int)
	for _, m := range msgs {
		bySeq[m.GetSeq()] = m.GetClientMsgId()
		count[m.GetClientMsgId()]++
	}
	var lastSeq uint64
	for _, a := range w.acks {
		if n := count[a.id]; n != 1 {
			t.Errorf("post %s: got %d times in history, want once", a.id, n)
		}
		if got := bySeq[a.seq]; got != a.id {
			t.Errorf("post %s: acknowledged as seq %d, which holds %q in history", a.id, a.seq, got)
		}
		if a.seq <= lastSeq {
			t.Errorf("post %s: got seq %d after seq %d, want increasing in acknowledgement order", a.id, a.seq, lastSeq)
		}
		lastSeq = a.seq
		if a.duplicate && !a.maybeApplied {
			t.Errorf("post %s: retry returned an earlier result, but every earlier attempt said it was not applied", a.id)
		}
	}
	if len(msgs) != len(w.acks) {
		t.Errorf("history: got %d messages, want the %d acknowledged", len(msgs), len(w.acks))
	}
	g.waitConverged()
}

// TestLeadershipTransfersUnderLoad moves leadership many times while
// writers keep posting, then closes every replica. Close must return:
// hashicorp/raft's pipelined replication can leave a replication goroutine
// blocked for good when a follower's answer ends the pipeline while another
// request is in flight, and Raft's Shutdown then waits for it forever. The
// transport must therefore not pipeline (NetworkTransportConfig.
// MaxRPCsInFlight 1). The race needs CPU contention to show: run this test
// in several processes at once to reproduce it.
func TestLeadershipTransfersUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test; runs without -short")
	}
	const rounds, writers = 200, 4
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))

	parts := make(map[string]*partition.Partition)
	for _, r := range g.replicas {
		parts[r.id] = r.p
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0 // guarded by mu
	for w := range writers {
		// Each writer follows NotLeader hints; it exits when ctx ends.
		wg.Go(func() {
			target := leader.id
			for i := 0; ctx.Err() == nil; i++ {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := parts[target].Propose(pctx, postCmd("general", "load", fmt.Sprintf("w%d-%d", w, i)))
				pcancel()
				var nle *partition.NotLeaderError
				switch {
				case err == nil:
					mu.Lock()
					acked++
					mu.Unlock()
				case errors.As(err, &nle) && nle.LeaderID != "":
					target = nle.LeaderID
				}
			}
		})
	}
	// Readers ask every replica for linearizable reads: each succeeds or
	// says it is not the leader, also while a leadership moves.
	var reads, readErrs atomic.Int64
	for _, r := range g.replicas {
		wg.Go(func() {
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				err := r.p.Read(rctx, false, func(*storage.Reader) error { return nil })
				rcancel()
				var nle *partition.NotLeaderError
				switch {
				case err == nil:
					reads.Add(1)
				case errors.As(err, &nle), ctx.Err() != nil:
				default:
					if readErrs.Add(1) <= 3 {
						t.Errorf("linearizable read on %s: %v, want success or not the leader", r.id, err)
					}
				}
			}
		})
	}
	start := time.Now()
	for i := range rounds {
		// Every other round moves the leadership on as soon as a replica
		// leads, before its first barrier of the term has committed: reads
		// then meet a transfer in progress.
		l := g.awaitLeader()
		if i%2 == 1 {
			l = g.anyLeader()
		}
		if err := l.p.TransferLeadership(t.Context(), "", ""); err != nil {
			t.Logf("transfer from %s: %v", l.id, err)
		}
	}
	cancel()
	wg.Wait()
	t.Logf("%d leadership transfers with %d writers in %v; %d posts acknowledged, %d reads, %d failed",
		rounds, writers, time.Since(start).Round(time.Millisecond), acked, reads.Load(), readErrs.Load())
	g.waitLeader()
	g.waitConverged()
	for _, r := range g.replicas {
		r.stop()
	}
}

// TestReadDuringTransfer moves the leadership of a 3-replica group whose
// third replica is down, and at once asks the new leader to hand over to
// that down replica: the transfer then stays in progress for an election
// timeout, possibly before the new leader's first barrier of its term has
// committed. A linearizable read on it meanwhile must succeed or say it
// is not the leader (so the router tries elsewhere), never fail outright.
func TestReadDuringTransfer(t *testing.T) {
	t.Parallel()
	g := newGroup(t, 3, nil)
	leader := g.awaitLeader()
	propose(t, leader.p, createCmd("general"))
	down := g.followers(leader)[0]
	down.stop()
	var ok, notLeader int
	attempts := 20
	if testing.Short() {
		attempts = 8
	}
	for attempt := range attempts {
		from := g.awaitLeader()
		to := g.followers(from)[0] // the one running follower
		if err := from.p.TransferLeadership(t.Context(), to.id, to.addr); err != nil {
			t.Logf("transfer from %s: %v", from.id, err)
			continue
		}
		l := g.anyLeader()
		tf := partition.RaftOf(l.p).LeadershipTransferToServer(raft.ServerID(down.id), raft.ServerAddress(down.addr))
		for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			err := l.p.Read(ctx, false, func(*storage.Reader) error { return nil })
			cancel()
			var nle *partition.NotLeaderError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &nle):
				notLeader++
			default:
				t.Fatalf("attempt %d: read on %s during a transfer: %v, want success or not the leader", attempt, l.id, err)
			}
		}
		_ = tf.Error() // the down replica never takes over
	}
	t.Logf("reads during transfers: %d succeeded, %d not the leader", ok, notLeader)
}
