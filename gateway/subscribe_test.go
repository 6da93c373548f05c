package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/gateway"
)

// subTransports are the HTTP versions a Subscribe stream is tested over.
func subTransports(t *testing.T) []struct {
	name   string
	client *http.Client
} {
	return []struct {
		name   string
		client *http.Client
	}{{"http1", http.DefaultClient}, {"h2c", h2cClient(t)}}
}

// subStream is a Subscribe stream under test, bounded by its own context.
type subStream struct {
	t      *testing.T
	s      *connect.ServerStreamForClient[heraldv1.SubscribeResponse]
	cancel context.CancelFunc
}

// subOpen opens a Subscribe stream; after nil subscribes from the head.
func subOpen(t *testing.T, c heraldv1connect.MessageServiceClient, channel string, after *uint64) *subStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	s, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: channel, AfterSeq: after})
	if err != nil {
		cancel()
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	st := &subStream{t: t, s: s, cancel: cancel}
	t.Cleanup(st.close)
	return st
}

func (st *subStream) close() {
	st.cancel()
	_ = st.s.Close() // best effort: the test is over with this stream
}

// next returns the next response, failing the test if the stream ends.
func (st *subStream) next() *heraldv1.SubscribeResponse {
	st.t.Helper()
	if !st.s.Receive() {
		st.t.Fatalf("stream ended: %v, want another message", st.s.Err())
	}
	return st.s.Msg()
}

// subscribed reads the first message, which must be subscribed, and
// returns its head_seq.
func (st *subStream) subscribed(channel string) uint64 {
	st.t.Helper()
	m := st.next()
	sub := m.GetSubscribed()
	if sub == nil || sub.GetChannelId() != channel {
		st.t.Fatalf("first message: got %v, want subscribed to %q", m, channel)
	}
	return sub.GetHeadSeq()
}

// events reads events from+1 ... to, checking that each seq is the next.
func (st *subStream) events(from, to uint64) []*heraldv1.Event {
	st.t.Helper()
	var evs []*heraldv1.Event
	for seq := from + 1; seq <= to; seq++ {
		m := st.next()
		ev := m.GetEvent()
		if ev == nil || ev.GetSeq() != seq {
			st.t.Fatalf("got %v, want event %d", m, seq)
		}
		evs = append(evs, ev)
	}
	return evs
}

// ended checks that the stream ends next, with code (0: cleanly).
func (st *subStream) ended(code connect.Code) {
	st.t.Helper()
	if st.s.Receive() {
		st.t.Fatalf("got %v, want the stream to end", st.s.Msg())
	}
	err := st.s.Err()
	switch {
	case code == 0 && err != nil:
		st.t.Fatalf("stream ended with %v, want a clean end", err)
	case code != 0 && connect.CodeOf(err) != code:
		st.t.Fatalf("stream ended with %v, want %v", err, code)
	}
}

// subPostN posts n messages to channel and returns the last seq.
func subPostN(t *testing.T, n *node, channel string, count int) uint64 {
	t.Helper()
	var last uint64
	for i := range count {
		last = apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: channel, Text: fmt.Sprintf("m%d", i)}).GetSeq()
	}
	return last
}

func TestSubscribeBacklogThenLive(t *testing.T) {
	n := startNode(t, nodeOptions{})
	for _, tr := range subTransports(t) {
		t.Run(tr.name, func(t *testing.T) {
			c := heraldv1connect.NewMessageServiceClient(tr.client, n.URL)
			id := "bl-" + tr.name
			apiCreate(t, n, id)
			head := subPostN(t, n, id, 5)

			from0 := subOpen(t, c, id, proto.Uint64(0))
			if got := from0.subscribed(id); got != head {
				t.Fatalf("subscribed.head_seq: got %d, want %d", got, head)
			}
			evs := from0.events(0, head)
			for i, ev := range evs {
				if got := ev.GetMessagePosted().GetMessage().GetText(); got != fmt.Sprintf("m%d", i) || ev.GetChannelId() != id {
					t.Errorf("event %d: got %v, want message m%d in %q", ev.GetSeq(), ev, i, id)
				}
			}
			fromHead := subOpen(t, c, id, nil)
			if got := fromHead.subscribed(id); got != head {
				t.Fatalf("subscribed.head_seq without after_seq: got %d, want %d", got, head)
			}
			fromMid := subOpen(t, c, id, proto.Uint64(3))
			if got := fromMid.subscribed(id); got != head {
				t.Fatalf("subscribed.head_seq from 3: got %d, want %d", got, head)
			}
			fromMid.events(3, head)
			atHead := subOpen(t, c, id, proto.Uint64(head))
			atHead.subscribed(id)

			// Live events reach all four, in order, after their backlogs;
			// the one without after_seq gets only these.
			last := subPostN(t, n, id, 4)
			for name, st := range map[string]*subStream{"from 0": from0, "from head": fromHead, "from 3": fromMid, "at head": atHead} {
				t.Run(name, func(t *testing.T) {
					st.t = t
					st.events(head, last)
				})
			}
		})
	}
}

// TestSubscribeTrimmedCursor: with an event retention of 5, a channel of
// 20 posts keeps events 16-20; a subscriber resuming from before them is
// told resync_required CURSOR_EXPIRED with the oldest seq it can resume
// from, on both transports, and one resuming from there gets the rest.
func TestSubscribeTrimmedCursor(t *testing.T) {
	const keep, posts = 5, 20
	n := startNode(t, nodeOptions{partition: func(c *partition.Config) { c.EventRetention = keep }})
	for _, tr := range subTransports(t) {
		t.Run(tr.name, func(t *testing.T) {
			c := heraldv1connect.NewMessageServiceClient(tr.client, n.URL)
			id := "trimmed-" + tr.name
			apiCreate(t, n, id)
			head := subPostN(t, n, id, posts)
			oldest := head - keep + 1
			checkFor(t, 10*time.Second, 10*time.Millisecond, func() bool {
				resp, err := n.Channels.GetChannel(apiCtx(t), &heraldv1.GetChannelRequest{ChannelId: id})
				return err == nil && resp.GetChannel().GetOldestSeq() == oldest
			})
			st := subOpen(t, c, id, proto.Uint64(oldest-2))
			m := st.next()
			r := m.GetResyncRequired()
			if r.GetReason() != heraldv1.ResyncRequired_CURSOR_EXPIRED || r.GetChannelId() != id || r.GetOldestSeq() != oldest {
				t.Fatalf("after_seq %d (oldest %d): got %v, want resync_required CURSOR_EXPIRED with oldest_seq %d",
					oldest-2, oldest, m, oldest)
			}
			st.ended(0)
			st = subOpen(t, c, id, proto.Uint64(oldest-1))
			if got := st.subscribed(id); got != head {
				t.Fatalf("subscribed.head_seq: got %d, want %d", got, head)
			}
			st.events(oldest-1, head)
		})
	}
}

func TestSubscribeEmptyChannel(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "empty")
	st := subOpen(t, n.Messages, "empty", proto.Uint64(0))
	if got := st.subscribed("empty"); got != 0 {
		t.Fatalf("subscribed.head_seq: got %d, want 0", got)
	}
	live := subOpen(t, n.Messages, "empty", nil)
	live.subscribed("empty")
	last := subPostN(t, n, "empty", 3)
	st.events(0, last)
	live.events(0, last)
}

func TestSubscribeCursorAhead(t *testing.T) {
	n := startNode(t, nodeOptions{})
	for _, tr := range subTransports(t) {
		t.Run(tr.name, func(t *testing.T) {
			c := heraldv1connect.NewMessageServiceClient(tr.client, n.URL)
			id := "ahead-" + tr.name
			apiCreate(t, n, id)
			head := subPostN(t, n, id, 3)
			for _, after := range []uint64{head + 1, 1000, 1<<64 - 1} {
				st := subOpen(t, c, id, proto.Uint64(after))
				m := st.next()
				r := m.GetResyncRequired()
				if r.GetReason() != heraldv1.ResyncRequired_CURSOR_AHEAD || r.GetChannelId() != id {
					t.Fatalf("after_seq %d (head %d): got %v, want resync_required CURSOR_AHEAD", after, head, m)
				}
				if r.GetOldestSeq() != 1 {
					t.Errorf("after_seq %d: oldest_seq got %d, want 1", after, r.GetOldestSeq())
				}
				st.ended(0)
			}
		})
	}
}

func TestSubscribeBadRequests(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "general")
	for _, tr := range subTransports(t) {
		for _, tc := range []struct {
			name    string
			channel string
			code    connect.Code
			msg     string
		}{
			{"unknown channel", "nope", connect.CodeNotFound, `channel "nope" not found`},
			{"uppercase id", "General", connect.CodeInvalidArgument, `channel_id "General"`},
			{"empty id", "", connect.CodeInvalidArgument, "channel_id"},
			{"id with '/'", "a/b", connect.CodeInvalidArgument, "channel_id"},
			{"65-character id", strings.Repeat("x", 65), connect.CodeInvalidArgument, "channel_id"},
		} {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				c := heraldv1connect.NewMessageServiceClient(tr.client, n.URL)
				for _, after := range []*uint64{nil, proto.Uint64(0)} {
					st := subOpen(t, c, tc.channel, after)
					if st.s.Receive() {
						t.Fatalf("got %v, want the stream to fail with %v", st.s.Msg(), tc.code)
					}
					wantCode(t, st.s.Err(), tc.code, tc.msg)
				}
			})
		}
	}
	// The node still serves.
	if got := apiChannel(t, n, "general").GetHeadSeq(); got != 0 {
		t.Errorf("head_seq: got %d, want 0", got)
	}
}

// TestSubscribeMidStream starts subscribers while a writer keeps posting:
// each gets its backlog, then live events, with no gap and no duplicate,
// up to the writer's last post.
func TestSubscribeMidStream(t *testing.T) {
	n := startNode(t, nodeOptions{})
	const channel = "busy"
	apiCreate(t, n, channel)
	posts := 300
	if testing.Short() {
		posts = 150
	}

	type reader struct {
		name  string
		at    int     // start when this many posts are acknowledged
		after *uint64 // nil: from the head
		c     heraldv1connect.MessageServiceClient
	}
	h2 := heraldv1connect.NewMessageServiceClient(h2cClient(t), n.URL)
	readers := []reader{
		{"from 0 at start", 0, proto.Uint64(0), n.Messages},
		{"from head at 10", 10, nil, n.Messages},
		{"from 0 at 40", 40, proto.Uint64(0), n.Messages},
		{"from 25 at 60", 60, proto.Uint64(25), h2},
		{"from head at 80 (h2c)", 80, nil, h2},
		{"from 0 at 100 (h2c)", 100, proto.Uint64(0), h2},
	}

	var acked sync.Mutex
	ackCond := sync.NewCond(&acked)
	done := 0
	var wg sync.WaitGroup
	results := make([][]uint64, len(readers))
	heads := make([]uint64, len(readers))
	for i, r := range readers {
		wg.Go(func() {
			acked.Lock()
			for done < r.at {
				ackCond.Wait()
			}
			acked.Unlock()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			s, err := r.c.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: channel, AfterSeq: r.after})
			if err != nil {
				t.Errorf("%s: %v", r.name, err)
				return
			}
			defer s.Close()
			for s.Receive() {
				m := s.Msg()
				if sub := m.GetSubscribed(); sub != nil {
					heads[i] = sub.GetHeadSeq()
					continue
				}
				ev := m.GetEvent()
				if ev == nil {
					t.Errorf("%s: got %v, want events", r.name, m)
					return
				}
				results[i] = append(results[i], ev.GetSeq())
				if ev.GetMessagePosted().GetMessage().GetText() == "last" {
					return
				}
			}
			t.Errorf("%s: stream ended after %d events: %v", r.name, len(results[i]), s.Err())
		})
	}

	var last uint64
	for i := range posts {
		text := fmt.Sprintf("m%d", i)
		if i == posts-1 {
			text = "last"
		}
		last = apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: channel, Text: text}).GetSeq()
		acked.Lock()
		done = i + 1
		ackCond.Broadcast()
		acked.Unlock()
	}
	wg.Wait()

	for i, r := range readers {
		from := heads[i]
		if r.after != nil {
			from = *r.after
		}
		got := results[i]
		ok := len(got) == int(last-from)
		for j := 0; ok && j < len(got); j++ {
			ok = got[j] == from+uint64(j)+1
		}
		if !ok {
			t.Errorf("%s (head_seq %d): got seqs %v, want exactly %d..%d", r.name, heads[i], got, from+1, last)
		} else {
			t.Logf("%s: head_seq %d, %d events", r.name, heads[i], len(got))
		}
	}
}

// TestSubscribeSlowConsumer stops reading a stream while many events are
// posted: the stream delivers what it queued, in order without a gap, then
// resync_required SLOW_CONSUMER naming the last event it delivered, then
// ends. A second subscriber that keeps reading is not affected.
func TestSubscribeSlowConsumer(t *testing.T) {
	n := startNode(t, nodeOptions{gateway: gateway.Config{QueueFrames: 8}})
	// Big, uncompressed events fill the socket buffers (and the HTTP/2
	// flow-control window) quickly, so the server's queue fills up behind
	// them: the kernel holds at most a few MB per socket (net.ipv4.tcp_wmem
	// caps autotuning at 4 MiB by default) and the HTTP/2 client 4 MiB per
	// stream.
	text := strings.Repeat("😀", 40_000) // 160 kB
	for _, tc := range []struct {
		name  string
		h2c   bool
		posts int
	}{
		// 70 events are 11 MB, about twice what the buffers hold.
		{"http1", false, 70},
		{"h2c", true, 70},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "slow-" + tc.name
			apiCreate(t, n, id)
			c := heraldv1connect.NewMessageServiceClient(smallBufferClient(t, tc.h2c), n.URL,
				connect.WithAcceptCompression("gzip", nil, nil))
			slow := subOpen(t, c, id, proto.Uint64(0))
			if got := slow.subscribed(id); got != 0 {
				t.Fatalf("subscribed.head_seq: got %d, want 0", got)
			}
			// A second stream of the same channel keeps reading. With a
			// queue this small it may fall behind too, under a burst; either
			// way it never skips an event.
			fast := subOpen(t, c, id, proto.Uint64(0))
			fast.subscribed(id)
			// Once a stream has event 1, its backlog is behind it and the
			// live pump serves it: a stream still catching up is paced to
			// its reader instead, and would not fall behind.
			apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: id, Text: "first"})
			slow.events(0, 1)
			fast.events(0, 1)
			total := uint64(tc.posts) + 1
			type fastResult struct {
				seqs   []uint64
				resync *heraldv1.ResyncRequired
				err    error
			}
			fastDone := make(chan fastResult, 1)
			go func() {
				// Keep no reference to t: report through the channel.
				var r fastResult
				for fast.s.Receive() {
					m := fast.s.Msg()
					if ev := m.GetEvent(); ev != nil {
						r.seqs = append(r.seqs, ev.GetSeq())
						if ev.GetSeq() == total {
							break
						}
						continue
					}
					r.resync = m.GetResyncRequired()
					break
				}
				r.err = fast.s.Err()
				fastDone <- r
			}()

			// Post from a few goroutines; the slow stream reads nothing.
			var wg sync.WaitGroup
			var mu sync.Mutex
			next := 0
			for range 8 {
				wg.Go(func() {
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= tc.posts {
							return
						}
						if _, err := n.Messages.PostMessage(apiCtx(t), &heraldv1.PostMessageRequest{ChannelId: id, Text: text}); err != nil {
							t.Errorf("post: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()

			// Now read: events 2, 3, ... up to some seq, then the resync.
			lastEvent := uint64(1)
			for {
				m := slow.next()
				if ev := m.GetEvent(); ev != nil {
					if ev.GetSeq() != lastEvent+1 {
						t.Fatalf("slow stream: got event %d after %d, want %d", ev.GetSeq(), lastEvent, lastEvent+1)
					}
					lastEvent = ev.GetSeq()
					if lastEvent == total {
						t.Fatalf("slow stream: got all %d events, want it to fall behind and get SLOW_CONSUMER", total)
					}
					continue
				}
				r := m.GetResyncRequired()
				if r == nil {
					t.Fatalf("slow stream: got %v, want events then resync_required", m)
				}
				if r.GetReason() != heraldv1.ResyncRequired_SLOW_CONSUMER || r.GetChannelId() != id {
					t.Fatalf("slow stream: got %v, want resync_required SLOW_CONSUMER for %q", r, id)
				}
				if r.GetLastSentSeq() != lastEvent {
					t.Fatalf("slow stream: last_sent_seq got %d, want %d, the last event delivered", r.GetLastSentSeq(), lastEvent)
				}
				break
			}
			t.Logf("slow stream: %d of %d events before SLOW_CONSUMER", lastEvent, total)
			slow.ended(0)

			select {
			case r := <-fastDone:
				for i, s := range r.seqs {
					if s != uint64(i)+2 {
						t.Fatalf("second stream: got seq %d after %d events, want %d", s, i+1, i+2)
					}
				}
				got := uint64(len(r.seqs)) + 1
				switch {
				case r.resync != nil:
					t.Logf("second stream: %d events, then %v", got, r.resync)
					if r.resync.GetReason() != heraldv1.ResyncRequired_SLOW_CONSUMER || r.resync.GetLastSentSeq() != got {
						t.Errorf("second stream: got %v after %d events, want SLOW_CONSUMER with last_sent_seq %d", r.resync, got, got)
					}
				case got != total:
					t.Errorf("second stream: got %d events (ended: %v), want %d", got, r.err, total)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("second stream: not all %d events within 30s", total)
			}

			// A resubscribe from last_sent_seq gets the rest.
			again := subOpen(t, c, id, proto.Uint64(lastEvent))
			again.subscribed(id)
			again.events(lastEvent, total)
		})
	}
}

// TestSubscribeEventsMatchHistory checks that the events a subscriber sees
// carry the same messages that history returns.
func TestSubscribeEventsMatchHistory(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "general")
	st := subOpen(t, n.Messages, "general", nil)
	st.subscribed("general")
	var posted []*heraldv1.Message
	for i := range 5 {
		posted = append(posted, apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general",
			Text: fmt.Sprintf("hello %d", i), ClientMsgId: fmt.Sprintf("id-%d", i)}))
	}
	evs := st.events(0, 5)
	for i, ev := range evs {
		if got := ev.GetMessagePosted().GetMessage(); !proto.Equal(got, posted[i]) {
			t.Errorf("event %d: got %v, want the posted message %v", ev.GetSeq(), got, posted[i])
		}
		if !proto.Equal(ev.GetTs(), posted[i].GetTs()) {
			t.Errorf("event %d: ts got %v, want the message's %v", ev.GetSeq(), ev.GetTs(), posted[i].GetTs())
		}
	}
	// A retry appends nothing: the next event is the next change.
	apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "again", ClientMsgId: "id-0"})
	if _, err := n.Messages.AddReaction(apiCtx(t), &heraldv1.AddReactionRequest{ChannelId: "general", Seq: 1, Name: "ok"}); err != nil {
		t.Fatal(err)
	}
	if r := st.events(5, 6)[0].GetReactionAdded(); r.GetMessageSeq() != 1 || r.GetName() != "ok" {
		t.Errorf("event 6: got %v, want reaction ok on 1", r)
	}
}

// TestSubscribeEndsAtClose closes the gateway under an open stream: the
// stream is told to reconnect elsewhere, as a WebSocket is, and ends with
// unavailable rather than hanging.
func TestSubscribeEndsAtClose(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "general")
	streams := map[string]*subStream{}
	for _, tr := range subTransports(t) {
		st := subOpen(t, heraldv1connect.NewMessageServiceClient(tr.client, n.URL), "general", proto.Uint64(0))
		st.subscribed("general")
		streams[tr.name] = st
	}
	if err := n.Gateway.Close(); err != nil {
		t.Fatal(err)
	}
	for name, st := range streams {
		t.Run(name, func(t *testing.T) {
			st.t = t
			if r := st.next().GetReconnect(); r == nil || r.GetReason() == "" ||
				r.GetDelayMs() >= uint32(gateway.DefaultConfig().ReconnectJitter/time.Millisecond) {
				t.Fatalf("got %v, want reconnect with a reason and a delay below the default jitter", r)
			}
			st.ended(connect.CodeUnavailable)
		})
	}
}

// smallBufferClient returns an HTTP client (HTTP/1.1, or h2c) whose
// sockets keep a small, fixed receive buffer, so that a stream it does not
// read backs up at the server soon.
func smallBufferClient(t *testing.T, h2c bool) *http.Client {
	t.Helper()
	d := &net.Dialer{}
	tr := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if tc, ok := c.(*net.TCPConn); ok {
				if err := tc.SetReadBuffer(32 << 10); err != nil {
					c.Close()
					return nil, err
				}
			}
			return c, nil
		},
	}
	if h2c {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
