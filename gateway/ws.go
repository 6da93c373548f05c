package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/lxzan/gws"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// closeWait bounds how long Close waits for a connection to take its
// close frame.
const closeWait = time.Second

// typingInterval is the least time between two typing frames of a user
// relayed for one channel, however many connections they have; extra
// ones are dropped (hub.typingFrom).
const typingInterval = 3 * time.Second

// wsServer is the WebSocket endpoint GET /ws. Each connection gets one read
// loop goroutine (gws ReadLoop), which handles its frames in order; writes
// go through gws's per-connection queue, bounded by wsConn's counter. One
// goroutine pings every connection. All of them are owned by wsServer and
// waited for in close.
type wsServer struct {
	s        *Server
	ctx      context.Context
	text     *gws.Upgrader // protojson frames
	binary   *gws.Upgrader // protobuf frames (subprotocol herald.v1.proto)
	readWait time.Duration
	wg       sync.WaitGroup

	mu     sync.Mutex // guards following
	conns  map[*wsConn]struct{}
	closed bool
}

func newWSServer(ctx context.Context, s *Server) *wsServer {
	w := &wsServer{s: s, ctx: ctx, conns: make(map[*wsConn]struct{}),
		readWait: 3 * s.cfg.PingInterval}
	opt := func(subprotocols []string) *gws.ServerOption {
		return &gws.ServerOption{
			// Frames over MaxRequestBytes get a resource_exhausted error
			// frame; gws itself closes (1009) only far beyond that.
			ReadMaxPayloadSize: 4 * s.cfg.MaxRequestBytes,
			CheckUtf8Enabled:   true,
			Recovery:           gws.Recovery,
			Logger:             gwsLogger{s.log},
			HandshakeTimeout:   5 * time.Second,
			SubProtocols:       subprotocols,
		}
	}
	h := &wsHandler{w: w}
	w.text = gws.NewUpgrader(h, opt(nil))
	w.binary = gws.NewUpgrader(h, opt([]string{ProtoSubprotocol}))
	w.wg.Go(w.pingLoop)
	return w
}

type gwsLogger struct {
	log interface{ Error(string, ...any) }
}

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", fmt.Sprint(v...)) }

// ServeHTTP upgrades the request and starts the connection's read loop.
func (w *wsServer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(rw, "GET /ws is a WebSocket endpoint: send Upgrade: websocket", http.StatusBadRequest)
		return
	}
	up := w.text
	binary := false
	for _, p := range strings.Split(r.Header.Get("Sec-WebSocket-Protocol"), ",") {
		if strings.TrimSpace(p) == ProtoSubprotocol {
			up, binary = w.binary, true
		}
	}
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		http.Error(rw, "node is shutting down", http.StatusServiceUnavailable)
		return
	}
	id, ok := w.upgradeIdentity(rw, r)
	if !ok {
		return // answered
	}
	c, err := up.Upgrade(rw, r)
	if err != nil {
		if id != nil {
			w.s.conns.release(id.User)
		}
		return // gws has answered the client
	}
	ctx, cancel := context.WithCancel(w.ctx)
	conn := &wsConn{w: w, c: c, binary: binary,
		ctx: ctx, cancel: cancel, subs: make(map[string]*subscription), drained: make(chan struct{}, 1),
		posts: make(chan struct{}, max(w.s.cfg.QueueFrames/2, 1))}
	if id != nil {
		conn.id, conn.counted = *id, true
		conn.authed.Store(true)
	}
	c.Session().Store("conn", conn)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		cancel()
		_ = c.WriteClose(1001, []byte("node is shutting down")) // best effort
		return
	}
	w.conns[conn] = struct{}{}
	w.wg.Go(c.ReadLoop) // under mu: close cannot be waiting yet
	w.mu.Unlock()
}

// connections is the number of WebSocket connections open.
func (w *wsServer) connections() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

// queued is the number of frames queued to connections and not yet
// written, summed over connections.
func (w *wsServer) queued() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for k := range w.conns {
		n += k.pending.Load()
	}
	return n
}

func (w *wsServer) pingLoop() {
	t := time.NewTicker(w.s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		for conn := range w.conns {
			conn.c.Async(func() {
				conn.renewWriteDeadline()
				_ = conn.c.WritePing(nil) // a failed write closes the conn
			})
		}
		w.mu.Unlock()
	}
}

// close tells every connection to reconnect elsewhere (a reconnect frame),
// says goodbye (1001 going away) and waits for their read loops and the
// ping loop.
func (w *wsServer) close() {
	w.mu.Lock()
	w.closed = true
	conns := make([]*wsConn, 0, len(w.conns))
	for c := range w.conns {
		conns = append(conns, c)
	}
	w.mu.Unlock()
	// A client that does not read must not hold up the shutdown, nor the
	// goodbye to the others: each connection gets closeWait, in parallel,
	// after which its blocked write (and so the close frame behind it)
	// fails, which also ends its read loop.
	var closing sync.WaitGroup
	for _, c := range conns {
		closing.Go(func() {
			_ = c.c.SetWriteDeadline(time.Now().Add(closeWait)) // fails only if closed
			f := &heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Reconnect{Reconnect: w.s.reconnect()}}
			if b, err := encodeServerFrame(f, c.binary); err == nil {
				_ = c.c.WriteMessage(c.opcode(), b) // best effort, as the close
			}
			_ = c.c.WriteClose(1001, []byte("node is shutting down")) // best effort
		})
	}
	closing.Wait()
	w.wg.Wait()
}

// wsConn is one WebSocket connection: a sink for its subscriptions. The
// read loop owns subs (it alone changes them, under mu, which the
// slow-consumer path also takes).
type wsConn struct {
	w      *wsServer
	c      *gws.Conn
	binary bool
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by the read loop: who the connection is, once authenticated.
	id      Identity
	counted bool // the connection counts towards id.User's limit
	authed  atomic.Bool
	timer   atomic.Pointer[time.Timer] // the auth deadline, then the token expiry

	// writeDeadline is the write deadline last set; only gws's write
	// queue touches it (renewWriteDeadline).
	writeDeadline time.Time

	pending    atomic.Int64 // frames queued to gws and not yet written
	overflowed atomic.Bool
	drained    chan struct{} // size 1: a coalesced signal that pending fell
	posts      chan struct{} // a slot per pipelined post in flight

	mu   sync.Mutex // guards following
	subs map[string]*subscription
}

func (k *wsConn) limit() int64 { return int64(k.w.s.cfg.QueueFrames) }

// write queues an encoded event or control frame, refusing it once the
// queue is full.
func (k *wsConn) write(b []byte) bool {
	if k.overflowed.Load() {
		return false
	}
	if k.pending.Add(1) > k.limit() {
		k.pending.Add(-1)
		k.overflow()
		return false
	}
	k.enqueue(b)
	return true
}

// enqueue hands a counted frame to gws's write queue. Every write gets a
// deadline, so a client that stops reading fails its write (and the
// connection closes) instead of holding the queue forever.
func (k *wsConn) enqueue(b []byte) {
	k.c.Async(func() {
		k.renewWriteDeadline()
		_ = k.c.WriteMessage(k.opcode(), b) // a failed write closes the conn
		k.pending.Add(-1)
		select {
		case k.drained <- struct{}{}:
		default:
		}
	})
}

// renewWriteDeadline gives the write that follows a deadline between
// three quarters of WriteTimeout and WriteTimeout away. It sets one only
// when the last is nearer than that: setting it for every write (which
// resets the poller's timer) was 5% of a node's CPU under fan-out. Only
// jobs on gws's write queue, which runs them one at a time, call it.
func (k *wsConn) renewWriteDeadline() {
	now, timeout := time.Now(), k.w.s.cfg.WriteTimeout
	if k.writeDeadline.Sub(now) >= timeout-timeout/4 {
		return
	}
	k.writeDeadline = now.Add(timeout)
	_ = k.c.SetWriteDeadline(k.writeDeadline) // fails only if closed
}

func (k *wsConn) waitRoom(ctx context.Context, n int) int {
	want := min(n, max(1, int(k.limit())/2))
	for !k.overflowed.Load() {
		if room := int(k.limit() - k.pending.Load()); room >= want {
			return min(n, room)
		}
		select {
		case <-k.drained:
		case <-ctx.Done():
			return 0
		case <-k.ctx.Done():
			return 0
		}
	}
	return 0
}

func (k *wsConn) opcode() gws.Opcode {
	if k.binary {
		return gws.OpcodeBinary
	}
	return gws.OpcodeText
}

func (k *wsConn) deliverEvent(o *outEvent) bool {
	b, err := o.frame(k.binary)
	if err != nil {
		k.w.s.log.Error("encode event", "channel", o.ev.GetChannelId(), "err", err)
		return false
	}
	return k.write(b)
}

func (k *wsConn) deliver(f *heraldv1.ServerFrame) bool {
	b, err := encodeServerFrame(f, k.binary)
	if err != nil {
		k.w.s.log.Error("encode frame", "err", err)
		return false
	}
	return k.write(b)
}

// send queues a reply, error or resync frame. These answer the client's
// own requests, so they are not refused while events are, but they count:
// a client that sends requests and never reads the answers overflows at
// twice the queue bound.
func (k *wsConn) send(f *heraldv1.ServerFrame) {
	b, err := encodeServerFrame(f, k.binary)
	if err != nil {
		k.w.s.log.Error("encode frame", "err", err)
		return
	}
	if k.pending.Add(1) > 2*k.limit() && !k.overflowed.Load() {
		k.pending.Add(-1)
		k.overflow()
		return
	}
	k.enqueue(b)
}

func (k *wsConn) end(s *subscription, resync *heraldv1.ResyncRequired, err error) {
	k.mu.Lock()
	if k.subs[s.channel] == s {
		delete(k.subs, s.channel)
	}
	k.mu.Unlock()
	if resync != nil {
		k.send(&heraldv1.ServerFrame{ReplyTo: s.replyTo,
			Kind: &heraldv1.ServerFrame_ResyncRequired{ResyncRequired: resync}})
		return
	}
	k.sendError(s.replyTo, connectError(k.w.s.log, err))
}

// overflow ends every subscription with resync_required SLOW_CONSUMER and
// closes the connection once the queued frames are written. It runs the
// work on its own goroutine: the hub calls it with a topic lock held.
func (k *wsConn) overflow() {
	if !k.overflowed.CompareAndSwap(false, true) {
		return
	}
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	if k.w.closed {
		return // close is saying goodbye to every connection
	}
	k.w.wg.Go(func() {
		k.mu.Lock()
		subs := k.subs
		k.subs = map[string]*subscription{}
		k.mu.Unlock()
		for _, s := range subs {
			sent, _ := k.w.s.hub.unsubscribe(s)
			resync := &heraldv1.ResyncRequired{ChannelId: s.channel,
				Reason: heraldv1.ResyncRequired_SLOW_CONSUMER, LastSentSeq: sent}
			k.w.s.m.resync(resync)
			k.send(&heraldv1.ServerFrame{ReplyTo: s.replyTo, Kind: &heraldv1.ServerFrame_ResyncRequired{
				ResyncRequired: resync}})
		}
		k.c.Async(func() { _ = k.c.WriteClose(1008, []byte("slow consumer")) })
	})
}

func (k *wsConn) sendError(replyTo string, ce *connect.Error) {
	k.send(&heraldv1.ServerFrame{ReplyTo: replyTo, Kind: &heraldv1.ServerFrame_Error{Error: wireError(ce)}})
}

// pipelinePost sends a post with a client_msg_id on its way without
// waiting for it: the read loop goes on to the next frame, and the reply
// follows once the post is durable. Posts are proposed in the order their
// frames arrive; with QueueFrames/2 in flight, the read loop waits for one
// to finish.
func (k *wsConn) pipelinePost(id string, req *heraldv1.PostMessageRequest) {
	select {
	case k.posts <- struct{}{}:
	case <-k.ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(withIdentity(k.ctx, k.id), 10*time.Second)
	wait := k.w.s.submitPost(ctx, req)
	go func() {
		defer func() { <-k.posts }()
		defer cancel()
		resp, ce := wait()
		if ce != nil {
			k.sendError(id, ce)
			return
		}
		k.send(&heraldv1.ServerFrame{ReplyTo: id, Kind: &heraldv1.ServerFrame_Reply{Reply: resp}})
	}()
}

// wsHandler receives gws's events. gws calls them on the connection's read
// loop goroutine, one at a time.
type wsHandler struct{ w *wsServer }

func connOf(c *gws.Conn) *wsConn {
	v, _ := c.Session().Load("conn")
	k, _ := v.(*wsConn)
	return k
}

func (h *wsHandler) OnOpen(c *gws.Conn) {
	k := connOf(c)
	_ = c.SetReadDeadline(time.Now().Add(h.w.readWait)) // fails only if closed
	if k.authed.Load() {
		k.hello("")
		return
	}
	k.arm(h.w.s.cfg.AuthTimeout, func() {
		if !k.authed.Load() {
			k.fail("", connect.NewError(connect.CodeUnauthenticated, fmt.Errorf(
				"no auth frame within %v: send {\"auth\":{\"token\":\"TOKEN\"}} first, or an Authorization header", h.w.s.cfg.AuthTimeout)))
		}
	})
}

func (h *wsHandler) OnClose(c *gws.Conn, _ error) {
	k := connOf(c)
	k.cancel()
	if t := k.timer.Load(); t != nil {
		t.Stop()
	}
	if k.counted {
		h.w.s.conns.release(k.id.User)
	}
	h.w.mu.Lock()
	delete(h.w.conns, k)
	h.w.mu.Unlock()
	k.mu.Lock()
	subs := k.subs
	k.subs = map[string]*subscription{}
	k.mu.Unlock()
	for _, s := range subs {
		h.w.s.hub.unsubscribe(s)
	}
}

func (h *wsHandler) OnPing(c *gws.Conn, payload []byte) {
	_ = c.SetReadDeadline(time.Now().Add(h.w.readWait)) // fails only if closed
	_ = c.WritePong(payload)                            // a failed write closes the conn
}

func (h *wsHandler) OnPong(c *gws.Conn, _ []byte) {
	_ = c.SetReadDeadline(time.Now().Add(h.w.readWait)) // fails only if closed
}

func (h *wsHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.SetReadDeadline(time.Now().Add(h.w.readWait)) // fails only if closed
	k := connOf(c)
	if n := m.Data.Len(); n > h.w.s.cfg.MaxRequestBytes {
		k.refuse(connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"frame is %d bytes; the limit is %d", n, h.w.s.cfg.MaxRequestBytes)))
		return
	}
	f, err := decodeClientFrame(m.Bytes(), m.Opcode == gws.OpcodeBinary)
	if err != nil {
		k.refuse(invalid(strings.TrimPrefix(err.Error(), errFrame.Error()+": ")))
		return
	}
	k.handle(f)
}

// refuse answers a frame the connection could not take with ce; before the
// connection has authenticated, whatever it sent is not the auth frame it
// owed, and it is refused and closed instead.
func (k *wsConn) refuse(ce *connect.Error) {
	if !k.authed.Load() {
		k.fail("", connect.NewError(connect.CodeUnauthenticated, errFirstFrame))
		return
	}
	k.sendError("", ce)
}

// handle answers one client frame, on the read loop.
func (k *wsConn) handle(f *heraldv1.ClientFrame) {
	if !k.authed.Load() {
		k.authenticate(f)
		return
	}
	ctx, cancel := context.WithTimeout(withIdentity(k.ctx, k.id), 10*time.Second)
	defer cancel()
	id := f.GetId()
	switch kind := f.GetKind().(type) {
	case *heraldv1.ClientFrame_Auth:
		k.reauthenticate(id, kind.Auth.GetToken())
	case *heraldv1.ClientFrame_Ping:
		k.send(&heraldv1.ServerFrame{ReplyTo: id, Kind: &heraldv1.ServerFrame_Pong{Pong: &heraldv1.Pong{}}})
	case *heraldv1.ClientFrame_Post:
		if kind.Post.GetClientMsgId() != "" {
			k.pipelinePost(id, kind.Post)
			return
		}
		resp, err := k.w.s.post(ctx, kind.Post)
		if err != nil {
			k.sendError(id, connectError(k.w.s.log, err))
			return
		}
		k.send(&heraldv1.ServerFrame{ReplyTo: id, Kind: &heraldv1.ServerFrame_Reply{Reply: resp}})
	case *heraldv1.ClientFrame_Subscribe:
		k.subscribe(ctx, id, kind.Subscribe)
	case *heraldv1.ClientFrame_Unsubscribe:
		k.mu.Lock()
		s := k.subs[kind.Unsubscribe.GetChannelId()]
		delete(k.subs, kind.Unsubscribe.GetChannelId())
		k.mu.Unlock()
		if s != nil {
			k.w.s.hub.unsubscribe(s)
		}
	case *heraldv1.ClientFrame_Typing:
		k.typingFrame(id, kind.Typing.GetChannelId())
	}
}

func (k *wsConn) subscribe(ctx context.Context, id string, req *heraldv1.SubscribeRequest) {
	channel := req.GetChannelId()
	if err := storage.ValidateChannelID(channel); err != nil {
		k.sendError(id, connectError(k.w.s.log, err))
		return
	}
	k.mu.Lock()
	_, dup := k.subs[channel]
	n := len(k.subs)
	k.mu.Unlock()
	switch {
	case dup:
		k.sendError(id, invalid(fmt.Sprintf("already subscribed to channel %q; unsubscribe first", channel)))
		return
	case n >= k.w.s.cfg.MaxSubscriptions:
		k.sendError(id, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"a connection may hold at most %d subscriptions", k.w.s.cfg.MaxSubscriptions)))
		return
	}
	s, err := k.w.s.hub.subscribe(ctx, k.id.Caller, k, channel, req.AfterSeq, id)
	if re, ok := errors.AsType[*resyncError](err); ok {
		k.send(&heraldv1.ServerFrame{ReplyTo: id, Kind: &heraldv1.ServerFrame_ResyncRequired{
			ResyncRequired: re.resync}})
		return
	}
	if err != nil {
		k.sendError(id, connectError(k.w.s.log, err))
		return
	}
	k.mu.Lock()
	k.subs[channel] = s
	k.mu.Unlock()
	if k.overflowed.Load() || k.ctx.Err() != nil || s.isEnded() {
		// The connection overflowed or closed, or the hub ended the
		// subscription, while it was being set up.
		k.mu.Lock()
		if k.subs[channel] == s {
			delete(k.subs, channel)
		}
		k.mu.Unlock()
		k.w.s.hub.unsubscribe(s)
	}
}

func (k *wsConn) typingFrame(id, channel string) {
	k.mu.Lock()
	_, subscribed := k.subs[channel]
	k.mu.Unlock()
	if !subscribed {
		k.sendError(id, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"subscribe to channel %q before sending typing", channel)))
		return
	}
	k.w.s.hub.typingFrom(channel, k, k.id.User) // limited per user and channel
}
