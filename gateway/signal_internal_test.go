package gateway

import (
	"context"
	"fmt"
	"testing"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// frames is a sink that records the control frames delivered to it.
type frames struct{ got []*heraldv1.ServerFrame }

func (f *frames) deliverEvent(*outEvent) bool                        { return true }
func (f *frames) deliver(fr *heraldv1.ServerFrame) bool              { f.got = append(f.got, fr); return true }
func (f *frames) end(*subscription, *heraldv1.ResyncRequired, error) {}
func (f *frames) waitRoom(context.Context, int) int                  { return 0 }

// join adds a subscription of user to t, as hub.subscribe does, and
// returns it with the presence it announced.
func join(t *topic, user string) (*subscription, *frames, *heraldv1.Presence) {
	snk := &frames{}
	s := &subscription{t: t, channel: t.channel, sink: snk, user: user}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs[s] = struct{}{}
	return s, snk, t.presenceLocked(s, +1)
}

func leave(t *topic, s *subscription) *heraldv1.Presence {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, s)
	return t.presenceLocked(s, -1)
}

func presences(f *frames) []string {
	var out []string
	for _, fr := range f.got {
		if p := fr.GetPresence(); p != nil {
			out = append(out, p.GetUser()+" "+p.GetStatus())
		}
	}
	return out
}

// TestPresence: a user's first subscription announces online to the other
// users' subscriptions, their last away, their own connections hear
// nothing, and a channel past maxSignalSubs subscriptions here announces
// nothing at all.
func TestPresence(t *testing.T) {
	tp := &topic{channel: "c", subs: map[*subscription]struct{}{}}
	_, alice, p := join(tp, "alice")
	if p == nil || p.GetStatus() != presenceOnline {
		t.Fatalf("alice's first subscription: announced %v, want online", p)
	}
	bob1, bobFrames, _ := join(tp, "bob")
	bob2, bob2Frames, p := join(tp, "bob")
	if p != nil {
		t.Errorf("bob's second subscription: announced %v, want nothing", p)
	}
	if got := fmt.Sprint(presences(alice)); got != "[bob online]" {
		t.Errorf("alice heard %s, want [bob online]", got)
	}
	if got := fmt.Sprint(presences(bobFrames), presences(bob2Frames)); got != "[] []" {
		t.Errorf("bob's connections heard %s, want nothing of themselves", got)
	}
	if p := leave(tp, bob1); p != nil {
		t.Errorf("bob's first subscription ending, with another open: announced %v, want nothing", p)
	}
	if p := leave(tp, bob2); p == nil || p.GetStatus() != presenceAway {
		t.Errorf("bob's last subscription ending: announced %v, want away", p)
	}
	if got := fmt.Sprint(presences(alice)); got != "[bob online bob away]" {
		t.Errorf("alice heard %s, want [bob online bob away]", got)
	}

	big := &topic{channel: "big", subs: map[*subscription]struct{}{}}
	var first *frames
	for i := range maxSignalSubs {
		_, f, _ := join(big, fmt.Sprint("u", i))
		if first == nil {
			first = f
		}
	}
	heard := len(presences(first))
	if _, _, p := join(big, "late"); p != nil {
		t.Errorf("subscription %d: announced %v, want nothing past %d", maxSignalSubs+1, p, maxSignalSubs)
	}
	if got := len(presences(first)); got != heard {
		t.Errorf("first subscriber heard %d presences after the channel passed %d subscriptions, want none", got-heard, maxSignalSubs)
	}
	big.signalLocked(&heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Typing{Typing: &heraldv1.Typing{User: "u1"}}}, nil, "")
	if n := len(first.got); n != heard {
		t.Errorf("typing in a channel of %d subscriptions reached the first subscriber, want not", maxSignalSubs+1)
	}
}
