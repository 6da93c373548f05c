package torture

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/check"
)

// Delivery is one event a subscriber received.
type Delivery struct {
	Subscriber  string    `json:"subscriber"`
	Node        string    `json:"node"`
	Channel     string    `json:"channel"`
	Seq         uint64    `json:"seq"`
	ClientMsgID string    `json:"client_msg_id,omitempty"`
	Time        time.Time `json:"time"`
	// Resumed is the first event of a connection, subscribed with
	// after_seq = the last seq this subscriber had (0: from the start).
	Resumed bool   `json:"resumed,omitempty"`
	After   uint64 `json:"after,omitempty"`
	// Resync is set instead of an event when the server told the
	// subscriber to resync (LastSent is its last_sent_seq).
	Resync string `json:"resync,omitempty"`
}

// subscribers connect to random nodes over WebSocket, follow one channel
// each from seq 1, and disconnect and resume (after the last seq they
// had) at random, recording every delivery.
type subscribers struct {
	w     *workload
	mu    sync.Mutex // guards following
	got   []Delivery
	lasts map[string]uint64 // subscriber → last seq it had, when it stopped
	chans map[string]string // subscriber → its channel
}

func (s *subscribers) record(d Delivery) {
	s.mu.Lock()
	s.got = append(s.got, d)
	s.mu.Unlock()
}

func (s *subscribers) deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.got...)
}

// run runs n subscribers until stop ends.
func (s *subscribers) run(stop context.Context, n int) {
	s.lasts, s.chans = map[string]uint64{}, map[string]string{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { s.follow(stop, i) })
	}
	wg.Wait()
}

// follow is one subscriber: connect, subscribe after the last seq it has,
// receive for a while, disconnect, again.
func (s *subscribers) follow(stop context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(s.w.seed), uint64(3000+i)))
	name := fmt.Sprintf("subscriber-%d", i)
	ch := s.w.channels[i%len(s.w.channels)]
	var last uint64
	for stop.Err() == nil {
		node := s.w.nodes[rng.IntN(len(s.w.nodes))]
		stay := time.Duration(300+rng.IntN(2500)) * time.Millisecond
		last = s.session(stop, name, node, ch, last, stay)
		time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
	}
	s.mu.Lock()
	s.lasts[name], s.chans[name] = last, ch
	s.mu.Unlock()
}

// catchUp resumes every subscriber, through the nodes in turn, until it
// has its channel's head (heads), or within ends.
func (s *subscribers) catchUp(heads map[string]uint64, within time.Duration) {
	deadline := time.Now().Add(within)
	s.mu.Lock()
	lasts := maps.Clone(s.lasts)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for name, last := range lasts {
		wg.Go(func() {
			ch := s.chans[name]
			for k := 0; last < heads[ch] && time.Now().Before(deadline); k++ {
				last = s.session(context.Background(), name, s.w.nodes[k%len(s.w.nodes)], ch, last, time.Second)
			}
			s.mu.Lock()
			s.lasts[name] = last
			s.mu.Unlock()
		})
	}
	wg.Wait()
}

// ends returns each subscriber's channel and the last seq it had.
func (s *subscribers) ends() (map[string]string, map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.chans), maps.Clone(s.lasts)
}

// session is one connection: it returns the last seq it had.
func (s *subscribers) session(stop context.Context, name, node, ch string, after uint64, stay time.Duration) uint64 {
	h := &subHandler{s: s, name: name, node: node, ch: ch, last: after, after: after, done: make(chan struct{})}
	conn, _, err := gws.NewClient(h, &gws.ClientOption{Addr: "ws://" + s.w.addrs[node] + "/ws",
		RequestHeader: http.Header{}, HandshakeTimeout: 2 * time.Second, Recovery: gws.Recovery})
	if err != nil {
		return after // the node is down or cut off from this client: elsewhere
	}
	go func() { defer close(h.done); conn.ReadLoop() }()
	a := after
	b, _ := protojson.Marshal(&heraldv1.ClientFrame{Id: "s", Kind: &heraldv1.ClientFrame_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{ChannelId: ch, AfterSeq: &a}}})
	_ = conn.WriteMessage(gws.OpcodeText, b) // a failed write closes the connection
	t := time.NewTimer(stay)
	select {
	case <-stop.Done():
	case <-t.C:
	case <-h.done:
	}
	t.Stop()
	_ = conn.WriteClose(1000, nil)
	select {
	case <-h.done:
	case <-time.After(3 * time.Second):
		_ = conn.NetConn().Close()
		<-h.done
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// subHandler receives one session's frames on gws's read loop.
type subHandler struct {
	s               *subscribers
	name, node, ch  string
	after           uint64
	done            chan struct{}
	mu              sync.Mutex // guards following
	last            uint64
	first, resynced bool
}

func (h *subHandler) OnOpen(*gws.Conn)             {}
func (h *subHandler) OnClose(*gws.Conn, error)     {}
func (h *subHandler) OnPong(*gws.Conn, []byte)     {}
func (h *subHandler) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (h *subHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	f := &heraldv1.ServerFrame{}
	if protojson.Unmarshal(m.Bytes(), f) != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch k := f.GetKind().(type) {
	case *heraldv1.ServerFrame_Event:
		if h.resynced {
			return
		}
		ev := k.Event
		d := Delivery{Subscriber: h.name, Node: h.node, Channel: ev.GetChannelId(), Seq: ev.GetSeq(),
			ClientMsgID: ev.GetMessagePosted().GetMessage().GetClientMsgId(), Time: time.Now()}
		if !h.first {
			d.Resumed, d.After, h.first = true, h.after, true
		}
		h.s.record(d)
		h.last = max(h.last, ev.GetSeq())
	case *heraldv1.ServerFrame_ResyncRequired:
		// Reported, not a loss: the subscriber resumes from what it had.
		h.resynced = true
		h.s.record(Delivery{Subscriber: h.name, Node: h.node, Channel: h.ch, Time: time.Now(),
			Resync: k.ResyncRequired.GetReason().String()})
		_ = c.WriteClose(1000, nil)
	case *heraldv1.ServerFrame_Error:
		_ = c.WriteClose(1000, nil) // the subscription ended: connect elsewhere
	}
}

// checkSubscribers checks the deliveries against the final history: each
// subscriber got every event of its channel exactly once, in seq order,
// across its reconnects (no gap, duplicate or going back); every delivered
// event is the one the final history holds at that seq (nothing
// uncommitted); and no linearizable read invoked after an event was
// delivered lacks it.
func checkSubscribers(ds []Delivery, h check.History, chans map[string]string, lasts map[string]uint64) check.Verdict {
	final := map[string]map[uint64]string{} // channel → seq → client_msg_id
	for _, op := range h {
		if op.Kind == check.Read && op.Type == check.OK && op.Final && final[op.Channel] == nil {
			final[op.Channel] = map[uint64]string{}
			for _, m := range op.Messages {
				final[op.Channel][m.Seq] = m.ClientMsgID
			}
		}
	}
	var vs []check.Violation
	add := func(format string, args ...any) {
		if len(vs) < 200 {
			vs = append(vs, check.Violation{What: fmt.Sprintf(format, args...)})
		}
	}
	bySub := map[string][]Delivery{}
	for _, d := range ds {
		bySub[d.Subscriber] = append(bySub[d.Subscriber], d)
	}
	names := make([]string, 0, len(bySub))
	for n := range bySub {
		names = append(names, n)
	}
	sort.Strings(names)
	events, resyncs := 0, 0
	for _, n := range names {
		var last uint64
		for _, d := range bySub[n] {
			if d.Resync != "" {
				resyncs++
				continue
			}
			events++
			switch {
			case d.Seq <= last:
				add("%s got %s seq %d via %s after seq %d: a duplicate or going back", n, d.Channel, d.Seq, d.Node, last)
			case d.Seq > last+1:
				add("%s got %s seq %d via %s after seq %d: a gap of %d", n, d.Channel, d.Seq, d.Node, last, d.Seq-last-1)
			}
			if want, ok := final[d.Channel][d.Seq]; !ok || want != d.ClientMsgID {
				add("%s got %s seq %d = %q via %s; the final history holds %q there: an uncommitted or wrong event",
					n, d.Channel, d.Seq, d.ClientMsgID, d.Node, want)
			}
			last = max(last, d.Seq)
		}
	}
	for n, ch := range chans {
		if head := uint64(len(final[ch])); lasts[n] < head {
			add("%s ends at %s seq %d; the channel's head is %d: events never delivered", n, ch, lasts[n], head)
		}
	}
	// Linearizable reads against what a subscriber had already received.
	type seen struct {
		at  time.Time
		seq uint64
	}
	first := map[string][]seen{} // channel → deliveries in time order
	for _, d := range ds {
		if d.Resync == "" {
			first[d.Channel] = append(first[d.Channel], seen{d.Time, d.Seq})
		}
	}
	for ch := range first {
		sort.Slice(first[ch], func(i, j int) bool { return first[ch][i].at.Before(first[ch][j].at) })
	}
	invoked := map[int]time.Time{}
	for _, op := range h {
		if op.Kind != check.Read || op.Stale || op.Final {
			continue
		}
		if op.Type == check.Invoke {
			invoked[op.ID] = op.Time
			continue
		}
		if op.Type != check.OK {
			continue
		}
		var top uint64
		for _, m := range op.Messages {
			top = max(top, m.Seq)
		}
		var had uint64
		for _, s := range first[op.Channel] {
			if !s.at.Before(invoked[op.ID]) {
				break
			}
			had = max(had, s.seq)
		}
		if had > top {
			add("linearizable read of %s via %s (%s) ends at seq %d, but a subscriber had received seq %d before the read was sent",
				op.Channel, op.Node, op.Process, top, had)
		}
	}
	v := check.Verdict{Checker: "subscribers", Valid: len(vs) == 0, Violations: vs,
		Summary: fmt.Sprintf("%d subscribers, %d events received, %d resyncs", len(names), events, resyncs)}
	return v
}
