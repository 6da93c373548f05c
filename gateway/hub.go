package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

var errShuttingDown = errors.New("gateway: node is shutting down")

// catchUpBatch is how many backlog events a subscription reads at a time.
const catchUpBatch = 256

// A catch-up whose backlog read brings nothing new waits between
// catchUpIdleMin and catchUpIdleMax, doubling, before it reads again.
const (
	catchUpIdleMin = 10 * time.Millisecond
	catchUpIdleMax = time.Second
)

// sink is where a subscription's frames go: a WebSocket connection or a
// Connect stream. Its methods never block, except waitRoom; they are called
// with topic locks held, except end and waitRoom.
type sink interface {
	// deliverEvent queues an event. false means the sink is full or closed;
	// a full sink ends all its subscriptions (SLOW_CONSUMER) by itself,
	// asynchronously.
	deliverEvent(o *outEvent) bool
	// deliver queues a control frame (subscribed, typing). false as above.
	deliver(f *heraldv1.ServerFrame) bool
	// end tells the sink the hub ended one of its subscriptions: with a
	// resync_required, or with an error.
	end(s *subscription, resync *heraldv1.ResyncRequired, err error)
	// waitRoom waits until the sink has room for a good share of n more
	// frames (up to n) and returns that room; 0 means the sink is closed or
	// full for good, or ctx ended. It paces a backlog to the consumer, so
	// a long backlog is not mistaken for a slow consumer.
	waitRoom(ctx context.Context, n int) int
}

// resyncError is returned by hub.subscribe when the cursor cannot be served
// (CURSOR_AHEAD or CURSOR_EXPIRED); the caller sends it as resync_required.
type resyncError struct {
	resync *heraldv1.ResyncRequired
}

func (e *resyncError) Error() string {
	return "gateway: resync required: " + e.resync.GetReason().String()
}

// hub fans each channel's events out to that channel's subscribers. It
// holds one upstream stream per channel that anyone here watches (a topic),
// whatever the number of subscribers, and encodes each event once per
// form. A new subscriber reads its backlog itself and then joins the
// topic's live delivery at the exact seq where its backlog ends.
//
// Lock order: hub.mu, then topic.mu, then wsServer.mu (a sink that
// overflows while the pump holds topic.mu registers its goroutine). Goroutines (one pump per topic, one
// catch-up per subscription while it catches up) are owned by the hub and
// end with its ctx or their topic or subscription.
type hub struct {
	cl   Cluster
	log  *slog.Logger
	ctx  context.Context // ends all pumps and catch-ups at close
	wg   sync.WaitGroup
	skip uint64 // Config.UnsafeSkipEvent
	m    *gwMetrics
	// signaler relays typing and presence to other nodes' gateways; nil
	// when the cluster cannot (signal.go).
	signaler Signaler
	typing   *userLimiter

	mu     sync.Mutex // guards following
	topics map[string]*topic
	closed bool // no goroutine starts once set: wait may be running
}

func newHub(ctx context.Context, cl Cluster, log *slog.Logger, skip uint64, m *gwMetrics) *hub {
	h := &hub{cl: cl, log: log, ctx: ctx, topics: make(map[string]*topic), skip: skip, m: m,
		typing: newUserLimiter(typingInterval)}
	if sg, ok := cl.(Signaler); ok {
		h.signaler = sg
		sg.OnSignal(h.receiveSignal)
	}
	return h
}

// topicCount is the number of upstream streams the hub holds.
func (h *hub) topicCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.topics)
}

// topic is one channel's upstream stream and its subscribers.
type topic struct {
	channel string
	stream  Stream
	cancel  context.CancelFunc

	mu    sync.Mutex // guards following, and every subscription's sent/live/ended
	subs  map[*subscription]struct{}
	users map[string]int // subscriptions per user, for presence (signal.go)
	last  uint64         // seq of the last event the pump received
}

// subscription is one sink's interest in one channel.
type subscription struct {
	t       *topic
	channel string
	replyTo string
	sink    sink
	user    string             // the subscriber: the subscription ends when it leaves
	head    uint64             // the channel's head when the subscription started
	cancel  context.CancelFunc // stops the catch-up goroutine

	// guarded by t.mu
	sent  uint64 // seq of the last event queued to the sink
	live  bool   // caught up: the pump delivers to it
	ended bool
}

// left reports whether ev, delivered to s, is its subscriber leaving the
// channel after the subscription started: that ends the subscription.
func (s *subscription) left(ev *heraldv1.Event) bool {
	return ev.GetMemberLeft().GetUser() == s.user && s.user != "" && ev.GetSeq() > s.head
}

// leftErr ends the subscription of a subscriber who left the channel.
func leftErr(channel string) error {
	return &storage.Error{Kind: storage.ErrPermissionDenied,
		Msg: fmt.Sprintf("you left channel %q; subscribe again to keep reading it", channel)}
}

// isEnded reports whether the hub has ended s.
func (s *subscription) isEnded() bool {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	return s.ended
}

// subscribe checks that c may read channel, registers a subscription for
// events after after (nil: from the current head), queues subscribed (with
// replyTo) to sink and starts delivering. It returns a *resyncError if the
// cursor cannot be served.
func (h *hub) subscribe(ctx context.Context, c storage.Caller, snk sink, channel string, after *uint64, replyTo string) (*subscription, error) {
	ch, _, err := h.cl.GetChannel(ctx, c, channel)
	if err != nil {
		return nil, err
	}
	head, oldest := ch.GetHeadSeq(), ch.GetOldestSeq()
	start := head
	if after != nil {
		start = *after
		resync := &heraldv1.ResyncRequired{ChannelId: channel, OldestSeq: oldest, LastSentSeq: start}
		switch {
		case start > head:
			resync.Reason = heraldv1.ResyncRequired_CURSOR_AHEAD
		case oldest > 0 && start+1 < oldest:
			resync.Reason = heraldv1.ResyncRequired_CURSOR_EXPIRED
		}
		if resync.Reason != heraldv1.ResyncRequired_REASON_UNSPECIFIED {
			h.m.resync(resync)
			return nil, &resyncError{resync}
		}
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errShuttingDown
	}
	t, err := h.topicLocked(channel, head)
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	cctx, cancel := context.WithCancel(h.ctx)
	s := &subscription{t: t, channel: channel, replyTo: replyTo, sink: snk, user: c.User, head: head,
		cancel: cancel, sent: start}
	t.mu.Lock()
	t.subs[s] = struct{}{}
	h.m.subs.Inc() // before anyone can end s: see unsubscribe
	snk.deliver(&heraldv1.ServerFrame{ReplyTo: replyTo, Kind: &heraldv1.ServerFrame_Subscribed{
		Subscribed: &heraldv1.Subscribed{ChannelId: channel, HeadSeq: head}}})
	presence := t.presenceLocked(s, +1)
	t.mu.Unlock()
	h.signalPresence(channel, presence)
	h.wg.Go(func() { h.catchUp(cctx, s) })
	h.mu.Unlock()
	return s, nil
}

// topicLocked returns the channel's topic, starting its pump at head if it
// is new. h.mu must be held.
func (h *hub) topicLocked(channel string, head uint64) (*topic, error) {
	if t := h.topics[channel]; t != nil {
		return t, nil
	}
	stream, err := h.cl.Watch(channel, head)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(h.ctx)
	t := &topic{channel: channel, stream: stream, cancel: cancel,
		subs: make(map[*subscription]struct{}), last: head}
	h.topics[channel] = t
	h.wg.Go(func() { h.pump(ctx, t) })
	return t, nil
}

// catchUp queues the backlog of s until it reaches the topic's live
// position, then marks s live. Both steps hold t.mu, so the pump never
// interleaves with the backlog. A read that brings nothing new makes it
// wait before the next, longer each time (catchUpIdleMax at most): the
// topic is then ahead of the channel's head as its leader reads it, which
// lasts only until the topic's replica applies what the leader has (a
// restored snapshot) and its stream ends. A head below what s was sent
// went back for good: s ends with resync_required CURSOR_AHEAD.
func (h *hub) catchUp(ctx context.Context, s *subscription) {
	t := s.t
	var idle time.Duration
	for {
		t.mu.Lock()
		after, ended := s.sent, s.ended
		t.mu.Unlock()
		if ended {
			return
		}
		limit := s.sink.waitRoom(ctx, catchUpBatch)
		if limit == 0 {
			return // ended, or a sink full for good ends itself
		}
		evs, head, _, err := h.cl.Events(ctx, s.channel, after, limit)
		if err != nil {
			if ctx.Err() == nil {
				h.end(s, endReason(s, err))
			}
			return
		}
		if len(evs) == 0 && head < after {
			h.end(s, reason{resync: resyncOf(s.channel, heraldv1.ResyncRequired_CURSOR_AHEAD, after)})
			return
		}
		t.mu.Lock()
		if s.ended || s.sent != after {
			t.mu.Unlock()
			return
		}
		from := s.sent
		for _, ev := range evs {
			if ev.GetSeq() == h.skip && ev.GetSeq() == s.sent+1 {
				s.sent = ev.GetSeq() // the planted defect
				continue
			}
			if ev.GetSeq() != s.sent+1 || !s.sink.deliverEvent(newOutEvent(ev)) {
				t.mu.Unlock()
				h.m.eventsOut.Add(float64(s.sent - from))
				return // a full sink ends itself
			}
			s.sent = ev.GetSeq()
			if s.left(ev) {
				t.mu.Unlock()
				h.m.eventsOut.Add(float64(s.sent - from))
				h.end(s, reason{err: leftErr(s.channel)})
				return
			}
		}
		h.m.eventsOut.Add(float64(s.sent - from))
		if len(evs) < limit && s.sent >= t.last {
			s.live = true
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		if len(evs) > 0 {
			idle = 0
			continue
		}
		idle = min(max(2*idle, catchUpIdleMin), catchUpIdleMax)
		timer := time.NewTimer(idle)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// pump delivers the topic's upstream events to its live subscribers.
func (h *hub) pump(ctx context.Context, t *topic) {
	for {
		evs, err := t.stream.Next(ctx, catchUpBatch)
		if err != nil {
			if ctx.Err() == nil {
				h.failTopic(t, err)
			}
			return
		}
		var broken, left []*subscription
		var in, out int
		gap := false
		t.mu.Lock()
		for _, ev := range evs {
			seq := ev.GetSeq()
			if seq <= t.last {
				continue
			}
			if seq != t.last+1 {
				// A gap, which the upstream's contract rules out: deliver
				// nothing past it, and read again from the last seq.
				gap = true
				break
			}
			t.last = seq
			in++
			o := newOutEvent(ev)
			for s := range t.subs {
				switch {
				case !s.live || seq <= s.sent:
				case seq == h.skip && seq == s.sent+1:
					s.sent = seq // the planted defect
				case seq != s.sent+1:
					// A gap, which the upstream's contract rules out: never
					// skip an event; end the subscription instead.
					s.live = false
					broken = append(broken, s)
				case s.sink.deliverEvent(o):
					s.sent = seq
					out++
					if s.left(ev) {
						s.live = false
						left = append(left, s)
					}
				default:
					s.live = false // the full sink ends itself
				}
			}
		}
		t.mu.Unlock()
		h.m.eventsIn.Add(float64(in))
		h.m.eventsOut.Add(float64(out))
		for _, s := range broken {
			h.end(s, reason{err: fmt.Errorf("gateway: event stream of %q skipped past seq %d", s.channel, s.sent)})
		}
		for _, s := range left {
			h.end(s, reason{err: leftErr(s.channel)})
		}
		if gap && !h.rewatch(t) {
			return
		}
	}
}

// rewatch replaces the topic's upstream stream with one from its last
// seq, after the old one skipped an event. false means the pump must stop:
// the topic was retired, or the new stream failed it.
func (h *hub) rewatch(t *topic) bool {
	t.mu.Lock()
	last := t.last
	t.mu.Unlock()
	h.log.Warn("channel stream skipped an event; reading it again", "channel", t.channel, "after", last)
	h.mu.Lock()
	if h.topics[t.channel] != t {
		h.mu.Unlock()
		return false // retired: its stream was closed
	}
	stream, err := h.cl.Watch(t.channel, last)
	if err == nil {
		t.stream.Close()
		t.stream = stream
	}
	h.mu.Unlock()
	if err != nil {
		h.failTopic(t, err)
		return false
	}
	return true
}

// failTopic retires a topic whose upstream failed and ends each of its
// subscriptions. The topic leaves the map first, so a new subscriber starts
// a fresh one instead of joining a topic without a pump.
func (h *hub) failTopic(t *topic, err error) {
	h.log.Warn("channel stream failed", "channel", t.channel, "err", err)
	h.mu.Lock()
	if h.topics[t.channel] == t {
		delete(h.topics, t.channel)
	}
	h.mu.Unlock()
	t.cancel()
	t.stream.Close()
	t.mu.Lock()
	subs := make([]*subscription, 0, len(t.subs))
	for s := range t.subs {
		subs = append(subs, s)
	}
	t.mu.Unlock()
	for _, s := range subs {
		h.end(s, endReason(s, err))
	}
}

type reason struct {
	resync *heraldv1.ResyncRequired
	err    error
}

// endReason turns an upstream or backlog error into what a subscriber is
// told: resync_required CURSOR_EXPIRED for trimmed events, CURSOR_AHEAD
// when the channel's head went back below what it was sent (a restored
// snapshot or a recovered partition), else the error.
func endReason(s *subscription, err error) reason {
	var why heraldv1.ResyncRequired_Reason
	switch {
	case errors.Is(err, storage.ErrCursorExpired):
		why = heraldv1.ResyncRequired_CURSOR_EXPIRED
	case errors.Is(err, storage.ErrCursorAhead):
		why = heraldv1.ResyncRequired_CURSOR_AHEAD
	default:
		return reason{err: err}
	}
	s.t.mu.Lock()
	sent := s.sent
	s.t.mu.Unlock()
	return reason{resync: resyncOf(s.channel, why, sent)}
}

// resyncOf is the resync_required of a subscription to channel that was
// sent every event up to lastSent.
func resyncOf(channel string, why heraldv1.ResyncRequired_Reason, lastSent uint64) *heraldv1.ResyncRequired {
	return &heraldv1.ResyncRequired{ChannelId: channel, Reason: why, LastSentSeq: lastSent}
}

// end removes s and tells its sink why.
func (h *hub) end(s *subscription, r reason) {
	if _, ok := h.unsubscribe(s); ok {
		if r.resync != nil {
			h.m.resync(r.resync)
		}
		s.sink.end(s, r.resync, r.err)
	}
}

// unsubscribe removes s, stopping its topic when s was the last
// subscriber. It returns the seq of the last event queued to s, and false
// if s had already ended. It is idempotent.
func (h *hub) unsubscribe(s *subscription) (uint64, bool) {
	s.cancel()
	t := s.t
	h.mu.Lock()
	defer h.mu.Unlock()
	t.mu.Lock()
	sent, was := s.sent, !s.ended
	s.ended = true
	delete(t.subs, s)
	empty := len(t.subs) == 0
	var presence *heraldv1.Presence
	if was {
		presence = t.presenceLocked(s, -1)
	}
	t.mu.Unlock()
	h.signalPresence(t.channel, presence)
	if was {
		h.m.subs.Dec()
	}
	if empty && h.topics[t.channel] == t {
		delete(h.topics, t.channel)
		t.cancel()
		t.stream.Close()
	}
	return sent, was
}

// close stops new subscriptions and waits for every pump and catch-up
// goroutine; the hub's ctx must have ended.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
}
