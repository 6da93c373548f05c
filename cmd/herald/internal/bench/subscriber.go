package bench

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// protoSubprotocol asks the gateway for binary protobuf frames
// (gateway.ProtoSubprotocol; cmd does not import the gateway for it).
const protoSubprotocol = "herald.v1.proto"

// subscriber is one WebSocket client of GET /ws subscribed to one channel.
// gws runs its handlers on the connection's read loop, one goroutine that
// dial starts and close waits for; the loop ends when the connection
// closes, by close or by the server.
type subscriber struct {
	f       *fanout
	channel int // index into f.channels
	binary  bool
	conn    *gws.Conn
	check   orderCheck

	ready   chan uint64                // size 1: head_seq of the subscribed frame
	done    chan struct{}              // closed when the read loop has returned
	closing atomic.Bool                // close has begun: a close is not reported
	retry   atomic.Pointer[time.Timer] // a pending resubscribe
}

// subscribeID is the id of subscribe frames: the gateway's answers to
// them, and the error that ends a subscription, carry it as reply_to.
const subscribeID = "sub"

// resubscribeWait is how long a subscriber whose subscription ended with
// an error waits before it subscribes again.
const resubscribeWait = 100 * time.Millisecond

// dial connects s to addr, subscribes it to its channel from the head and
// waits for the subscribed frame.
func (s *subscriber) dial(ctx context.Context, addr string) error {
	s.ready, s.done = make(chan uint64, 1), make(chan struct{})
	opt := &gws.ClientOption{Addr: "ws://" + addr + "/ws", RequestHeader: http.Header{},
		HandshakeTimeout: 10 * time.Second, Recovery: gws.Recovery}
	if s.binary {
		opt.RequestHeader.Set("Sec-WebSocket-Protocol", protoSubprotocol)
	}
	conn, _, err := gws.NewClient(s, opt)
	if err != nil {
		close(s.done)
		return fmt.Errorf("bench: connect to ws://%s/ws: %w", addr, err)
	}
	s.conn = conn
	go func() { // ends when the connection closes; close waits for it
		defer close(s.done)
		conn.ReadLoop()
	}()
	channel := s.f.channels[s.channel]
	if err := s.subscribe(nil); err != nil {
		return fmt.Errorf("bench: subscribe to %s via %s: %w", channel, addr, err)
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-s.ready:
		return nil
	case <-s.done:
		return fmt.Errorf("bench: subscribe to %s via %s: the connection closed first", channel, addr)
	case <-t.C:
		return fmt.Errorf("bench: subscribe to %s via %s: no subscribed frame within 30s", channel, addr)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// subscribe sends the subscribe frame: from the head (after nil), or for
// every event after *after.
func (s *subscriber) subscribe(after *uint64) error {
	sub := &heraldv1.ClientFrame{Id: subscribeID, Kind: &heraldv1.ClientFrame_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{ChannelId: s.f.channels[s.channel], AfterSeq: after}}}
	var (
		b   []byte
		err error
	)
	op := gws.OpcodeText
	if s.binary {
		op = gws.OpcodeBinary
		b, err = proto.Marshal(sub)
	} else {
		b, err = protojson.Marshal(sub)
	}
	if err != nil {
		return err
	}
	return s.conn.WriteMessage(op, b)
}

// resubscribe subscribes again, after resubscribeWait, from the last seq
// that arrived in order, as a client does whose subscription ended with an
// error; the check goes on across the splice.
func (s *subscriber) resubscribe() {
	t := time.AfterFunc(resubscribeWait, func() {
		if s.closing.Load() {
			return
		}
		after := s.check.last()
		_ = s.subscribe(&after) // a failed write closes the connection, which is reported
	})
	if old := s.retry.Swap(t); old != nil {
		old.Stop()
	}
}

// order returns the subscriber's channel (an index into f.channels) and
// its order check.
func (s *subscriber) order() (int, *orderCheck) { return s.channel, &s.check }

// close closes the connection and waits for its read loop.
func (s *subscriber) close() {
	if s.conn == nil {
		return
	}
	s.closing.Store(true)
	if t := s.retry.Load(); t != nil {
		t.Stop()
	}
	closeWS(s.conn, s.done)
}

// closeWS closes a client connection, politely and then, if its read loop
// has not ended (done) within 5 s, for good, and waits for the loop.
func closeWS(conn *gws.Conn, done <-chan struct{}) {
	_ = conn.WriteClose(1000, nil) // best effort: it may be closed already
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = conn.NetConn().Close()
		<-done
	}
}

// OnOpen implements gws.Event.
func (s *subscriber) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event: a close the bench did not ask for is
// reported.
func (s *subscriber) OnClose(_ *gws.Conn, err error) {
	if !s.closing.Load() {
		s.f.subscriberError(fmt.Sprintf("connection closed by the server (%v)", err))
	}
}

// OnPing implements gws.Event: the server closes connections that do not
// answer its pings.
func (s *subscriber) OnPing(c *gws.Conn, payload []byte) {
	_ = c.WritePong(payload) // a failed write closes the connection
}

// OnPong implements gws.Event.
func (s *subscriber) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event: it checks and measures each event.
func (s *subscriber) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	now := time.Since(s.f.base)
	f := &heraldv1.ServerFrame{}
	var err error
	if s.binary {
		err = proto.Unmarshal(m.Bytes(), f)
	} else {
		err = protojson.Unmarshal(m.Bytes(), f)
	}
	if err != nil {
		s.f.subscriberError("undecodable frame")
		return
	}
	switch k := f.GetKind().(type) {
	case *heraldv1.ServerFrame_Subscribed:
		s.check.subscribed(k.Subscribed.GetHeadSeq())
		select {
		case s.ready <- k.Subscribed.GetHeadSeq():
		default: // one subscribe, one subscribed
		}
	case *heraldv1.ServerFrame_Event:
		ev := k.Event
		s.f.delivered(s.channel, &s.check, ev.GetChannelId(), ev.GetSeq(), ev.GetMessagePosted().GetMessage().GetClientMsgId(), now)
	case *heraldv1.ServerFrame_ResyncRequired:
		s.check.resync(k.ResyncRequired.GetLastSentSeq())
		s.f.resync(k.ResyncRequired.GetReason().String())
	case *heraldv1.ServerFrame_Error:
		if f.GetReplyTo() != subscribeID {
			s.f.subscriberError("error frame " + k.Error.GetCode())
			return
		}
		s.f.subscriberError("subscription ended with " + k.Error.GetCode() + ", subscribed again from its last seq")
		s.resubscribe()
	}
}

// postID is the client_msg_id of post k: whether it was measured and when
// it was sent, in nanoseconds after the bench's base time, which its
// deliveries are timed against.
func postID(measured bool, k int64, sent time.Duration) string {
	tag := "w"
	if measured {
		tag = "m"
	}
	return tag + strconv.FormatInt(k, 10) + "." + strconv.FormatInt(int64(sent), 10)
}

// parsePostID reads what postID wrote; ok is false for another id.
func parsePostID(id string) (measured bool, sent time.Duration, ok bool) {
	head, at, found := strings.Cut(id, ".")
	if !found || len(head) < 2 || (head[0] != 'm' && head[0] != 'w') {
		return false, 0, false
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return false, 0, false
	}
	return head[0] == 'm', time.Duration(n), true
}
