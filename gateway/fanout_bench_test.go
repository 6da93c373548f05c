package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/gateway"
	"github.com/heraldhq/herald/storage"
)

// BenchmarkFanout publishes one event at a time to S WebSocket subscribers
// of one channel and waits until every one has received it: the gateway's
// hub (one upstream stream, the event encoded once), each connection's
// bounded queue and gws write, loopback TCP, and a client read loop that
// counts frames. The channel's upstream is fed by the benchmark instead
// of Raft, so that only the fan-out is timed. ns/delivery is the time per
// event divided by S.
func BenchmarkFanout(b *testing.B) {
	feeds := &fedCluster{channels: map[string]*fedChannel{}}
	n := startNode(b, nodeOptions{logLevel: slog.LevelError, wrap: func(n *cluster.Node) gateway.Cluster {
		feeds.Node = n
		return feeds
	}})
	for _, subs := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			ch := feeds.add(fmt.Sprintf("fan-%d", subs))
			fan := &fanCounter{done: make(chan struct{}, 1)}
			clients := dialFan(b, n, fan, ch.id, subs)
			text := strings.Repeat("x", 128)
			var seq uint64
			for b.Loop() {
				seq++
				fan.want.Store(int64(seq) * int64(subs))
				ch.publish(&heraldv1.Event{ChannelId: ch.id, Seq: seq, Ts: timestamppb.Now(),
					Body: &heraldv1.Event_MessagePosted{MessagePosted: &heraldv1.MessagePosted{Message: &heraldv1.Message{
						ChannelId: ch.id, Seq: seq, Author: "anonymous", Text: text, ClientMsgId: fmt.Sprint("m", seq),
						Ts: timestamppb.Now()}}}})
				select {
				case <-fan.done:
				case <-time.After(wsWait):
					b.Fatalf("event %d: %d of %d deliveries within %v", seq, fan.got.Load()-int64(seq-1)*int64(subs), subs, wsWait)
				}
			}
			for i, c := range clients {
				if got := c.events.Load(); got != int64(seq) {
					b.Fatalf("subscriber %d: %d events, want %d", i, got, seq)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq)/float64(subs), "ns/delivery")
			b.ReportMetric(float64(seq)*float64(subs)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// fedCluster is a real node as the gateway's cluster, except for the
// channels added to it: their metadata, backlog and upstream come from
// what the benchmark publishes.
type fedCluster struct {
	*cluster.Node

	mu       sync.Mutex // guards following
	channels map[string]*fedChannel
}

func (c *fedCluster) add(id string) *fedChannel {
	ch := &fedChannel{id: id, streams: map[*fedStream]struct{}{}}
	c.mu.Lock()
	c.channels[id] = ch
	c.mu.Unlock()
	return ch
}

func (c *fedCluster) fed(id string) *fedChannel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channels[id]
}

func (c *fedCluster) GetChannel(ctx context.Context, caller storage.Caller, id string) (*heraldv1.Channel, bool, error) {
	ch := c.fed(id)
	if ch == nil {
		return c.Node.GetChannel(ctx, caller, id)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return &heraldv1.Channel{Id: id, HeadSeq: uint64(len(ch.log))}, true, nil
}

func (c *fedCluster) Events(ctx context.Context, id string, after uint64, limit int) ([]*heraldv1.Event, uint64, uint64, error) {
	ch := c.fed(id)
	if ch == nil {
		return c.Node.Events(ctx, id, after, limit)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	head := uint64(len(ch.log))
	from := min(after, head)
	return ch.log[from:min(head, from+uint64(limit))], head, 1, nil
}

func (c *fedCluster) Watch(id string, after uint64) (cluster.Stream, error) {
	ch := c.fed(id)
	if ch == nil {
		return c.Node.Watch(id, after)
	}
	s := &fedStream{ch: ch, next: after + 1, notify: make(chan struct{}, 1)}
	ch.mu.Lock()
	ch.streams[s] = struct{}{}
	ch.mu.Unlock()
	return s, nil
}

// fedChannel is a channel's event log, seq i at log[i-1], and the streams
// watching it.
type fedChannel struct {
	id string

	mu      sync.Mutex // guards following, and every stream's next and closed
	log     []*heraldv1.Event
	streams map[*fedStream]struct{}
}

// publish appends ev, whose seq must be the next, and wakes the streams.
func (ch *fedChannel) publish(ev *heraldv1.Event) {
	ch.mu.Lock()
	ch.log = append(ch.log, ev)
	for s := range ch.streams {
		s.wake()
	}
	ch.mu.Unlock()
}

// fedStream is a cluster.Stream of a fedChannel.
type fedStream struct {
	ch     *fedChannel
	notify chan struct{} // size 1: a coalesced wake-up
	next   uint64
	closed bool
}

func (s *fedStream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Next implements cluster.Stream.
func (s *fedStream) Next(ctx context.Context, max int) ([]*heraldv1.Event, error) {
	for {
		s.ch.mu.Lock()
		if s.closed {
			s.ch.mu.Unlock()
			return nil, cluster.ErrClosed
		}
		if have := uint64(len(s.ch.log)); s.next <= have {
			evs := s.ch.log[s.next-1 : min(have, s.next-1+uint64(max))]
			s.next += uint64(len(evs))
			s.ch.mu.Unlock()
			return evs, nil
		}
		s.ch.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close implements cluster.Stream.
func (s *fedStream) Close() {
	s.ch.mu.Lock()
	s.closed = true
	delete(s.ch.streams, s)
	s.ch.mu.Unlock()
	s.wake()
}

// fanCounter counts the events every subscriber has received and signals
// done when the count reaches want.
type fanCounter struct {
	got, want atomic.Int64
	done      chan struct{} // size 1: want reached
}

// fanClient is a lean subscriber: after its subscribed frame it counts
// event frames without decoding them, so that the client's work weighs
// little beside the gateway's.
type fanClient struct {
	fan        *fanCounter
	conn       *gws.Conn
	subscribed chan struct{} // closed on the subscribed frame
	readDone   chan struct{} // closed when the read loop has returned
	live       bool          // owned by the read loop
	events     atomic.Int64
}

// dialFan connects subs clients to the node, subscribes each to channel
// and waits for every subscribed frame; the clients are closed at the end
// of the benchmark.
func dialFan(b *testing.B, n *node, fan *fanCounter, channel string, subs int) []*fanClient {
	b.Helper()
	clients := make([]*fanClient, subs)
	errs := make([]error, subs)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range clients {
		c := &fanClient{fan: fan, subscribed: make(chan struct{}), readDone: make(chan struct{})}
		clients[i] = c
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = c.dial(n.Addr, channel)
		})
	}
	wg.Wait()
	b.Cleanup(func() {
		for _, c := range clients {
			c.close()
		}
	})
	for i, err := range errs {
		if err != nil {
			b.Fatalf("subscriber %d: %v", i, err)
		}
	}
	return clients
}

func (c *fanClient) dial(addr, channel string) error {
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + addr + "/ws"})
	if err != nil {
		close(c.readDone)
		return err
	}
	c.conn = conn
	go func() { // ends when the connection closes; close waits for it
		defer close(c.readDone)
		conn.ReadLoop()
	}()
	frame, err := protojson.Marshal(wsSubscribeFrame("s", channel, nil))
	if err != nil {
		return err
	}
	if err := conn.WriteMessage(gws.OpcodeText, frame); err != nil {
		return err
	}
	select {
	case <-c.subscribed:
		return nil
	case <-c.readDone:
		return fmt.Errorf("connection closed before subscribed")
	case <-time.After(wsWait):
		return fmt.Errorf("no subscribed frame within %v", wsWait)
	}
}

func (c *fanClient) close() {
	if c.conn == nil {
		return
	}
	_ = c.conn.WriteClose(1000, nil) // best effort: it may be closed already
	<-c.readDone
}

// OnOpen implements gws.Event.
func (c *fanClient) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event.
func (c *fanClient) OnClose(*gws.Conn, error) {}

// OnPing implements gws.Event.
func (c *fanClient) OnPing(conn *gws.Conn, payload []byte) { _ = conn.WritePong(payload) }

// OnPong implements gws.Event.
func (c *fanClient) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event: frames up to subscribed are decoded,
// events after it counted.
func (c *fanClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if c.live {
		c.events.Add(1)
		if c.fan.got.Add(1) == c.fan.want.Load() {
			c.fan.done <- struct{}{}
		}
		return
	}
	f := &heraldv1.ServerFrame{}
	if protojson.Unmarshal(m.Bytes(), f) == nil && f.GetSubscribed() != nil {
		c.live = true
		close(c.subscribed)
	}
}
