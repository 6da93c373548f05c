package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
)

// hostileConfig is the node of TestHostileClients: authentication on and
// every limit small, so each trips within the test.
func hostileConfig() gateway.Config {
	return gateway.Config{
		MaxRequestBytes:  64 << 10,
		MaxSubscriptions: 4,
		MaxConnsPerUser:  4,
		MaxPostsPerUser:  30,                     // the well-behaved client posts 20 a second
		PingInterval:     500 * time.Millisecond, // a silent WebSocket is closed after 1.5 s
		AuthTimeout:      time.Second,
		BodyTimeout:      time.Second,
	}
}

// hostileHeaderTimeout is the node's ReadHeaderTimeout in the test.
const hostileHeaderTimeout = time.Second

// TestHostileClients runs attackers against one node while a well-behaved
// client posts and subscribes: malformed Connect envelopes, compression
// bombs, oversize, truncated and reserved-bit frames, invalid UTF-8,
// subscriptions, connections and posts until their limits trip, and
// slow-loris headers, bodies and frames. Every attack must get a clear
// refusal (or its connection closed), the node must stay up and keep
// answering the well-behaved client (its latency is logged, quiet and
// under attack), and every acknowledged post must be in the history once,
// in order, and reach the subscriber.
func TestHostileClients(t *testing.T) {
	t.Parallel()
	attackFor := 3 * time.Second
	if !testing.Short() {
		attackFor = 30 * time.Second
	}
	auth := gateway.NewAuthenticator(authSecret)
	cfg := hostileConfig()
	cfg.Auth = auth
	n := &authNode{node: startNode(t, nodeOptions{gateway: cfg, readHeaderTimeout: hostileHeaderTimeout}), auth: auth}
	admin := clientsFor(n.node, n.mint(t, "root", true, time.Hour))
	for _, ch := range []string{"general", "c1", "c2", "c3", "c4", "c5"} {
		if _, err := admin.Channels.CreateChannel(apiCtx(t), &heraldv1.CreateChannelRequest{ChannelId: ch}); err != nil {
			t.Fatalf("CreateChannel(%q): %v", ch, err)
		}
	}
	aliceTok := n.mint(t, "alice", false, time.Hour)
	alice := clientsFor(n.node, aliceTok)
	if _, err := alice.Channels.JoinChannel(apiCtx(t), &heraldv1.JoinChannelRequest{ChannelId: "general"}); err != nil {
		t.Fatal(err)
	}
	goroutines := runtime.NumGoroutine()

	sub := dialWSToken(t, n.node, aliceTok, "alice")
	sub.subscribe("s", "general", wsSeq(0))
	acked := &ackLog{}
	good := &goodPoster{c: alice, acked: acked}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); good.run(stop) }()

	time.Sleep(time.Second) // the well-behaved client alone: its quiet latency
	good.underAttack.Store(true)
	h := &hostile{n: n, until: time.Now().Add(attackFor), acked: acked}
	runConcurrently(t, map[string]func(*testing.T){
		"malformed envelopes":   h.malformedEnvelopes,
		"compression bombs":     h.compressionBombs,
		"frames":                h.frames,
		"invalid utf-8":         h.invalidUTF8,
		"subscription limit":    h.subscriptionLimit,
		"connection limit":      h.connectionLimit,
		"post rate limit":       h.postRateLimit,
		"slow-loris headers":    h.slowHeaders,
		"slow-loris bodies":     h.slowBodies,
		"slow-loris websockets": h.slowWebSockets,
	})
	close(stop)
	<-done

	quiet, attacked := good.latencies()
	t.Logf("well-behaved posts: %d quiet, p50 %v p99 %v max %v; %d under attack, p50 %v p99 %v max %v; %d failed",
		len(quiet), pct(quiet, 50), pct(quiet, 99), pct(quiet, 100),
		len(attacked), pct(attacked, 50), pct(attacked, 99), pct(attacked, 100), good.failed.Load())
	if good.failed.Load() > 0 || len(attacked) == 0 {
		t.Errorf("well-behaved client: %d posts failed and %d succeeded under attack, want none failed and some succeeded",
			good.failed.Load(), len(attacked))
	}
	if code := healthz(t, n.node); code != http.StatusOK {
		t.Fatalf("GET /healthz after the attacks: got %d, want 200", code)
	}
	checkAcked(t, alice, sub, acked)

	// Every attacker's connection ends: the node holds nothing for them.
	sub.shutdown()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() bool {
		return runtime.NumGoroutine() <= goroutines+30
	})
}

// ackLog records acknowledged posts to general, of every user.
type ackLog struct {
	mu   sync.Mutex // guards following
	seqs []uint64
	by   map[uint64]string // seq → client_msg_id ("" = none)
}

func (a *ackLog) add(m *heraldv1.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.by == nil {
		a.by = make(map[uint64]string)
	}
	a.seqs = append(a.seqs, m.GetSeq())
	a.by[m.GetSeq()] = m.GetClientMsgId()
}

// goodPoster posts to general every 50 ms with a client_msg_id and
// records each post's latency, quiet or under attack.
type goodPoster struct {
	c           apiClients
	acked       *ackLog
	underAttack atomic.Bool
	failed      atomic.Int64

	mu              sync.Mutex // guards following
	quiet, attacked []time.Duration
}

// run posts until stop is closed; a post in flight then completes.
func (g *goodPoster) run(stop <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		attack := g.underAttack.Load()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := g.c.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{
			ChannelId: "general", ClientMsgId: fmt.Sprintf("good-%d", i), Text: fmt.Sprintf("good %d", i)})
		cancel()
		took := time.Since(start)
		if err != nil {
			g.failed.Add(1)
			continue
		}
		g.acked.add(resp.GetMessage())
		g.mu.Lock()
		if attack {
			g.attacked = append(g.attacked, took)
		} else {
			g.quiet = append(g.quiet, took)
		}
		g.mu.Unlock()
	}
}

func (g *goodPoster) latencies() (quiet, attacked []time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.quiet), slices.Clone(g.attacked)
}

// pct returns the p-th percentile of ds (100: the maximum).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

// checkAcked checks that every acknowledged post is in general's history
// exactly once, in seq order, with its client_msg_id, and that the
// subscriber got every event up to the last one without a gap.
func checkAcked(t *testing.T, c apiClients, sub *wsClient, acked *ackLog) {
	t.Helper()
	acked.mu.Lock()
	defer acked.mu.Unlock()
	var history []*heraldv1.Message
	for after := uint64(0); ; {
		resp, err := c.Messages.GetHistory(apiCtx(t), &heraldv1.GetHistoryRequest{
			ChannelId: "general", OldestFirst: true, AfterSeq: after, Limit: 500})
		if err != nil {
			t.Fatalf("GetHistory(general, after %d): %v", after, err)
		}
		history = append(history, resp.GetMessages()...)
		if !resp.GetHasMore() || len(resp.GetMessages()) == 0 {
			break
		}
		after = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq()
	}
	seen := make(map[uint64]int)
	for i, m := range history {
		if i > 0 && m.GetSeq() <= history[i-1].GetSeq() {
			t.Fatalf("history: seq %d after %d, want increasing", m.GetSeq(), history[i-1].GetSeq())
		}
		seen[m.GetSeq()]++
		id, ok := acked.by[m.GetSeq()]
		switch {
		case !ok:
			// Every post that was not refused completed: nothing else may
			// be in the history.
			t.Errorf("history: message %d (%q by %s) was never acknowledged", m.GetSeq(), m.GetText(), m.GetAuthor())
		case id != m.GetClientMsgId():
			t.Errorf("history: seq %d has client_msg_id %q, acknowledged as %q", m.GetSeq(), m.GetClientMsgId(), id)
		}
	}
	var last uint64
	for _, s := range acked.seqs {
		if seen[s] != 1 {
			t.Errorf("acknowledged post %d (%q) is in the history %d times, want once", s, acked.by[s], seen[s])
		}
		last = max(last, s)
	}
	t.Logf("%d acknowledged posts, all in the history; %d messages in it", len(acked.seqs), len(history))
	for want := uint64(1); want <= last; want++ {
		ev := sub.nextEvent()
		if ev.GetSeq() != want {
			t.Fatalf("subscriber: got event %d, want %d", ev.GetSeq(), want)
		}
		if _, ok := acked.by[want]; ok && ev.GetMessagePosted() == nil {
			t.Fatalf("subscriber: event %d is %v, want the acknowledged post", want, ev)
		}
	}
}

// healthz returns the status of GET /healthz.
func healthz(t *testing.T, n *node) int {
	t.Helper()
	req, err := http.NewRequestWithContext(apiCtx(t), http.MethodGet, n.URL+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
