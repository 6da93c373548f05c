package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// slowReader is a WebSocket subscriber that stops reading once it is
// subscribed, with a small socket receive buffer: a slow consumer, which
// the gateway must cut off (resync_required SLOW_CONSUMER, then the
// socket closes) without holding anyone else up. Its read loop blocks in
// OnMessage until close releases it.
type slowReader struct {
	conn    *gws.Conn
	ready   chan struct{} // closed at the subscribed frame
	release chan struct{} // closed by close: read again
	done    chan struct{} // closed when the read loop has returned
	closing atomic.Bool
	cut     atomic.Bool // the server had closed the connection by close
	slow    atomic.Bool // a SLOW_CONSUMER resync arrived
	seen    bool        // the subscribed frame arrived; read loop only
}

// slowRcvBuf is the receive buffer a slow reader asks the kernel for.
const slowRcvBuf = 4096

// dialSlow connects a slow reader to addr and subscribes it to channel.
func dialSlow(ctx context.Context, addr, channel string) (*slowReader, error) {
	r := &slowReader{ready: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
	d := net.Dialer{Timeout: 10 * time.Second, Control: smallRcvBuf(slowRcvBuf)}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		close(r.done)
		return nil, fmt.Errorf("bench: slow reader: connect to %s: %w", addr, err)
	}
	conn, _, err := gws.NewClientFromConn(r, &gws.ClientOption{Addr: "ws://" + addr + "/ws",
		RequestHeader: http.Header{}, HandshakeTimeout: 10 * time.Second, Recovery: gws.Recovery}, nc)
	if err != nil {
		_ = nc.Close() // the handshake failed; report that
		close(r.done)
		return nil, fmt.Errorf("bench: slow reader: WebSocket to %s: %w", addr, err)
	}
	r.conn = conn
	go func() { // ends when the connection closes; close waits for it
		defer close(r.done)
		conn.ReadLoop()
	}()
	b, err := protojson.Marshal(&heraldv1.ClientFrame{Id: subscribeID, Kind: &heraldv1.ClientFrame_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{ChannelId: channel}}})
	if err == nil {
		err = conn.WriteMessage(gws.OpcodeText, b)
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("bench: slow reader: subscribe to %s via %s: %w", channel, addr, err)
	}
	select {
	case <-r.ready:
		return r, nil
	case <-r.done:
		return nil, fmt.Errorf("bench: slow reader: subscribe to %s via %s: the connection closed first", channel, addr)
	case <-time.After(30 * time.Second):
		r.close()
		return nil, fmt.Errorf("bench: slow reader: subscribe to %s via %s: no subscribed frame within 30s", channel, addr)
	}
}

// close lets the reader read what reached it, then closes the connection
// if the server has not, and waits for the read loop.
func (r *slowReader) close() {
	if r.closing.Swap(true) {
		return
	}
	close(r.release)
	select {
	case <-r.done: // the server had closed it: the loop read to the end
		r.cut.Store(true)
		return
	case <-time.After(2 * time.Second):
	}
	closeWS(r.conn, r.done)
}

// OnOpen implements gws.Event.
func (r *slowReader) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event.
func (r *slowReader) OnClose(*gws.Conn, error) {}

// OnPing implements gws.Event; a stalled reader answers no pings.
func (r *slowReader) OnPing(c *gws.Conn, payload []byte) {
	_ = c.WritePong(payload) // a failed write closes the connection
}

// OnPong implements gws.Event.
func (r *slowReader) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event: after the subscribed frame it stops
// reading until close.
func (r *slowReader) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	f := &heraldv1.ServerFrame{}
	if protojson.Unmarshal(m.Bytes(), f) == nil && f.GetResyncRequired().GetReason() == heraldv1.ResyncRequired_SLOW_CONSUMER {
		r.slow.Store(true)
	}
	if f.GetSubscribed() != nil && !r.seen {
		r.seen = true
		close(r.ready)
		<-r.release
	}
}

// smallRcvBuf returns a net.Dialer Control that sets the socket's receive
// buffer to size bytes before it connects.
func smallRcvBuf(size int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		})
		if err != nil {
			return err
		}
		return serr
	}
}
