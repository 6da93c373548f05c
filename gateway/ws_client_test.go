package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
)

// wsWait bounds every wait for a frame the server should send: generous,
// so that a loaded -race run does not flake.
const wsWait = 10 * time.Second

// wsOptions tweaks dialWS.
type wsOptions struct {
	binary bool // negotiate herald.v1.proto: binary protobuf frames
	noPong bool // never answer WebSocket pings
	rcvBuf int  // if > 0, the socket's receive buffer in bytes
}

// wsClient is a test WebSocket client of GET /ws. Its read loop decodes
// every ServerFrame into an unbounded mailbox, so a test reads at its own
// pace without the client ever looking slow to the server, unless it is
// paused (pause and resume), which blocks the read loop itself.
type wsClient struct {
	t      *testing.T
	conn   *gws.Conn
	binary bool
	noPong bool

	hello        *heraldv1.Hello // the first frame, once dialWS has read it
	pings, pongs atomic.Int64    // WebSocket-level control frames received

	gate atomic.Pointer[chan struct{}] // non-nil: OnMessage blocks until it is closed

	done     chan struct{} // closed when the read loop has returned
	closed   chan struct{} // closed by OnClose
	closeErr error         // set before closed is closed

	mu     sync.Mutex // guards following
	inbox  []wsInbound
	notify chan struct{} // size 1: a coalesced wake-up for readers
}

// wsInbound is one WebSocket message as received.
type wsInbound struct {
	f      *heraldv1.ServerFrame
	binary bool // opcode was binary
	err    error
}

// dialWS connects to the node's /ws endpoint, checks that the first frame
// is hello, and closes the connection at the end of the test.
func dialWS(t *testing.T, n *node, o wsOptions) *wsClient {
	t.Helper()
	c, err := tryDialWS(t, n, o)
	if err != nil {
		t.Fatalf("dial %s/ws: %v", n.Addr, err)
	}
	f := c.next()
	if f.GetHello() == nil {
		t.Fatalf("first frame: got %v, want hello", f)
	}
	if got := f.GetHello().GetUser(); got != "anonymous" {
		t.Fatalf("hello.user: got %q, want %q", got, "anonymous")
	}
	c.hello = f.GetHello()
	return c
}

// tryDialWS connects without reading anything.
func tryDialWS(t *testing.T, n *node, o wsOptions) (*wsClient, error) {
	t.Helper()
	c := &wsClient{t: t, binary: o.binary, noPong: o.noPong,
		done: make(chan struct{}), closed: make(chan struct{}), notify: make(chan struct{}, 1)}
	opt := &gws.ClientOption{Addr: "ws://" + n.Addr + "/ws", RequestHeader: http.Header{}}
	if o.binary {
		opt.RequestHeader.Set("Sec-WebSocket-Protocol", gateway.ProtoSubprotocol)
	}
	if o.rcvBuf > 0 {
		opt.NewDialer = func() (gws.Dialer, error) {
			return &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = wsSetRcvBuf(fd, o.rcvBuf) }); err != nil {
					return err
				}
				return serr
			}}, nil
		}
	}
	conn, _, err := gws.NewClient(c, opt)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	go func() { // ends when the connection closes; waited for in cleanup
		defer close(c.done)
		conn.ReadLoop()
	}()
	t.Cleanup(c.shutdown)
	return c, nil
}

// shutdown unblocks and closes the connection and waits for its read loop.
func (c *wsClient) shutdown() {
	c.resume()
	_ = c.conn.WriteClose(1000, nil) // best effort: it may be closed already
	select {
	case <-c.done:
	case <-time.After(wsWait):
		c.t.Errorf("websocket read loop still running %v after close", wsWait)
	}
}

// OnOpen implements gws.Event.
func (c *wsClient) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event.
func (c *wsClient) OnClose(_ *gws.Conn, err error) {
	c.closeErr = err
	close(c.closed)
}

// OnPing implements gws.Event: it answers with a pong unless noPong.
func (c *wsClient) OnPing(conn *gws.Conn, payload []byte) {
	c.pings.Add(1)
	if !c.noPong {
		_ = conn.WritePong(payload) // a failed write closes the connection
	}
}

// OnPong implements gws.Event.
func (c *wsClient) OnPong(*gws.Conn, []byte) { c.pongs.Add(1) }

// OnMessage implements gws.Event: it decodes the frame into the inbox,
// after waiting for the gate if the client is paused.
func (c *wsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if g := c.gate.Load(); g != nil {
		<-*g
	}
	in := wsInbound{f: &heraldv1.ServerFrame{}, binary: m.Opcode == gws.OpcodeBinary}
	if in.binary {
		in.err = proto.Unmarshal(m.Bytes(), in.f)
	} else {
		in.err = protojson.Unmarshal(m.Bytes(), in.f)
	}
	if in.err != nil {
		in.err = fmt.Errorf("decode %q: %w", m.Bytes(), in.err)
	}
	c.mu.Lock()
	c.inbox = append(c.inbox, in)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// pause makes the read loop block before handling the next message, so
// that the client stops reading from its socket.
func (c *wsClient) pause() {
	g := make(chan struct{})
	c.gate.Store(&g)
}

// resume lets a paused read loop continue; it is idempotent.
func (c *wsClient) resume() {
	if g := c.gate.Swap(nil); g != nil {
		close(*g)
	}
}

// read returns the next frame, waiting up to timeout. It returns an error
// if none arrives, the connection closes first, or the frame is malformed
// or in the wrong form. It is safe to call from any goroutine.
func (c *wsClient) read(timeout time.Duration) (*heraldv1.ServerFrame, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if len(c.inbox) > 0 {
			in := c.inbox[0]
			c.inbox = c.inbox[1:]
			c.mu.Unlock()
			switch {
			case in.err != nil:
				return nil, in.err
			case in.binary != c.binary:
				return nil, fmt.Errorf("frame %v: got binary=%v, want binary=%v", in.f, in.binary, c.binary)
			}
			return in.f, nil
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-c.closed:
			// Frames may have raced the close: look once more.
			c.mu.Lock()
			empty := len(c.inbox) == 0
			c.mu.Unlock()
			if empty {
				return nil, fmt.Errorf("connection closed (%v) while waiting for a frame", c.closeErr)
			}
		case <-deadline.C:
			return nil, fmt.Errorf("no frame within %v", timeout)
		}
	}
}

// next returns the next frame or fails the test.
func (c *wsClient) next() *heraldv1.ServerFrame {
	c.t.Helper()
	f, err := c.read(wsWait)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

// pending returns how many received frames have not been read yet.
func (c *wsClient) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inbox)
}

// wsKind names the kind of a server frame as in the proto ("hello",
// "subscribed", "event", "error", ...), or "" for none.
func wsKind(f *heraldv1.ServerFrame) string {
	m := f.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("kind"))
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// expect returns the next frame, failing the test unless it is of kind.
// Presence frames are skipped unless kind is presence: other users'
// subscriptions starting and ending announce them at any point (tests
// share channels), and they never bear on the stream's order.
func (c *wsClient) expect(kind string) *heraldv1.ServerFrame {
	c.t.Helper()
	f := c.next()
	for kind != "presence" && wsKind(f) == "presence" {
		f = c.next()
	}
	if got := wsKind(f); got != kind {
		c.t.Fatalf("frame: got %s %v, want %s", got, f, kind)
	}
	return f
}

// expectReply returns the next frame, failing the test unless it is of
// kind and answers the frame with id.
func (c *wsClient) expectReply(kind, id string) *heraldv1.ServerFrame {
	c.t.Helper()
	f := c.expect(kind)
	if f.GetReplyTo() != id {
		c.t.Fatalf("%s.reply_to: got %q, want %q (frame %v)", kind, f.GetReplyTo(), id, f)
	}
	return f
}

// expectError returns the next frame's error, failing the test unless it
// is an error with code that answers id.
func (c *wsClient) expectError(id, code string) *heraldv1.Error {
	c.t.Helper()
	e := c.expectReply("error", id).GetError()
	if e.GetCode() != code {
		c.t.Fatalf("error code: got %q (%q), want %q", e.GetCode(), e.GetMessage(), code)
	}
	if e.GetMessage() == "" {
		c.t.Fatalf("error %q: got an empty message, want one saying what is wrong", code)
	}
	return e
}

// nextEvent returns the next frame's event, failing the test unless it is
// an event.
func (c *wsClient) nextEvent() *heraldv1.Event {
	c.t.Helper()
	return c.expect("event").GetEvent()
}

// expectEvents reads events and checks that their seqs are from..to.
func (c *wsClient) expectEvents(channel string, from, to uint64) {
	c.t.Helper()
	for want := from; want <= to; want++ {
		ev := c.nextEvent()
		if ev.GetSeq() != want || ev.GetChannelId() != channel {
			c.t.Fatalf("event: got %s seq %d, want %s seq %d", ev.GetChannelId(), ev.GetSeq(), channel, want)
		}
	}
}

// encode encodes a client frame in the connection's form.
func (c *wsClient) encode(f *heraldv1.ClientFrame) (gws.Opcode, []byte) {
	c.t.Helper()
	var (
		b   []byte
		err error
	)
	op := gws.OpcodeText
	if c.binary {
		op = gws.OpcodeBinary
		b, err = proto.Marshal(f)
	} else {
		b, err = protojson.Marshal(f)
	}
	if err != nil {
		c.t.Fatalf("encode %v: %v", f, err)
	}
	return op, b
}

// send sends a client frame in the connection's form.
func (c *wsClient) send(f *heraldv1.ClientFrame) {
	c.t.Helper()
	c.sendRaw(c.encode(f))
}

// sendRaw sends one WebSocket message as is.
func (c *wsClient) sendRaw(op gws.Opcode, b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(op, b); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

// sendText sends a text frame as is.
func (c *wsClient) sendText(s string) {
	c.t.Helper()
	c.sendRaw(gws.OpcodeText, []byte(s))
}

// subscribe subscribes to channel after after (nil: from the head) and
// returns subscribed.head_seq.
func (c *wsClient) subscribe(id, channel string, after *uint64) uint64 {
	c.t.Helper()
	c.send(wsSubscribeFrame(id, channel, after))
	f := c.expectReply("subscribed", id)
	if got := f.GetSubscribed().GetChannelId(); got != channel {
		c.t.Fatalf("subscribed.channel_id: got %q, want %q", got, channel)
	}
	return f.GetSubscribed().GetHeadSeq()
}

// ping sends a ping frame and expects its pong next.
func (c *wsClient) ping(id string) {
	c.t.Helper()
	c.send(&heraldv1.ClientFrame{Id: id, Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}})
	c.expectReply("pong", id)
}

// waitClosed waits up to timeout for the connection to close and returns
// why; ok is false if it is still open.
func (c *wsClient) waitClosed(timeout time.Duration) (err error, ok bool) {
	select {
	case <-c.closed:
		return c.closeErr, true
	case <-time.After(timeout):
		return nil, false
	}
}

// isClosed reports whether the connection has closed.
func (c *wsClient) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// closeCode returns the close code the server sent, or 0.
func wsCloseCode(err error) uint16 {
	if ce, ok := errors.AsType[*gws.CloseError](err); ok {
		return ce.Code
	}
	return 0
}

func wsSubscribeFrame(id, channel string, after *uint64) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Id: id, Kind: &heraldv1.ClientFrame_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{ChannelId: channel, AfterSeq: after}}}
}

func wsPostFrame(id, channel, text string) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Id: id, Kind: &heraldv1.ClientFrame_Post{
		Post: &heraldv1.PostMessageRequest{ChannelId: channel, Text: text}}}
}

// wsCreateChannel creates a channel through the Connect API.
func wsCreateChannel(t *testing.T, n *node, id string) {
	t.Helper()
	if _, err := n.Channels.CreateChannel(context.Background(), &heraldv1.CreateChannelRequest{ChannelId: id}); err != nil {
		t.Fatalf("create channel %q: %v", id, err)
	}
}

// wsPost posts through the Connect API and returns the message's seq.
func wsPost(t *testing.T, n *node, channel, text string) uint64 {
	t.Helper()
	seq, err := wsTryPost(n, channel, text)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// wsTryPost is wsPost for goroutines other than the test's.
func wsTryPost(n *node, channel, text string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	resp, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: channel, Text: text})
	if err != nil {
		return 0, fmt.Errorf("post to %q: %w", channel, err)
	}
	return resp.GetMessage().GetSeq(), nil
}

// wsHead returns a channel's head seq through the Connect API.
func wsHead(t *testing.T, n *node, channel string) uint64 {
	t.Helper()
	resp, err := n.Channels.GetChannel(context.Background(), &heraldv1.GetChannelRequest{ChannelId: channel})
	if err != nil {
		t.Fatalf("get channel %q: %v", channel, err)
	}
	return resp.GetChannel().GetHeadSeq()
}

func wsSeq(v uint64) *uint64 { return &v }

// wsFlood posts "i text" to channel for every i from first to last, from
// four posters at a time, and fails the test on the first error.
func wsFlood(t *testing.T, n *node, channel string, first, last int, text string) {
	t.Helper()
	const posters = 4
	var wg sync.WaitGroup
	errs := make(chan error, posters)
	for p := range posters {
		wg.Go(func() {
			for i := first + p; i <= last; i += posters {
				if _, err := wsTryPost(n, channel, fmt.Sprintf("%d %s", i, text)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
