package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
)

// countedEvents is a real node as the hub's cluster, counting its backlog
// reads.
type countedEvents struct {
	*cluster.Node
	calls atomic.Int64
}

func (c *countedEvents) Events(ctx context.Context, channel string, after uint64, limit int) ([]*heraldv1.Event, uint64, uint64, error) {
	c.calls.Add(1)
	return c.Node.Events(ctx, channel, after, limit)
}

// TestCatchUpWithoutProgress runs a catch-up in the state of a gateway
// whose topic's replica had reached seq 10 when the channel's leader
// applied a restored snapshot that took the head back to 5, and has not
// applied it yet: the topic is past the head the backlog reads see. A
// subscription sent more than the head ends at once with CURSOR_AHEAD; one
// at the head waits for progress without spinning, and goes live once the
// head passes the topic.
func TestCatchUpWithoutProgress(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 1, Partitions: 1})
	n := c.Node(0)
	const ch = "back"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, clustertest.Create(ch)); err != nil {
		t.Fatal(err)
	}
	postN := func(k int) {
		for range k {
			if _, err := n.Apply(ctx, clustertest.Post(ch, "text", "")); err != nil {
				t.Fatal(err)
			}
		}
	}
	postN(5)
	cl := &countedEvents{Node: n}
	h := newHub(ctx, cl, slog.New(slog.DiscardHandler), 0, newGWMetrics())
	start := func(sent uint64) (*subscription, *streamSink, <-chan struct{}) {
		tp := &topic{channel: ch, cancel: func() {}, subs: map[*subscription]struct{}{}, last: 10}
		k := newStreamSink(64)
		sctx, scancel := context.WithCancel(ctx)
		s := &subscription{t: tp, channel: ch, sink: k, cancel: scancel, sent: sent}
		tp.subs[s] = struct{}{}
		done := make(chan struct{})
		go func() { h.catchUp(sctx, s); close(done) }()
		return s, k, done
	}
	wait := func(done <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: catch-up still running after 10s (%d backlog reads)", what, cl.calls.Load())
		}
	}

	// Sent 8, head 5: ahead for good.
	_, k, done := start(8)
	wait(done, "sent 8, head 5")
	_, end, _ := k.take()
	if r := end.resync; end == nil || r.GetReason() != heraldv1.ResyncRequired_CURSOR_AHEAD || r.GetLastSentSeq() != 8 {
		t.Errorf("sent 8, head 5: ended with %+v, want resync_required CURSOR_AHEAD, last_sent_seq 8", end)
	}
	t.Logf("sent 8, head 5: %d backlog reads", cl.calls.Load())

	// Sent 5, head 5, topic at 10: nothing to read for now.
	cl.calls.Store(0)
	s, _, done := start(5)
	const watch = time.Second
	select {
	case <-done:
		t.Fatalf("sent 5, head 5, topic at 10: catch-up ended, want it waiting")
	case <-time.After(watch):
	}
	reads := cl.calls.Load()
	t.Logf("sent 5, head 5, topic at 10: %d backlog reads in %v", reads, watch)
	if reads > 20 {
		t.Errorf("sent 5, head 5, topic at 10: %d backlog reads in %v, want a few (no spinning)", reads, watch)
	}
	postN(5)
	wait(done, "after the head reached the topic")
	s.t.mu.Lock()
	live, sent := s.live, s.sent
	s.t.mu.Unlock()
	if !live || sent != 10 {
		t.Errorf("after the head reached 10: live %v, sent %d; want live at 10", live, sent)
	}
}

// skippingCluster is a real node as the hub's cluster whose first Watch
// stream drops the event of seq skip: an upstream that breaks its contract.
type skippingCluster struct {
	*cluster.Node
	skip    uint64
	watches atomic.Int64
}

func (c *skippingCluster) Watch(channel string, after uint64) (cluster.Stream, error) {
	s, err := c.Node.Watch(channel, after)
	if err != nil || c.watches.Add(1) > 1 {
		return s, err
	}
	return &skippingStream{Stream: s, skip: c.skip}, nil
}

type skippingStream struct {
	cluster.Stream
	skip uint64
}

func (s *skippingStream) Next(ctx context.Context, max int) ([]*heraldv1.Event, error) {
	evs, err := s.Stream.Next(ctx, max)
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.GetSeq() != s.skip {
			out = append(out, ev)
		}
	}
	return out, err
}

// TestUpstreamGapRewatches gives the hub an upstream stream that skips an
// event: the hub must read the channel again from the last seq it had,
// and its subscriber get every event once, in order. Before, the
// subscription ended with an error at the gap.
func TestUpstreamGapRewatches(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 1, Partitions: 1})
	n := c.Node(0)
	const ch = "gappy"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, clustertest.Create(ch)); err != nil {
		t.Fatal(err)
	}
	info, _, err := n.GetChannel(ctx, clustertest.Alice, ch)
	if err != nil {
		t.Fatal(err)
	}
	head := info.GetHeadSeq()
	cl := &skippingCluster{Node: n, skip: head + 3}
	h := newHub(ctx, cl, slog.New(slog.DiscardHandler), 0, newGWMetrics())
	k := newStreamSink(64)
	if _, err := h.subscribe(ctx, clustertest.Alice, k, ch, nil, ""); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	const posts = 8
	for range posts {
		if _, err := n.Apply(ctx, clustertest.Post(ch, "text", "")); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint64
	for len(got) < posts {
		select {
		case <-k.notify:
		case <-ctx.Done():
			t.Fatalf("got seqs %v, want %d events after %d", got, posts, head)
		}
		items, end, _ := k.take()
		for _, it := range items {
			if ev := it.GetEvent(); ev != nil {
				got = append(got, ev.GetSeq())
			}
		}
		if end != nil {
			t.Fatalf("subscription ended after seqs %v: %+v", got, end)
		}
	}
	for i, seq := range got {
		if seq != head+uint64(i)+1 {
			t.Fatalf("got seqs %v, want %d..%d, each once", got, head+1, head+posts)
		}
	}
	if w := cl.watches.Load(); w != 2 {
		t.Errorf("upstream watched %d times, want 2: once, and again after the gap", w)
	}
}
