package gateway

import (
	"context"
	"sync"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// streamSink queues one Subscribe stream's responses for its handler
// goroutine. It is mutex-guarded; the hub's calls never block, except
// waitRoom.
type streamSink struct {
	limit   int
	notify  chan struct{} // size 1: a coalesced wake-up for the handler
	drained chan struct{} // size 1: a coalesced signal that take emptied the queue

	mu       sync.Mutex // guards following
	items    []*heraldv1.SubscribeResponse
	ended    *reason
	overflow bool
}

func newStreamSink(limit int) *streamSink {
	return &streamSink{limit: limit, notify: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
}

func (k *streamSink) push(r *heraldv1.SubscribeResponse) bool {
	k.mu.Lock()
	ok := !k.overflow && k.ended == nil
	if ok && len(k.items) >= k.limit {
		k.overflow, ok = true, false
	}
	if ok {
		k.items = append(k.items, r)
	}
	k.mu.Unlock()
	k.wake()
	return ok
}

func (k *streamSink) deliverEvent(o *outEvent) bool {
	return k.push(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_Event{Event: o.ev}})
}

func (k *streamSink) deliver(f *heraldv1.ServerFrame) bool {
	if sub := f.GetSubscribed(); sub != nil {
		return k.push(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_Subscribed{Subscribed: sub}})
	}
	return true // typing and other frames have no place in a Subscribe stream
}

func (k *streamSink) end(_ *subscription, resync *heraldv1.ResyncRequired, err error) {
	k.mu.Lock()
	if k.ended == nil {
		k.ended = &reason{resync: resync, err: err}
	}
	k.mu.Unlock()
	k.wake()
}

// take returns the queued responses, then (once they are sent) why the
// stream ended or whether it overflowed.
func (k *streamSink) take() (items []*heraldv1.SubscribeResponse, end *reason, overflow bool) {
	k.mu.Lock()
	items, k.items = k.items, nil
	end, overflow = k.ended, k.overflow
	k.mu.Unlock()
	if len(items) > 0 {
		select {
		case k.drained <- struct{}{}:
		default:
		}
	}
	return items, end, overflow
}

func (k *streamSink) waitRoom(ctx context.Context, n int) int {
	want := min(n, max(1, k.limit/2))
	for {
		k.mu.Lock()
		room, done := k.limit-len(k.items), k.overflow || k.ended != nil
		k.mu.Unlock()
		switch {
		case done:
			return 0
		case room >= want:
			return min(n, room)
		}
		select {
		case <-k.drained:
		case <-ctx.Done():
			return 0
		}
	}
}

func (k *streamSink) wake() {
	select {
	case k.notify <- struct{}{}:
	default:
	}
}
