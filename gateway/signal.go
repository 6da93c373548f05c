package gateway

import (
	"sync"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
)

// Signaler is a cluster that relays ephemeral frames (typing, presence)
// to the gateways of its other nodes; cluster.Node is one. A Cluster that
// is not keeps them on this node.
type Signaler interface {
	Signal(*clusterv1.SignalRequest)
	OnSignal(cluster.SignalHandler)
}

// maxSignalSubs is the most subscriptions a channel may have on a node
// for its typing and presence to be delivered there. Past it they are
// not: a presence to every subscriber each time one comes or goes is
// quadratic in a reconnect storm, and a flood of best-effort frames could
// push a reader past its queue bound and cost it its stream.
const maxSignalSubs = 100

// Presence statuses, as the presence frame carries them.
const (
	presenceOnline = "online"
	presenceAway   = "away"
)

// presenceLocked counts s's user in or out of t (delta +1 or -1) and
// returns the presence to announce when the user's first subscription to
// the channel on this node starts (online) or its last ends (away), after
// delivering it to t's subscribers here who are other users; nil
// otherwise. t.mu is held.
func (t *topic) presenceLocked(s *subscription, delta int) *heraldv1.Presence {
	if s.user == "" {
		return nil
	}
	if t.users == nil {
		t.users = make(map[string]int)
	}
	before := t.users[s.user]
	after := before + delta
	if after <= 0 {
		delete(t.users, s.user)
	} else {
		t.users[s.user] = after
	}
	var p *heraldv1.Presence
	switch {
	case len(t.subs) > maxSignalSubs:
		return nil
	case before == 0 && after > 0:
		p = &heraldv1.Presence{User: s.user, Status: presenceOnline}
	case before > 0 && after <= 0:
		p = &heraldv1.Presence{User: s.user, Status: presenceAway}
	default:
		return nil
	}
	t.signalLocked(&heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Presence{Presence: p}}, nil, s.user)
	return p
}

// signalLocked delivers a typing or presence frame to t's subscribers
// but from and those of user (a user's own connections need no word of
// their typing or presence), unless t has more than maxSignalSubs. t.mu
// is held.
func (t *topic) signalLocked(f *heraldv1.ServerFrame, from sink, user string) {
	if len(t.subs) > maxSignalSubs {
		return
	}
	for o := range t.subs {
		if o.sink != from && o.user != user {
			o.sink.deliver(f)
		}
	}
}

// signal delivers f to channel's subscribers here as signalLocked does.
func (h *hub) signal(channel string, f *heraldv1.ServerFrame, from sink, user string) {
	h.mu.Lock()
	t := h.topics[channel]
	h.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.signalLocked(f, from, user)
}

// signalPresence relays p (if any) for channel to the other nodes.
func (h *hub) signalPresence(channel string, p *heraldv1.Presence) {
	if p == nil || h.signaler == nil {
		return
	}
	h.signaler.Signal(&clusterv1.SignalRequest{ChannelId: channel,
		Kind: &clusterv1.SignalRequest_Presence{Presence: p}})
}

// typingFrom relays user's typing in channel to its other subscribers here
// and on the other nodes, at most once per typingInterval per user and
// channel, however many connections the user has.
func (h *hub) typingFrom(channel string, from sink, user string) {
	if !h.typing.allow(user, channel) {
		return
	}
	t := &heraldv1.Typing{ChannelId: channel, User: user}
	h.signal(channel, &heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Typing{Typing: t}}, from, "")
	if h.signaler != nil {
		h.signaler.Signal(&clusterv1.SignalRequest{ChannelId: channel,
			Kind: &clusterv1.SignalRequest_Typing{Typing: t}})
	}
}

// receiveSignal delivers a frame another node relayed to this node's
// subscribers of its channel.
func (h *hub) receiveSignal(req *clusterv1.SignalRequest) {
	var f *heraldv1.ServerFrame
	var user string // whose own connections are not told
	switch k := req.GetKind().(type) {
	case *clusterv1.SignalRequest_Typing:
		f = &heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Typing{Typing: &heraldv1.Typing{
			ChannelId: req.GetChannelId(), User: k.Typing.GetUser()}}}
	case *clusterv1.SignalRequest_Presence:
		f = &heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Presence{Presence: &heraldv1.Presence{
			User: k.Presence.GetUser(), Status: k.Presence.GetStatus()}}}
		user = k.Presence.GetUser()
	default:
		return
	}
	h.signal(req.GetChannelId(), f, nil, user)
}

// userLimiter lets one event through per user and channel per interval.
type userLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[[2]string]time.Time
}

func newUserLimiter(interval time.Duration) *userLimiter {
	return &userLimiter{interval: interval, last: make(map[[2]string]time.Time)}
}

func (l *userLimiter) allow(user, channel string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := [2]string{user, channel}
	if now.Sub(l.last[k]) < l.interval {
		return false
	}
	if len(l.last) >= 1<<16 { // forget what no longer limits anyone
		for k, t := range l.last {
			if now.Sub(t) >= l.interval {
				delete(l.last, k)
			}
		}
	}
	l.last[k] = now
	return true
}
