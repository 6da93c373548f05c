package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/ring"
)

// TestFailoverKillBusiestLeader kills, while one writer per channel posts
// continuously, the node that leads the most partitions. Writes to the
// partitions it led resume within 30 s; afterwards every acknowledged post
// is in history exactly once, in acknowledgement order, on every path
// (linearizable through any node, stale on a follower), and the replicas
// are identical, among the survivors and again once the killed node is
// back.
func TestFailoverKillBusiestLeader(t *testing.T) {
	t.Parallel()
	parts, per := uint32(16), 1
	if testing.Short() {
		parts, per = 4, 2
	}
	const electionTimeout = clustertest.ElectionTimeout
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	chs := spreadChannels("fo", parts, per)
	nodes := c.Running()
	for i, ch := range chs {
		clustertest.MustCreate(t, nodes[i%len(nodes)], ch)
	}
	writers := make([]*writer, len(chs))
	for i, ch := range chs {
		writers[i] = startWriter(t, c, ch, ch, nil)
	}
	clustertest.CheckFor(t, 20*time.Second, 10*time.Millisecond, "every writer acknowledged 5 posts", func() bool {
		for _, w := range writers {
			if len(w.snapshot()) < 5 {
				return false
			}
		}
		return true
	})

	leads := map[string][]uint32{}
	clustertest.CheckFor(t, 20*time.Second, 10*time.Millisecond, "every partition has a leader", func() bool {
		clear(leads)
		for _, part := range c.Ring().GetPartitions() {
			if part.GetLeader() == "" {
				return false
			}
			leads[part.GetLeader()] = append(leads[part.GetLeader()], part.GetId())
		}
		return true
	})
	victim := ""
	for id, ps := range leads {
		if victim == "" || len(ps) > len(leads[victim]) || len(ps) == len(leads[victim]) && id < victim {
			victim = id
		}
	}
	affected := leads[victim]
	vi := memberIndex(c, victim)
	killStart := time.Now()
	c.Member(vi).Kill()
	killed := time.Now()
	t.Logf("killed %s, leader of partitions %v of %d, in %v", victim, affected, parts, killed.Sub(killStart).Round(time.Millisecond))

	// Writes resume on each partition the victim led: the first
	// acknowledgement of a post sent after the kill completed.
	resumed := func(p uint32) (ack, bool) {
		var first ack
		for _, w := range writers {
			if ring.Partition(w.ch, parts) != p {
				continue
			}
			for _, a := range w.snapshot() {
				if !a.sent.Before(killed) && (first.at.IsZero() || a.at.Before(first.at)) {
					first = a
				}
			}
		}
		return first, !first.at.IsZero()
	}
	clustertest.CheckFor(t, 30*time.Second, 5*time.Millisecond, "writes resume on every partition the victim led", func() bool {
		for _, p := range affected {
			if _, ok := resumed(p); !ok {
				return false
			}
		}
		return true
	})
	// Kill first shuts the node's HTTP server down (clustertest waits for
	// its connections for up to a second or more) while its replicas still
	// lead; elections start only once Kill has stopped them, so the
	// election figure counts from there.
	for _, p := range affected {
		a, _ := resumed(p)
		fromStart, fromKilled := a.at.Sub(killStart), a.at.Sub(killed)
		t.Logf("partition %d: first write acknowledged %v after the kill began, %v (%.1f election timeouts; target ≤ 3) after the replicas stopped",
			p, fromStart.Round(time.Millisecond), fromKilled.Round(time.Millisecond),
			float64(fromKilled)/float64(electionTimeout))
		if fromStart > 30*time.Second {
			t.Errorf("partition %d: writes resumed %v after the kill, want within 30s", p, fromStart)
		}
	}
	clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "every writer acknowledged 5 posts after the kill", func() bool {
		for _, w := range writers {
			n := 0
			for _, a := range w.snapshot() {
				if !a.sent.Before(killed) {
					n++
				}
			}
			if n < 5 {
				return false
			}
		}
		return true
	})
	acked := map[string][]ack{}
	total := 0
	for _, w := range writers {
		acked[w.ch] = w.stop()
		total += len(acked[w.ch])
	}
	t.Logf("%d writers: %d posts acknowledged", len(writers), total)
	for ch, as := range acked {
		for i := 1; i < len(as); i++ {
			if as[i].seq <= as[i-1].seq {
				t.Errorf("%s: %s acknowledged after %s, got seq %d after %d, want increasing",
					ch, as[i].id, as[i-1].id, as[i].seq, as[i-1].seq)
			}
		}
	}

	took := c.WaitSameDigests(30 * time.Second)
	t.Logf("survivors' replicas identical %v after the writers stopped", took)
	for _, n := range c.Running() {
		for _, ch := range chs {
			checkHistory(t, fmt.Sprintf("linearizable history of %s via %s", ch, n.ID()),
				readHistory(t, n, ch, false), acked[ch])
		}
	}
	// A stale read on a follower is served from its replica, which has
	// everything now that the digests are equal.
	for _, ch := range chs {
		p := ring.Partition(ch, parts)
		var f *cluster.Node
		for _, n := range c.Running() {
			if r := n.Replica(p); r != nil && !r.IsLeader() {
				f = n
			}
		}
		if f == nil {
			t.Errorf("partition %d: no follower among the survivors", p)
			continue
		}
		checkHistory(t, fmt.Sprintf("stale history of %s on follower %s", ch, f.ID()),
			readHistory(t, f, ch, true), acked[ch])
	}

	begin := time.Now()
	c.Member(vi).Restart()
	took = c.WaitReady(30 * time.Second)
	t.Logf("%s restarted and ready in %v", victim, took)
	took = c.WaitSameDigests(30 * time.Second)
	t.Logf("every replica identical %v after the restart", since(begin))
	back := c.Node(vi)
	for _, ch := range chs {
		checkHistory(t, fmt.Sprintf("linearizable history of %s via restarted %s", ch, victim),
			readHistory(t, back, ch, false), acked[ch])
	}
}

// ack is one acknowledged post.
type ack struct {
	id   string
	seq  uint64
	sent time.Time // when the acknowledged attempt was sent
	at   time.Time // when it was acknowledged
}

// writer posts to one channel, one post at a time, each with a unique
// client_msg_id (prefix-k), through the running nodes in turn, retrying a
// post with the same client_msg_id until it is acknowledged.
//
// Its goroutine exits when stop is called (between posts), at the end of
// the test, or when a post fails for good.
type writer struct {
	t      *testing.T
	c      *clustertest.Cluster
	ch     string
	prefix string
	via    func(*cluster.Node) bool // nodes it may post through; nil means all
	turn   atomic.Uint64
	stopc  chan struct{}
	done   chan struct{}

	mu    sync.Mutex // guards following
	acked []ack
	err   error
}

// startWriter starts a writer on ch. via, if not nil, picks the nodes it
// posts through.
func startWriter(t *testing.T, c *clustertest.Cluster, ch, prefix string, via func(*cluster.Node) bool) *writer {
	w := &writer{t: t, c: c, ch: ch, prefix: prefix, via: via, stopc: make(chan struct{}), done: make(chan struct{})}
	// A post may retry until the deadline; at the end of the test the
	// context ends it.
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	go func() {
		defer close(w.done)
		defer cancel()
		for k := 0; ; k++ {
			select {
			case <-w.stopc:
				return
			case <-ctx.Done():
				return
			default:
			}
			id := fmt.Sprintf("%s-%d", prefix, k)
			a, err := postAcked(ctx, w.pick, ch, id)
			w.mu.Lock()
			if err != nil {
				w.err = err
			} else {
				w.acked = append(w.acked, a)
			}
			w.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		w.halt()
		<-w.done
	})
	return w
}

// pick returns the next running node the writer may use, or nil.
func (w *writer) pick() *cluster.Node {
	var ok []*cluster.Node
	for _, n := range w.c.Running() {
		if w.via == nil || w.via(n) {
			ok = append(ok, n)
		}
	}
	if len(ok) == 0 {
		return nil
	}
	return ok[w.turn.Add(1)%uint64(len(ok))]
}

func (w *writer) halt() {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
}

// snapshot returns the acknowledgements so far, failing the test if the
// writer failed.
func (w *writer) snapshot() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		w.t.Fatalf("writer on %s: %v", w.ch, w.err)
	}
	return append([]ack(nil), w.acked...)
}

// lastSeq returns the seq of the last acknowledged post, 0 if none.
func (w *writer) lastSeq() uint64 {
	as := w.snapshot()
	if len(as) == 0 {
		return 0
	}
	return as[len(as)-1].seq
}

// stop lets the post in flight finish, ends the writer and returns its
// acknowledgements in order.
func (w *writer) stop() []ack {
	w.halt()
	<-w.done
	return w.snapshot()
}

// postAcked posts to ch with client_msg_id id (and text "text id")
// through the nodes pick returns, retrying with the same id after an
// outcome that makes a retry safe (not applied, no leader, indeterminate,
// the node closed) until it is acknowledged or ctx ends.
func postAcked(ctx context.Context, pick func() *cluster.Node, ch, id string) (ack, error) {
	var last error
	for {
		if n := pick(); n != nil {
			sent := time.Now()
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := n.Apply(actx, clustertest.Post(ch, "text "+id, id))
			cancel()
			if err == nil {
				return ack{id: id, seq: res.Message.GetSeq(), sent: sent, at: time.Now()}, nil
			}
			if !clustertest.Retryable(err) {
				return ack{}, fmt.Errorf("post %s to %s via %s: %w", id, ch, n.ID(), err)
			}
			last = fmt.Errorf("via %s: %w", n.ID(), err)
		}
		// A client's retry backoff, not a wait for a state.
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ack{}, fmt.Errorf("post %s to %s: not acknowledged before the deadline; last error: %v", id, ch, last)
		case <-t.C:
		}
	}
}

// readHistory returns a channel's whole history, oldest first, read
// through n.
func readHistory(t *testing.T, n *cluster.Node, ch string, stale bool) []*heraldv1.Message {
	t.Helper()
	var out []*heraldv1.Message
	after := uint64(0)
	for {
		h, err := n.History(t.Context(), clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch,
			AfterSeq: after, Limit: 1000, OldestFirst: true, Stale: stale})
		if err != nil {
			t.Fatalf("history of %s via %s (stale %v) after seq %d: %v", ch, n.ID(), stale, after, err)
		}
		if stale && h.GetAppliedIndex() == 0 {
			t.Errorf("stale history of %s via %s: got applied index 0, want the replica's", ch, n.ID())
		}
		out = append(out, h.GetMessages()...)
		if !h.GetHasMore() || len(h.GetMessages()) == 0 {
			return out
		}
		after = h.GetMessages()[len(h.GetMessages())-1].GetSeq()
	}
}

// checkHistory checks that msgs (a history, oldest first) holds each
// acknowledged post exactly once, with the seq it was acknowledged with, in
// acknowledgement order, and nothing else.
func checkHistory(t *testing.T, what string, msgs []*heraldv1.Message, acked []ack) {
	t.Helper()
	count := map[string]int{}
	for _, m := range msgs {
		count[m.GetClientMsgId()]++
	}
	for id, k := range count {
		if k != 1 {
			t.Errorf("%s: client_msg_id %q stored %d times, want once", what, id, k)
		}
	}
	if len(msgs) != len(acked) {
		t.Errorf("%s: got %d messages, want the %d acknowledged", what, len(msgs), len(acked))
	}
	for i := range min(len(msgs), len(acked)) {
		m, a := msgs[i], acked[i]
		if m.GetClientMsgId() != a.id || m.GetSeq() != a.seq {
			t.Errorf("%s: message %d: got %q at seq %d, want %q at seq %d (acknowledgement order)",
				what, i, m.GetClientMsgId(), m.GetSeq(), a.id, a.seq)
			return
		}
	}
}
