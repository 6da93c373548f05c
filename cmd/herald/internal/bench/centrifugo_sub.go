package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// cfSubscriber is one client of Centrifugo's JSON protocol over WebSocket
// (/connection/websocket), subscribed to one channel: a connect command,
// then a subscribe command; publications are pushes whose offset is the
// seq the order check follows from the subscribe reply's offset on. Its
// read loop is gws's, as subscriber's is.
type cfSubscriber struct {
	f       *fanout
	channel int // index into f.channels
	conn    *gws.Conn
	check   orderCheck

	ready   chan error    // size 1: the subscribe reply, or the error that ended the handshake
	done    chan struct{} // closed when the read loop has returned
	closing atomic.Bool
}

// The ids of the two commands a subscriber sends.
const (
	cfConnectID   = 1
	cfSubscribeID = 2
)

// cfReply is the part of a Centrifugo reply or push a subscriber reads.
type cfReply struct {
	ID    uint32 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Connect   json.RawMessage `json:"connect"`
	Subscribe *struct {
		Offset uint64 `json:"offset"`
	} `json:"subscribe"`
	Push *struct {
		Channel string `json:"channel"`
		Pub     *struct {
			Data   cfData `json:"data"`
			Offset uint64 `json:"offset"`
		} `json:"pub"`
	} `json:"push"`
}

func (s *cfSubscriber) dial(ctx context.Context, addr string) error {
	s.ready, s.done = make(chan error, 1), make(chan struct{})
	url := "ws://" + addr + "/connection/websocket"
	conn, _, err := gws.NewClient(s, &gws.ClientOption{Addr: url, RequestHeader: http.Header{},
		HandshakeTimeout: 10 * time.Second, Recovery: gws.Recovery})
	if err != nil {
		close(s.done)
		return fmt.Errorf("bench: connect to %s: %w", url, err)
	}
	s.conn = conn
	go func() { // ends when the connection closes; close waits for it
		defer close(s.done)
		conn.ReadLoop()
	}()
	channel := s.f.channels[s.channel]
	if err := conn.WriteString(fmt.Sprintf(`{"id":%d,"connect":{"name":"herald-bench"}}`, cfConnectID)); err != nil {
		return fmt.Errorf("bench: connect to %s: %w", url, err)
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case err := <-s.ready:
		if err != nil {
			return fmt.Errorf("bench: subscribe to %s via %s: %w", channel, url, err)
		}
		return nil
	case <-s.done:
		return fmt.Errorf("bench: subscribe to %s via %s: the connection closed first", channel, url)
	case <-t.C:
		return fmt.Errorf("bench: subscribe to %s via %s: no subscribe reply within 30s", channel, url)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *cfSubscriber) order() (int, *orderCheck) { return s.channel, &s.check }

func (s *cfSubscriber) close() {
	if s.conn == nil {
		return
	}
	s.closing.Store(true)
	closeWS(s.conn, s.done)
}

func (s *cfSubscriber) handshake(err error) {
	select {
	case s.ready <- err:
	default: // one subscribe, one reply
	}
}

// OnOpen implements gws.Event.
func (s *cfSubscriber) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event: a close the bench did not ask for is
// reported.
func (s *cfSubscriber) OnClose(_ *gws.Conn, err error) {
	if !s.closing.Load() {
		s.f.subscriberError(fmt.Sprintf("connection closed by the server (%v)", err))
	}
}

// OnPing implements gws.Event.
func (s *cfSubscriber) OnPing(c *gws.Conn, payload []byte) { _ = c.WritePong(payload) }

// OnPong implements gws.Event.
func (s *cfSubscriber) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event: every reply of the frame is handled,
// every ping answered with one.
func (s *cfSubscriber) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	now := time.Since(s.f.base)
	replies, pings, bad := parseCentrifugoFrame(m.Bytes())
	for range pings {
		_ = c.WriteString("{}") // a failed write closes the connection, which is reported
	}
	for range bad {
		s.f.subscriberError("undecodable frame")
	}
	for i := range replies {
		s.reply(c, &replies[i], now)
	}
}

// parseCentrifugoFrame splits a frame of Centrifugo's JSON protocol: one
// or more JSON objects, one a line. An empty object is the server's ping;
// bad counts the lines that do not decode.
func parseCentrifugoFrame(b []byte) (replies []cfReply, pings, bad int) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		switch {
		case len(line) == 0:
		case bytes.Equal(line, []byte("{}")):
			pings++
		default:
			var r cfReply
			if err := json.Unmarshal(line, &r); err != nil {
				bad++
				continue
			}
			replies = append(replies, r)
		}
	}
	return replies, pings, bad
}

func (s *cfSubscriber) reply(c *gws.Conn, r *cfReply, now time.Duration) {
	switch {
	case r.Error != nil:
		s.f.subscriberError(fmt.Sprintf("error %d %s", r.Error.Code, r.Error.Message))
		s.handshake(fmt.Errorf("error %d: %s", r.Error.Code, r.Error.Message))
	case r.ID == cfConnectID:
		cmd := fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, cfSubscribeID, s.f.channels[s.channel])
		if err := c.WriteString(cmd); err != nil {
			s.handshake(err)
		}
	case r.ID == cfSubscribeID && r.Subscribe != nil:
		s.check.subscribed(r.Subscribe.Offset)
		s.handshake(nil)
	case r.Push != nil && r.Push.Pub != nil:
		p := r.Push.Pub
		s.f.delivered(s.channel, &s.check, r.Push.Channel, p.Offset, p.Data.ID, now)
	}
}
