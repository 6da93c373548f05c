package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/check"
	"github.com/heraldhq/herald/cluster/schedule"
)

// Workload shapes the clients that RunSchedule runs while the faults go
// on. Zero values mean the defaults.
type Workload struct {
	// Clients post, one post at a time, each with a new client_msg_id,
	// through the running nodes in turn; 0 means 4.
	Clients int
	// Channels are how many channels they post to; 0 means 2.
	Channels int
	// Readers read whole histories linearizably, StaleReaders with
	// stale: true; 0 means 1 of each.
	Readers, StaleReaders int
	// Attempt is each attempt's deadline; 0 means a third of the
	// request timeout, so that attempts cut short by the client, which
	// may yet apply, are retried with their client_msg_id while the
	// faults last.
	Attempt time.Duration
	// Seed picks the channel of each post and which acknowledged posts
	// are deliberately sent again.
	Seed int64
}

// Run is one run of a schedule: what happened and what the checkers
// found.
type Run struct {
	Schedule schedule.Schedule
	History  check.History
	Verdicts []check.Verdict
}

// Valid reports whether every checker passed.
func (r *Run) Valid() bool {
	for _, v := range r.Verdicts {
		if !v.Valid {
			return false
		}
	}
	return true
}

// RunSchedule runs s against the cluster (which needs Options.Faults)
// while w's clients post and read, recording every operation: it creates
// w's channels, starts the clients, puts each fault in force at its
// offset and heals it after its duration, stops the clients at the end of
// s's duration, heals everything, waits for the cluster to settle, posts
// once more to each channel (writes must resume within 30 s), waits for
// the replicas to agree, reads every channel through every node (the
// drain), and runs every checker of package check. It logs the schedule
// and each verdict, and fails the test for each invalid one, writing the
// schedule and the history as JSON lines to the test's artifact
// directory.
func (c *Cluster) RunSchedule(s schedule.Schedule, w Workload) *Run {
	t := c.t
	t.Helper()
	if c.Net == nil {
		t.Fatal("clustertest: RunSchedule needs Options.Faults")
	}
	if err := s.Check(); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	for _, id := range s.Config.Nodes {
		if c.member(id) == nil {
			t.Fatalf("clustertest: the schedule names node %s, which the cluster does not have (%v)", id, c.ids())
		}
	}
	w = w.withDefaults(c.opts.RequestTimeout)
	var sched bytes.Buffer
	if err := schedule.WriteJSONL(&sched, s); err != nil {
		t.Fatal(err)
	}
	t.Logf("schedule: %s\n%s", s, sched.String())

	r := &runner{c: c, w: w}
	for i := range w.Channels {
		ch := fmt.Sprintf("torture-%d", i)
		r.channels = append(r.channels, ch)
		MustCreate(t, c.Running()[i%len(c.Running())], ch)
	}
	begin := time.Now()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for i := range w.Clients {
		wg.Go(func() { r.client(ctx, i) })
	}
	for i := range w.Readers {
		wg.Go(func() { r.reader(ctx, fmt.Sprintf("r%d", i), false) })
	}
	for i := range w.StaleReaders {
		wg.Go(func() { r.reader(ctx, fmt.Sprintf("s%d", i), true) })
	}
	nem := &nemesis{c: c, rec: &r.rec, begin: begin, active: map[int]links{}}
	faults := make(chan struct{})
	go func() {
		defer close(faults)
		nem.run(t.Context(), s)
	}()
	sleepUntil(t.Context(), begin.Add(s.Config.Duration))
	stop()
	<-faults
	wg.Wait()
	c.Net.Heal()
	duringFaults, attempts := r.acked.Load(), r.attempts.Load()
	resumed := r.drain()
	run := &Run{Schedule: s, History: r.rec.History()}
	run.Verdicts = check.All(run.History)
	t.Logf("%d post attempts acknowledged of %d while the faults went on; the drain's posts acknowledged %v after the faults healed",
		duringFaults, attempts, resumed.Round(time.Millisecond))
	if duringFaults == 0 {
		t.Errorf("seed %d: no post was acknowledged while the faults went on: the checks have nothing to check", s.Config.Seed)
	}
	for _, v := range run.Verdicts {
		if v.Valid {
			t.Logf("%s: %s", v.Checker, v.Summary)
		} else {
			t.Errorf("seed %d: %v", s.Config.Seed, v)
		}
	}
	if !run.Valid() {
		c.keep(run, sched.Bytes())
	}
	return run
}

func (w Workload) withDefaults(requestTimeout time.Duration) Workload {
	if w.Clients == 0 {
		w.Clients = 4
	}
	if w.Channels == 0 {
		w.Channels = 2
	}
	if w.Readers == 0 {
		w.Readers = 1
	}
	if w.StaleReaders == 0 {
		w.StaleReaders = 1
	}
	if w.Attempt == 0 {
		w.Attempt = max(requestTimeout/3, 500*time.Millisecond)
	}
	return w
}

// keep writes a failed run's schedule and history where the test keeps
// its artifacts.
func (c *Cluster) keep(run *Run, sched []byte) {
	dir := c.t.ArtifactDir()
	var hist bytes.Buffer
	if err := check.WriteJSONL(&hist, run.History); err != nil {
		c.t.Errorf("clustertest: encode history: %v", err)
		return
	}
	sp, hp := filepath.Join(dir, "schedule.jsonl"), filepath.Join(dir, "history.jsonl")
	if err := errors.Join(os.WriteFile(sp, sched, 0o644), os.WriteFile(hp, hist.Bytes(), 0o644)); err != nil {
		c.t.Errorf("clustertest: keep the failed run: %v", err)
		return
	}
	c.t.Logf("the schedule is in %s and the history in %s (go test -artifacts keeps them)", sp, hp)
}

// runner runs one workload. Its goroutines exit when their ctx ends.
type runner struct {
	c        *Cluster
	w        Workload
	channels []string
	rec      check.Recorder
	turn     atomic.Uint64
	acked    atomic.Int64
	attempts atomic.Int64
}

// next returns the next running node in turn, or nil if none runs.
func (r *runner) next() *cluster.Node {
	nodes := r.c.Running()
	if len(nodes) == 0 {
		return nil
	}
	return nodes[r.turn.Add(1)%uint64(len(nodes))]
}

// client posts to the channels until ctx ends. Each post gets a new
// client_msg_id and is retried with the same one until acknowledged; one
// acknowledged post in eight is deliberately sent once more, which must
// return the first result.
func (r *runner) client(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(r.w.Seed), uint64(i)))
	proc := fmt.Sprintf("c%d", i)
	for k := 0; ctx.Err() == nil; k++ {
		ch := r.channels[rng.IntN(len(r.channels))]
		id := fmt.Sprintf("%s-%d", proc, k)
		if r.postUntilAcked(ctx, proc, ch, id) && rng.IntN(8) == 0 {
			r.attempt(ctx, proc, ch, id)
		}
	}
}

// postUntilAcked retries a post until it is acknowledged or ctx ends, and
// reports whether it was.
func (r *runner) postUntilAcked(ctx context.Context, proc, ch, id string) bool {
	for ctx.Err() == nil {
		switch r.attempt(ctx, proc, ch, id) {
		case check.OK:
			return true
		case "":
			return false // gave up: an error no retry cures
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) { // a client's retry backoff
			return false
		}
	}
	return false
}

// attempt makes and records one post attempt and returns its outcome;
// "" means an error that no retry cures (recorded as Info).
func (r *runner) attempt(ctx context.Context, proc, ch, id string) check.Type {
	n := r.next()
	if n == nil {
		return check.Fail
	}
	r.attempts.Add(1)
	op := r.rec.Invoke(check.Op{Kind: check.Post, Process: proc, Channel: ch, Node: n.ID(), ClientMsgID: id})
	actx, cancel := context.WithTimeout(ctx, r.w.Attempt)
	res, err := n.Apply(actx, Post(ch, "text "+id, id))
	cancel()
	if err == nil {
		r.acked.Add(1)
		r.rec.Complete(op, check.OK, check.Op{Seq: res.Message.GetSeq()})
		return check.OK
	}
	typ := outcome(err)
	r.rec.Complete(op, typ, check.Op{Error: err.Error()})
	if typ == check.Info && !Retryable(err) && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		return ""
	}
	return typ
}

// outcome classifies a failed post: definitely not applied (Fail), or
// maybe applied (Info): indeterminate, timed out, cut short, the node
// closed under it, or anything else.
func outcome(err error) check.Type {
	switch {
	case errors.Is(err, cluster.ErrIndeterminate):
		return check.Info
	case errors.Is(err, cluster.ErrNotApplied), errors.Is(err, cluster.ErrNoLeader):
		return check.Fail
	default:
		return check.Info
	}
}

// reader reads the channels' histories in turn through the nodes in turn
// until ctx ends.
func (r *runner) reader(ctx context.Context, proc string, stale bool) {
	for k := 0; ctx.Err() == nil; k++ {
		ch := r.channels[k%len(r.channels)]
		if n := r.next(); n != nil {
			r.read(ctx, n, proc, ch, stale, false)
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) { // between reads
			return
		}
	}
}

// read makes and records one read of ch's whole history through n.
func (r *runner) read(ctx context.Context, n *cluster.Node, proc, ch string, stale, final bool) bool {
	op := r.rec.Invoke(check.Op{Kind: check.Read, Process: proc, Channel: ch, Node: n.ID(), Stale: stale, Final: final})
	actx, cancel := context.WithTimeout(ctx, r.w.Attempt)
	defer cancel()
	var msgs []check.Message
	after := uint64(0)
	for pages := 1; ; pages++ {
		h, err := n.History(actx, Alice, &heraldv1.GetHistoryRequest{ChannelId: ch, AfterSeq: after,
			Limit: 1000, OldestFirst: true, Stale: stale})
		if err != nil {
			r.rec.Complete(op, check.Info, check.Op{Error: err.Error()})
			return false
		}
		for _, m := range h.GetMessages() {
			msgs = append(msgs, check.Message{Seq: m.GetSeq(), ClientMsgID: m.GetClientMsgId()})
		}
		if !h.GetHasMore() || len(h.GetMessages()) == 0 {
			r.rec.Complete(op, check.OK, check.Op{Messages: msgs, Pages: pages})
			return true
		}
		after = msgs[len(msgs)-1].Seq
	}
}

// drain waits, with every fault healed, for the cluster to settle, posts
// once to each channel, waits for the replicas to agree and reads every
// channel through every node, linearizably and stale. It returns how
// long after the heal the drain's posts were acknowledged.
func (r *runner) drain() time.Duration {
	c, t := r.c, r.c.t
	t.Helper()
	for _, m := range c.Members() {
		if m.Cluster() == nil {
			m.Restart()
		}
	}
	healed := time.Now()
	c.WaitReady(60 * time.Second)
	c.WaitSettled(60 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, ch := range r.channels {
		if !r.postUntilAcked(ctx, "drain", ch, "drain-"+ch) {
			t.Errorf("drain: no post to %s acknowledged within 30s after the faults healed", ch)
		}
	}
	resumed := time.Since(healed)
	c.WaitSameDigests(60 * time.Second)
	for _, ch := range r.channels {
		for _, m := range c.Members() {
			for _, stale := range []bool{false, true} {
				ok := false
				for ctx.Err() == nil && !ok {
					if n := m.Cluster(); n != nil {
						ok = r.read(ctx, n, "drain", ch, stale, true)
					}
					if !ok {
						sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) // retry backoff
					}
				}
				if !ok {
					t.Errorf("drain: no read of %s via %s (stale %v) answered within 30s", ch, m.ID, stale)
				}
			}
		}
	}
	return resumed
}
