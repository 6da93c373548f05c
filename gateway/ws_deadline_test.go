package gateway_test

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/gateway"
)

// TestWSWriteDeadline checks the deadline of writes to WebSocket clients,
// which is renewed only when it comes near: a subscriber idle for longer
// than WriteTimeout still gets the next event (its deadline was renewed,
// not left in the past), and a client that stops reading, with a queue
// too large to overflow first, is disconnected once a write has blocked
// for about WriteTimeout, while a reading subscriber gets every event.
func TestWSWriteDeadline(t *testing.T) {
	const timeout = time.Second
	n := startNode(t, nodeOptions{gateway: gateway.Config{QueueFrames: 100000, WriteTimeout: timeout}})
	wsCreateChannel(t, n, "d")
	idle := dialWS(t, n, wsOptions{})
	idle.subscribe("i", "d", wsSeq(0))
	stalled := dialWS(t, n, wsOptions{rcvBuf: 4 << 10})
	stalled.subscribe("s", "d", wsSeq(0))
	if _, err := wsTryPost(n, "d", "first"); err != nil {
		t.Fatal(err)
	}
	idle.expectEvents("d", 1, 1)
	stalled.expectEvents("d", 1, 1)

	time.Sleep(timeout + timeout/2) // past the deadline of the last write
	if _, err := wsTryPost(n, "d", "after a pause"); err != nil {
		t.Fatal(err)
	}
	idle.expectEvents("d", 2, 2)
	stalled.expectEvents("d", 2, 2)

	// About 12 MB of events, far more than the socket buffers between the
	// server and the paused client hold.
	stalled.pause()
	const events = 3000
	wsFlood(t, n, "d", 3, events, strings.Repeat("w", 4000))
	idle.expectEvents("d", 3, events)
	start := time.Now()
	stalled.resume()
	if _, closed := stalled.waitClosed(wsWait); !closed {
		t.Fatalf("a client that stopped reading is still connected %v after the flood, with WriteTimeout %v", wsWait, timeout)
	}
	t.Logf("the stalled client was closed; %v after it resumed reading", time.Since(start).Round(time.Millisecond))
	if idle.isClosed() {
		t.Fatal("the reading subscriber was disconnected too")
	}
}
