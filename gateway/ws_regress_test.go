package gateway_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/gateway"
)

// A subscriber that reads as fast as the server writes is not a slow
// consumer, however long its backlog: the backlog is read on demand, so it
// is paced by the connection's queue instead of overflowing it.
func TestWSBacklogLongerThanQueue(t *testing.T) {
	const queue, backlog = 16, 300
	n := startNode(t, nodeOptions{gateway: gateway.Config{QueueFrames: queue}})
	wsCreateChannel(t, n, "history")
	for i := range backlog {
		wsPost(t, n, "history", fmt.Sprintf("old %d", i))
	}
	c := dialWS(t, n, wsOptions{})
	if got := c.subscribe("s", "history", wsSeq(0)); got != backlog {
		t.Fatalf("subscribed.head_seq: got %d, want %d", got, backlog)
	}
	for want := uint64(1); want <= backlog; want++ {
		f := c.next()
		if f.GetEvent().GetSeq() != want {
			t.Fatalf("backlog of %d with a queue of %d frames: got %v, want event seq %d", backlog, queue, f, want)
		}
	}
	wsPost(t, n, "history", "new")
	c.expectEvents("history", backlog+1, backlog+1)
}

// A client that stops reading must not hold up the node's shutdown: Close
// says goodbye to every connection and returns even if one of them has a
// full socket.
func TestWSCloseWithStalledClient(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "stall")
	stalled := dialWS(t, n, wsOptions{rcvBuf: 4 << 10})
	stalled.subscribe("s", "stall", nil)
	stalled.pause()
	other := dialWS(t, n, wsOptions{})
	other.subscribe("s", "stall", nil)

	// About 8 MB of events: far more than the socket buffers hold, so the
	// server's writes to the stalled client block.
	const posts = 200
	text := strings.Repeat("s", 39000)
	for i := range posts {
		wsPost(t, n, "stall", fmt.Sprintf("%d %s", i, text))
	}
	other.expectEvents("stall", 1, posts) // every event has been fanned out

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- n.Gateway.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: got %v, want nil", err)
		}
	case <-time.After(wsWait):
		t.Fatalf("Close with a client that does not read: still blocked after %v, want it to return", wsWait)
	}
	if err, ok := other.waitClosed(wsWait); !ok || wsCloseCode(err) != 1001 {
		t.Fatalf("reading client: got closed=%v (%v), want closed with 1001", ok, err)
	}
	t.Logf("Close returned after %v", time.Since(start))
}

// Close while clients keep connecting neither hangs nor panics, and every
// connection ends.
func TestWSCloseWhileDialing(t *testing.T) {
	n := startNode(t, nodeOptions{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var dialed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := tryDialWS(t, n, wsOptions{})
				if err != nil {
					continue // refused: the gateway is closing
				}
				dialed.Add(1)
				c.shutdown()
			}
		})
	}
	checkFor(t, wsWait, time.Millisecond, func() bool { return dialed.Load() >= 20 })
	if err := n.Gateway.Close(); err != nil {
		t.Fatalf("Close: got %v, want nil", err)
	}
	close(stop)
	wg.Wait()
}
