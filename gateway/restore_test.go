package gateway_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/gateway"
)

// eventsCounter is the real node as the gateway's cluster, counting the
// backlog reads (Events) of one channel and able to hold one of them
// until released, so that a subscription is mid-catch-up when the test
// needs it to be.
type eventsCounter struct {
	*cluster.Node
	channel string

	mu       sync.Mutex // guards following
	calls    int
	holdAt   uint64        // hold the first read after this seq; 0 = none
	held     chan struct{} // closed once a read is held
	release  chan struct{} // closed to let it go
	released bool
}

func (c *eventsCounter) Events(ctx context.Context, channel string, after uint64, limit int) ([]*heraldv1.Event, uint64, uint64, error) {
	if channel == c.channel {
		c.mu.Lock()
		c.calls++
		var wait chan struct{}
		if c.holdAt != 0 && after == c.holdAt {
			c.holdAt = 0
			close(c.held)
			wait = c.release
		}
		c.mu.Unlock()
		if wait != nil {
			select {
			case <-wait:
			case <-ctx.Done():
			}
		}
	}
	return c.Node.Events(ctx, channel, after, limit)
}

// hold makes the next read of the channel after seq after wait for
// letGo; the returned channel closes once it waits.
func (c *eventsCounter) hold(after uint64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holdAt, c.held, c.release = after, make(chan struct{}), make(chan struct{})
	return c.held
}

func (c *eventsCounter) letGo() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.released {
		c.released = true
		close(c.release)
	}
}

func (c *eventsCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// TestResyncAfterRestore restores a snapshot that takes a channel's head
// from 10 back to 5 under its subscribers: live WebSocket and Connect
// subscribers at 10, and one catching up from 8 whose backlog read the
// restore overtakes. Each must get resync_required CURSOR_AHEAD with the
// last seq it was sent, not silence (the seqs after 5 will be reused), and
// the catch-up must not spin on a backlog read that returns nothing.
func TestResyncAfterRestore(t *testing.T) {
	const ch = "restored"
	var counter *eventsCounter
	n := startNode(t, nodeOptions{wrap: func(n *cluster.Node) gateway.Cluster {
		counter = &eventsCounter{Node: n, channel: ch}
		return counter
	}})
	apiCreate(t, n, ch)
	subPostN(t, n, ch, 5)
	var snap bytes.Buffer
	p := n.Node.PartitionOf(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.Node.SaveSnapshot(ctx, p, &snap); err != nil {
		t.Fatalf("SaveSnapshot(%d): %v", p, err)
	}
	if head := subPostN(t, n, ch, 5); head != 10 {
		t.Fatalf("head: got %d, want 10", head)
	}

	live := dialWS(t, n, wsOptions{})
	if head := live.subscribe("live", ch, nil); head != 10 {
		t.Fatalf("subscribed.head_seq: got %d, want 10", head)
	}
	sub := subOpen(t, n.Messages, ch, nil)
	if head := sub.subscribed(ch); head != 10 {
		t.Fatalf("Subscribe: head_seq %d, want 10", head)
	}
	held := counter.hold(8)
	catching := dialWS(t, n, wsOptions{})
	catching.subscribe("catching", ch, wsSeq(8))
	select {
	case <-held:
	case <-time.After(wsWait):
		t.Fatalf("the catch-up from 8 never read its backlog")
	}

	begin := time.Now()
	if _, err := n.Node.RestoreSnapshot(ctx, p, bytes.NewReader(snap.Bytes())); err != nil {
		counter.letGo()
		t.Fatalf("RestoreSnapshot(%d): %v", p, err)
	}
	t.Logf("restored the snapshot of head 5 in %v", time.Since(begin).Round(time.Millisecond))
	before := counter.count()
	counter.letGo()

	checkResync := func(who string, r *heraldv1.ResyncRequired, lastSent uint64) {
		t.Helper()
		if r.GetReason() != heraldv1.ResyncRequired_CURSOR_AHEAD || r.GetChannelId() != ch || r.GetLastSentSeq() != lastSent {
			t.Errorf("%s: got %v, want resync_required CURSOR_AHEAD for %s, last_sent_seq %d", who, r, ch, lastSent)
		}
	}
	// The catching-up subscriber first: its backlog read returns nothing
	// now, and how often it reads meanwhile is the point.
	f, err := catching.read(wsWait)
	reads := counter.count() - before
	t.Logf("backlog reads of %s in the %v after the restore: %d", ch, time.Since(begin).Round(time.Millisecond), reads)
	if err != nil || f.GetResyncRequired() == nil {
		t.Fatalf("catching-up subscriber: got %v, %v after %d backlog reads; want resync_required", f, err, reads)
	}
	checkResync("catching-up subscriber", f.GetResyncRequired(), 8)
	if reads > 20 {
		t.Errorf("backlog reads after the restore: got %d, want a few (no spinning)", reads)
	}
	checkResync("live WebSocket subscriber", live.expectReply("resync_required", "live").GetResyncRequired(), 10)
	checkResync("Connect subscriber", sub.next().GetResyncRequired(), 10)
	sub.ended(0)

	// Resubscribing from the head works on the restored channel.
	again := dialWS(t, n, wsOptions{})
	if head := again.subscribe("again", ch, nil); head != 5 {
		t.Errorf("subscribed.head_seq after the restore: got %d, want 5", head)
	}
	wsPost(t, n, ch, "after the restore")
	if ev := again.nextEvent(); ev.GetSeq() != 6 {
		t.Errorf("event after the restore: got seq %d, want 6", ev.GetSeq())
	}
}
