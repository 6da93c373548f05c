package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
)

func TestWSSubscribeBacklog(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "general")
	var texts []string
	for i := range 5 {
		text := fmt.Sprintf("backlog %d", i+1)
		texts = append(texts, text)
		if got, want := wsPost(t, n, "general", text), uint64(i+1); got != want {
			t.Fatalf("post %q: got seq %d, want %d", text, got, want)
		}
	}

	c := dialWS(t, n, wsOptions{})
	if got := c.subscribe("sub-1", "general", wsSeq(0)); got != 5 {
		t.Fatalf("subscribed.head_seq: got %d, want 5", got)
	}
	for i, want := range texts {
		ev := c.nextEvent()
		if ev.GetSeq() != uint64(i+1) || ev.GetChannelId() != "general" {
			t.Fatalf("event %d: got %s seq %d, want general seq %d", i, ev.GetChannelId(), ev.GetSeq(), i+1)
		}
		m := ev.GetMessagePosted().GetMessage()
		if m.GetText() != want || m.GetSeq() != ev.GetSeq() {
			t.Fatalf("event %d: got message seq %d %q, want seq %d %q", ev.GetSeq(), m.GetSeq(), m.GetText(), ev.GetSeq(), want)
		}
		if ev.GetTs() == nil {
			t.Fatalf("event %d: got no ts, want one", ev.GetSeq())
		}
	}
	c.ping("after-backlog") // nothing more was queued
}

func TestWSLiveWhilePosting(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "live")
	sub := dialWS(t, n, wsOptions{})
	if got := sub.subscribe("s", "live", wsSeq(0)); got != 0 {
		t.Fatalf("subscribed.head_seq: got %d, want 0", got)
	}

	const viaAPI, viaSocket = 30, 20
	var wg sync.WaitGroup
	errs := make(chan error, viaAPI)
	wg.Go(func() {
		for i := range viaAPI {
			if _, err := wsTryPost(n, "live", fmt.Sprintf("api %d", i)); err != nil {
				errs <- err
				return
			}
		}
	})
	poster := dialWS(t, n, wsOptions{})
	fromSocket := map[uint64]string{}
	for i := range viaSocket {
		id, text := fmt.Sprintf("post-%d", i), fmt.Sprintf("socket %d", i)
		poster.send(wsPostFrame(id, "live", text))
		reply := poster.expectReply("reply", id).GetReply()
		m := reply.GetMessage()
		if m.GetText() != text || m.GetChannelId() != "live" || m.GetSeq() == 0 || reply.GetDuplicate() {
			t.Fatalf("reply to %s: got %v, want message %q in live with a seq", id, reply, text)
		}
		fromSocket[m.GetSeq()] = text
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	apiSeen := 0
	for seq := uint64(1); seq <= viaAPI+viaSocket; seq++ {
		ev := sub.nextEvent()
		if ev.GetSeq() != seq {
			t.Fatalf("event: got seq %d, want %d", ev.GetSeq(), seq)
		}
		text := ev.GetMessagePosted().GetMessage().GetText()
		if want, ok := fromSocket[seq]; ok && text != want {
			t.Fatalf("event %d: got text %q, want %q (posted through the socket)", seq, text, want)
		}
		if want := fmt.Sprintf("api %d", apiSeen); strings.HasPrefix(text, "api ") {
			if text != want {
				t.Fatalf("event %d: got text %q, want %q (API posts in order)", seq, text, want)
			}
			apiSeen++
		}
	}
	if apiSeen != viaAPI {
		t.Fatalf("events posted through the API: got %d, want %d", apiSeen, viaAPI)
	}
	sub.ping("end") // no duplicate follows
}

func TestWSReconnectResumes(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "resume")
	for i := range 10 {
		wsPost(t, n, "resume", fmt.Sprintf("m%d", i+1))
	}
	first := dialWS(t, n, wsOptions{})
	first.subscribe("s1", "resume", wsSeq(0))
	var last uint64
	for range 7 { // the client saw only part of the backlog
		last = first.nextEvent().GetSeq()
	}
	first.shutdown()

	for i := 10; i < 20; i++ { // posted while disconnected
		wsPost(t, n, "resume", fmt.Sprintf("m%d", i+1))
	}
	second := dialWS(t, n, wsOptions{})
	if got := second.subscribe("s2", "resume", wsSeq(last)); got != 20 {
		t.Fatalf("subscribed.head_seq: got %d, want 20", got)
	}
	second.expectEvents("resume", last+1, 20)
	for i := 20; i < 25; i++ {
		wsPost(t, n, "resume", fmt.Sprintf("m%d", i+1))
	}
	second.expectEvents("resume", 21, 25)
	second.ping("end") // no duplicate follows
}

func TestWSMidStreamJoin(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "busy")
	total := 1000
	if testing.Short() {
		total = 300
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writerErr error
	wg.Go(func() {
		for i := range total {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := wsTryPost(n, "busy", fmt.Sprintf("w%d", i)); err != nil {
				writerErr = err
				return
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })

	// Join once the writer is well under way, from a cursor in the middle.
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() bool { return wsHead(t, n, "busy") >= uint64(total/3) })
	after := wsHead(t, n, "busy") / 2
	c := dialWS(t, n, wsOptions{})
	head := c.subscribe("join", "busy", wsSeq(after))
	if head < 2*after {
		t.Fatalf("subscribed.head_seq: got %d, want at least %d", head, 2*after)
	}

	want := after + 1
	for want <= uint64(total) {
		f, err := c.read(wsWait)
		if err != nil {
			t.Fatalf("after seq %d (head at subscribe %d): %v", want-1, head, err)
		}
		ev := f.GetEvent()
		if ev == nil || ev.GetSeq() != want {
			t.Fatalf("frame after seq %d: got %v, want event seq %d", want-1, f, want)
		}
		want++
	}
	wg.Wait()
	if writerErr != nil {
		t.Fatal(writerErr)
	}
	if got := wsHead(t, n, "busy"); got != want-1 {
		t.Fatalf("channel head: got %d, want %d (the last seq received)", got, want-1)
	}
	t.Logf("joined after seq %d with head %d; received %d..%d contiguously", after, head, after+1, want-1)
	c.ping("end") // nothing past the head follows
}

func TestWSManySubscribers(t *testing.T) {
	subscribers, posts := 1000, 100
	if testing.Short() {
		subscribers, posts = 200, 50
	}
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "crowd")
	start := time.Now()
	clients := make([]*wsClient, subscribers)
	for i := range clients {
		clients[i] = dialWS(t, n, wsOptions{})
		clients[i].subscribe("s", "crowd", nil)
	}
	dialed := time.Since(start)
	for i := range posts {
		wsPost(t, n, "crowd", fmt.Sprintf("to all %d", i))
	}
	for i, c := range clients {
		for want := uint64(1); want <= uint64(posts); want++ {
			f, err := c.read(wsWait)
			if err != nil {
				t.Fatalf("subscriber %d, waiting for seq %d: %v", i, want, err)
			}
			if got := f.GetEvent().GetSeq(); got != want {
				t.Fatalf("subscriber %d: got %v, want event seq %d", i, f, want)
			}
		}
	}
	// Nothing more is queued to anyone: a ping on each is answered next.
	for i, c := range clients {
		c.send(&heraldv1.ClientFrame{Id: "p", Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}})
		if f, err := c.read(wsWait); err != nil || f.GetPong() == nil {
			t.Fatalf("subscriber %d after %d events: got %v (%v), want pong", i, posts, f, err)
		}
	}
	t.Logf("%d subscribers dialed and subscribed in %v; %d posts delivered to all in %v",
		subscribers, dialed, posts, time.Since(start)-dialed)
}

func TestWSSubscribeOutcomes(t *testing.T) {
	n := startNode(t, nodeOptions{gateway: gateway.Config{MaxSubscriptions: 3}})
	for _, ch := range []string{"a", "b", "c", "d"} {
		wsCreateChannel(t, n, ch)
	}
	for range 3 {
		wsPost(t, n, "a", "before")
	}

	t.Run("after_seq absent starts at the head", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		if got := c.subscribe("s", "a", nil); got != 3 {
			t.Fatalf("subscribed.head_seq: got %d, want 3", got)
		}
		wsPost(t, n, "a", "after")
		if ev := c.nextEvent(); ev.GetSeq() != 4 {
			t.Fatalf("first event: got seq %d, want 4", ev.GetSeq())
		}
	})
	t.Run("after_seq beyond the head", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		head := wsHead(t, n, "a")
		c.send(wsSubscribeFrame("ahead", "a", wsSeq(head+5)))
		r := c.expectReply("resync_required", "ahead").GetResyncRequired()
		if r.GetReason() != heraldv1.ResyncRequired_CURSOR_AHEAD || r.GetChannelId() != "a" {
			t.Fatalf("resync_required: got %v, want CURSOR_AHEAD for channel a", r)
		}
		c.subscribe("again", "a", wsSeq(head)) // not left subscribed
		c.ping("p")
	})
	t.Run("after_seq at the head", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		head := wsHead(t, n, "a")
		if got := c.subscribe("s", "a", wsSeq(head)); got != head {
			t.Fatalf("subscribed.head_seq: got %d, want %d", got, head)
		}
		c.ping("p")
	})
	t.Run("unknown channel", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		c.send(wsSubscribeFrame("nope", "no-such-channel", nil))
		c.expectError("nope", "not_found")
		c.ping("p")
	})
	t.Run("invalid channel id", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		c.send(wsSubscribeFrame("bad", "Not Valid!", nil))
		if e := c.expectError("bad", "invalid_argument"); !strings.Contains(e.GetMessage(), "channel_id") {
			t.Fatalf("error message: got %q, want it to name channel_id", e.GetMessage())
		}
	})
	t.Run("twice to one channel", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		c.subscribe("first", "b", nil)
		c.send(wsSubscribeFrame("second", "b", nil))
		c.expectError("second", "invalid_argument")
		// The first subscription still works, once.
		wsPost(t, n, "b", "x")
		c.nextEvent()
		c.ping("p")
	})
	t.Run("over the subscription limit", func(t *testing.T) {
		c := dialWS(t, n, wsOptions{})
		for _, ch := range []string{"a", "b", "c"} {
			c.subscribe("s-"+ch, ch, nil)
		}
		c.send(wsSubscribeFrame("fourth", "d", nil))
		c.expectError("fourth", "resource_exhausted")
		// Unsubscribing makes room.
		c.send(&heraldv1.ClientFrame{Kind: &heraldv1.ClientFrame_Unsubscribe{
			Unsubscribe: &heraldv1.Unsubscribe{ChannelId: "a"}}})
		c.subscribe("fourth-again", "d", nil)
	})
}

func TestWSUnsubscribeStopsEvents(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "quiet")
	wsCreateChannel(t, n, "other")
	c := dialWS(t, n, wsOptions{})
	c.subscribe("s1", "quiet", nil)
	c.subscribe("s2", "other", nil)
	watcher := dialWS(t, n, wsOptions{})
	watcher.subscribe("w", "quiet", nil)

	wsPost(t, n, "quiet", "one")
	if ev := c.nextEvent(); ev.GetSeq() != 1 {
		t.Fatalf("event: got seq %d, want 1", ev.GetSeq())
	}
	watcher.expectEvents("quiet", 1, 1)

	c.send(&heraldv1.ClientFrame{Id: "u", Kind: &heraldv1.ClientFrame_Unsubscribe{
		Unsubscribe: &heraldv1.Unsubscribe{ChannelId: "quiet"}}})
	c.ping("after-unsubscribe") // the unsubscribe has been handled
	wsPost(t, n, "quiet", "two")
	wsPost(t, n, "other", "still here")
	// Once the watcher has the event, it has been fanned out to every
	// subscriber of the channel: c must not be among them.
	watcher.expectEvents("quiet", 2, 2)
	if ev := c.nextEvent(); ev.GetChannelId() != "other" || ev.GetSeq() != 1 {
		t.Fatalf("event after unsubscribing: got %s seq %d, want other seq 1", ev.GetChannelId(), ev.GetSeq())
	}
	c.ping("last")
	// Unsubscribing from a channel one is not subscribed to is harmless.
	c.send(&heraldv1.ClientFrame{Kind: &heraldv1.ClientFrame_Unsubscribe{
		Unsubscribe: &heraldv1.Unsubscribe{ChannelId: "quiet"}}})
	c.ping("after-second-unsubscribe")
}

func TestWSPlainGetIsRefused(t *testing.T) {
	n := startNode(t, nodeOptions{})
	resp, err := http.Get(n.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body) // best effort: only for the message
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "WebSocket") {
		t.Fatalf("GET /ws without Upgrade: got %d %q, want 400 saying it is a WebSocket endpoint", resp.StatusCode, body)
	}
}

func TestWSPing(t *testing.T) {
	n := startNode(t, nodeOptions{})
	c := dialWS(t, n, wsOptions{})
	c.ping("frame-ping")
	c.send(&heraldv1.ClientFrame{Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}})
	c.expectReply("pong", "")

	if err := c.conn.WritePing([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	checkFor(t, wsWait, 5*time.Millisecond, func() bool { return c.pongs.Load() >= 1 })
	c.ping("still-works")
}

func TestWSBadFrames(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "room")
	tests := []struct {
		name  string
		frame string
		id    string // expected reply_to
		want  string // in the error message
	}{
		{"not json", `hello there`, "", "ClientFrame"},
		{"truncated json", `{"id":"x","ping":{}`, "", "ClientFrame"},
		{"unknown field", `{"id":"x","ping":{},"bogus":1}`, "", "bogus"},
		{"unknown nested field", `{"id":"x","subscribe":{"channelId":"room","bogus":true}}`, "", "bogus"},
		{"empty frame", `{}`, "", "no type"},
		{"id without a type", `{"id":"lonely"}`, "", "no type"},
		{"unknown frame type", `{"id":"x","shout":{}}`, "", "shout"},
		{"two types", `{"id":"x","ping":{},"typing":{"channelId":"room"}}`, "", "ClientFrame"},
		{"id over 64 chars", `{"id":"` + strings.Repeat("i", 65) + `","ping":{}}`, "", "id is 65 bytes"},
		{"json array", `[1,2]`, "", "ClientFrame"},
		{"after_seq not a number", `{"subscribe":{"channelId":"room","afterSeq":"soon"}}`, "", "ClientFrame"},
		{"post with empty text", `{"id":"p","post":{"channelId":"room","text":""}}`, "p", "text"},
		{"post to a bad channel id", `{"id":"p","post":{"channelId":"ROOM","text":"x"}}`, "p", "channel_id"},
		{"post with a bad client_msg_id", `{"id":"p","post":{"channelId":"room","text":"x","clientMsgId":"a b"}}`, "p", "client_msg_id"},
	}
	c := dialWS(t, n, wsOptions{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.sendText(tt.frame)
			e := c.expectError(tt.id, "invalid_argument")
			if !strings.Contains(e.GetMessage(), tt.want) {
				t.Fatalf("frame %s: got message %q, want it to contain %q", tt.frame, e.GetMessage(), tt.want)
			}
			c.ping("ok") // the connection keeps working
		})
	}
	c.t = t
	// 64 characters is allowed, and snake_case names are accepted too.
	id := strings.Repeat("j", 64)
	c.sendText(`{"id":"` + id + `","ping":{}}`)
	c.expectReply("pong", id)
	c.sendText(`{"id":"snake","subscribe":{"channel_id":"room","after_seq":"0"}}`)
	c.expectReply("subscribed", "snake")
}

func TestWSFrameSizeLimit(t *testing.T) {
	n := startNode(t, nodeOptions{gateway: gateway.Config{MaxRequestBytes: 64 << 10}})
	c := dialWS(t, n, wsOptions{})
	big := `{"id":"big","post":{"channelId":"room","text":"` + strings.Repeat("x", 100<<10) + `"}}`
	c.sendText(big)
	e := c.expectError("", "resource_exhausted")
	if !strings.Contains(e.GetMessage(), "limit") {
		t.Fatalf("error message: got %q, want it to state the limit", e.GetMessage())
	}
	c.ping("after-big") // the connection still works

	// Far beyond the limit, the WebSocket layer itself closes (1009).
	huge := dialWS(t, n, wsOptions{})
	huge.sendText(`{"id":"huge","ping":{},"x":"` + strings.Repeat("h", 300<<10) + `"}`)
	if err, ok := huge.waitClosed(wsWait); !ok || wsCloseCode(err) != 1009 {
		t.Fatalf("frame of 300 KiB with a limit of 64 KiB: got closed=%v (%v), want closed with 1009", ok, err)
	}

	// A frame under the limit is handled.
	wsCreateChannel(t, n, "room")
	fits := `{"id":"fits","post":{"channelId":"room","text":"` + strings.Repeat("y", 39000) + `"}}`
	c.sendText(fits)
	if m := c.expectReply("reply", "fits").GetReply().GetMessage(); len(m.GetText()) != 39000 {
		t.Fatalf("reply: got text of %d bytes, want %d", len(m.GetText()), 39000)
	}
}

func TestWSBinaryFrames(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "bin")
	c := dialWS(t, n, wsOptions{binary: true}) // read checks that hello came as binary
	if got := c.conn.SubProtocol(); got != gateway.ProtoSubprotocol {
		t.Fatalf("subprotocol: got %q, want %q", got, gateway.ProtoSubprotocol)
	}
	c.subscribe("s", "bin", wsSeq(0))
	c.send(wsPostFrame("p", "bin", "binary hello"))
	// The reply and the event may come in either order.
	var reply *heraldv1.PostMessageResponse
	var ev *heraldv1.Event
	for reply == nil || ev == nil {
		f := c.next()
		switch {
		case f.GetReply() != nil && f.GetReplyTo() == "p":
			reply = f.GetReply()
		case f.GetEvent() != nil:
			ev = f.GetEvent()
		default:
			t.Fatalf("frame: got %v, want the reply to p or an event", f)
		}
	}
	if !proto.Equal(reply.GetMessage(), ev.GetMessagePosted().GetMessage()) || ev.GetSeq() != 1 {
		t.Fatalf("event: got seq %d %v, want seq 1 with the replied message %v", ev.GetSeq(), ev, reply.GetMessage())
	}
	c.ping("p2")

	// Bad binary frames get binary error frames and the connection stays.
	c.sendRaw(gws.OpcodeBinary, []byte{0xff, 0xff, 0xff})
	c.expectError("", "invalid_argument")
	c.sendRaw(gws.OpcodeBinary, nil) // an empty frame has no type
	c.expectError("", "invalid_argument")
	c.ping("p3")

	// A text client still gets text frames.
	tc := dialWS(t, n, wsOptions{})
	tc.ping("text")
}

func TestWSTyping(t *testing.T) {
	n := startNode(t, nodeOptions{})
	wsCreateChannel(t, n, "chat")
	wsCreateChannel(t, n, "elsewhere")
	alice := dialWS(t, n, wsOptions{})
	bob := dialWS(t, n, wsOptions{})
	carol := dialWS(t, n, wsOptions{}) // on another channel
	alice.subscribe("s", "chat", nil)
	bob.subscribe("s", "chat", nil)
	carol.subscribe("s", "elsewhere", nil)

	alice.send(&heraldv1.ClientFrame{Id: "t1", Kind: &heraldv1.ClientFrame_Typing{
		Typing: &heraldv1.Typing{ChannelId: "chat"}}})
	alice.ping("p") // the sender gets nothing back but its pong
	ty := bob.expect("typing").GetTyping()
	if ty.GetChannelId() != "chat" || ty.GetUser() != "anonymous" {
		t.Fatalf("typing: got %v, want channel chat, user anonymous", ty)
	}
	carol.ping("p") // not relayed to other channels

	alice.send(&heraldv1.ClientFrame{Id: "t2", Kind: &heraldv1.ClientFrame_Typing{
		Typing: &heraldv1.Typing{ChannelId: "elsewhere"}}})
	alice.expectError("t2", "failed_precondition")
	alice.ping("p2")
}

func TestWSSlowConsumer(t *testing.T) {
	// The paused client must outlast the flood, however slow the machine:
	// its stalled write may not time out first.
	n := startNode(t, nodeOptions{gateway: gateway.Config{QueueFrames: 16, WriteTimeout: 5 * time.Minute}})
	wsCreateChannel(t, n, "flood")
	good := dialWS(t, n, wsOptions{})
	good.subscribe("g", "flood", wsSeq(0))
	// A small receive buffer, so that the server's writes to the paused
	// client block soon and its queue overflows.
	slow := dialWS(t, n, wsOptions{rcvBuf: 4 << 10})
	slow.subscribe("s", "flood", wsSeq(0))
	// Both subscriptions must be live before the flood: one still
	// catching up pulls the history only as fast as its client reads, and
	// a paused client is then closed by the write deadline instead.
	if _, err := wsTryPost(n, "flood", "0 first"); err != nil {
		t.Fatal(err)
	}
	good.expectEvents("flood", 1, 1)
	slow.expectEvents("flood", 1, 1)
	slow.pause()

	// About 8 MB of events, far more than the socket buffers between the
	// server and the paused client hold. A few posters at a time keep it
	// quick while the events still come in small batches, which the
	// reading client's 16-frame queue absorbs.
	const events = 2000
	start := time.Now()
	wsFlood(t, n, "flood", 1, events-1, strings.Repeat("z", 4000))
	posted := time.Since(start)
	good.expectEvents("flood", 2, events)
	slow.resume()

	last := uint64(1)
	for {
		f := slow.next()
		if ev := f.GetEvent(); ev != nil {
			if ev.GetSeq() != last+1 {
				t.Fatalf("slow consumer: got seq %d after %d, want %d", ev.GetSeq(), last, last+1)
			}
			last = ev.GetSeq()
			continue
		}
		r := f.GetResyncRequired()
		if r == nil {
			t.Fatalf("slow consumer after seq %d: got %v, want an event or resync_required", last, f)
		}
		if r.GetReason() != heraldv1.ResyncRequired_SLOW_CONSUMER || r.GetChannelId() != "flood" ||
			r.GetLastSentSeq() != last || f.GetReplyTo() != "s" {
			t.Fatalf("resync_required: got %v (reply_to %q), want SLOW_CONSUMER for flood, last_sent_seq %d, reply_to s",
				r, f.GetReplyTo(), last)
		}
		break
	}
	if last >= events {
		t.Fatalf("slow consumer: got all %d events before resync_required, want a prefix", last)
	}
	err, ok := slow.waitClosed(wsWait)
	if !ok {
		t.Fatalf("slow consumer: still open %v after resync_required, want closed", wsWait)
	}
	if slow.pending() != 0 {
		f, _ := slow.read(0)
		t.Fatalf("slow consumer: got %v after resync_required, want nothing", f)
	}
	t.Logf("%d posts in %v; slow consumer got %d events, then resync_required (close: %v)", events, posted, last, err)
	good.ping("end")
}

// TestWSShutdownClosesClients: a gateway that shuts down tells every
// connection, JSON and binary, to reconnect after a random delay below
// ReconnectJitter, then closes it with 1001; after that it refuses
// upgrades.
func TestWSShutdownClosesClients(t *testing.T) {
	const jitter = 300 * time.Millisecond
	n := startNode(t, nodeOptions{gateway: gateway.Config{ReconnectJitter: jitter}})
	wsCreateChannel(t, n, "bye")
	a := dialWS(t, n, wsOptions{})
	b := dialWS(t, n, wsOptions{binary: true})
	a.subscribe("s", "bye", nil)

	done := make(chan error, 1)
	go func() { done <- n.Gateway.Close() }()
	for _, c := range []*wsClient{a, b} {
		r := c.expect("reconnect").GetReconnect()
		if r.GetDelayMs() >= uint32(jitter/time.Millisecond) || r.GetReason() == "" {
			t.Errorf("reconnect: got %v, want a reason and delay_ms below %d", r, jitter/time.Millisecond)
		}
		err, ok := c.waitClosed(wsWait)
		if !ok {
			t.Fatalf("connection still open %v after Close", wsWait)
		}
		if got := wsCloseCode(err); got != 1001 {
			t.Fatalf("close: got %v (code %d), want code 1001", err, got)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: got %v, want nil", err)
		}
	case <-time.After(wsWait):
		t.Fatalf("Close did not return within %v", wsWait)
	}
	if c, err := tryDialWS(t, n, wsOptions{}); err == nil {
		if f, err := c.read(wsWait); err == nil {
			t.Fatalf("dial after Close: got frame %v, want the upgrade refused", f)
		}
	}
}

// TestWSResumeAfterShutdown: a client told to reconnect comes back (here
// to the node restarted on the same data, standing in for another node)
// and resumes with the last seq it got: it gets every later event, the
// ones posted while it was away first, and nothing twice.
func TestWSResumeAfterShutdown(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, nodeOptions{dir: dir, gateway: gateway.Config{ReconnectJitter: time.Millisecond}})
	wsCreateChannel(t, n, "again")
	c := dialWS(t, n, wsOptions{})
	c.subscribe("s", "again", proto.Uint64(0))
	last := subPostN(t, n, "again", 3)
	c.expectEvents("again", 1, last)
	n.stop()
	c.expect("reconnect")
	if _, ok := c.waitClosed(wsWait); !ok {
		t.Fatalf("connection still open %v after the node stopped", wsWait)
	}

	n = startNode(t, nodeOptions{dir: dir})
	away := subPostN(t, n, "again", 2)
	c = dialWS(t, n, wsOptions{})
	if head := c.subscribe("s", "again", proto.Uint64(last)); head != away {
		t.Fatalf("subscribed head_seq: got %d, want %d", head, away)
	}
	now := subPostN(t, n, "again", 1)
	c.expectEvents("again", last+1, now)
	if c.pending() != 0 {
		f, _ := c.read(0)
		t.Fatalf("after event %d: got %v, want nothing more", now, f)
	}
}

func TestWSHeartbeat(t *testing.T) {
	const interval = 200 * time.Millisecond
	n := startNode(t, nodeOptions{gateway: gateway.Config{PingInterval: interval}})
	alive := dialWS(t, n, wsOptions{})
	mute := dialWS(t, n, wsOptions{noPong: true})
	start := time.Now()
	if got := alive.hello.GetHeartbeatIntervalMs(); got != uint32(interval/time.Millisecond) {
		t.Fatalf("hello.heartbeat_interval_ms: got %d, want %d", got, interval/time.Millisecond)
	}

	err, ok := mute.waitClosed(30 * interval)
	if !ok {
		t.Fatalf("silent client: still open after %v, want closed after about %v", 30*interval, 3*interval)
	}
	closedAfter := time.Since(start)
	if mute.pings.Load() == 0 {
		t.Fatalf("silent client: got no WebSocket ping before the close, want some")
	}
	// The client that answers pings outlives many intervals.
	checkFor(t, wsWait, 10*time.Millisecond, func() bool { return alive.pings.Load() >= 8 })
	if alive.isClosed() {
		t.Fatalf("answering client: closed after %d pings, want open", alive.pings.Load())
	}
	alive.ping("p")
	t.Logf("silent client closed after %v (%v); answering client got %d pings", closedAfter, err, alive.pings.Load())
}
