package cluster

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// localRetry is how often a stream reading another node's replica looks
// whether this node's own is back and current.
const localRetry = time.Second

// Watch starts a stream of a channel's events with seq > after. It reads
// this node's replica of the channel's partition while that replica is
// current (partition.Current), and a replica on another node otherwise:
// when the local one stops being current, is moved off the node or closes,
// and when it does not hold the channel (after the feed's grace for a
// replica that is behind), the stream goes on from the last seq it
// delivered on another node's, and comes back to the local one once that
// has been current for two election timeouts and holds what was
// delivered. A switch costs latency, never a gap or a duplicate. The
// caller must Close the stream.
func (n *Node) Watch(channel string, after uint64) (Stream, error) {
	if err := storage.ValidateChannelID(channel); err != nil {
		return nil, err
	}
	if n.Partitions() == 0 {
		return nil, ErrNotApplied
	}
	ctx, cancel := context.WithCancel(n.ctx)
	return &watchStream{n: n, p: n.PartitionOf(channel), channel: channel, next: after + 1,
		ctx: ctx, cancel: cancel}, nil
}

// watchStream is the Stream Watch returns.
type watchStream struct {
	n       *Node
	p       uint32
	channel string
	ctx     context.Context // ends at Close or when the node closes
	cancel  context.CancelFunc

	// Used only by the goroutine calling Next.
	next      uint64               // seq of the next event to deliver
	local     *partition.Partition // the replica src reads; nil while it reads a peer's
	lapsed    context.Context      // with local: ends when local stops being current
	lookLocal time.Time            // without local: when to look for it again

	mu     sync.Mutex // guards following
	src    Stream     // nil until opened, and after a switch until reopened
	closed bool
}

// Next implements Stream.
func (s *watchStream) Next(ctx context.Context, max int) ([]*heraldv1.Event, error) {
	for {
		src, err := s.source()
		if err != nil {
			return nil, err
		}
		rctx, stop := ctx, func() {}
		if s.local != nil {
			c, cancel := context.WithCancel(ctx)
			unhook := context.AfterFunc(s.lapsed, cancel)
			rctx, stop = c, func() { unhook(); cancel() }
		}
		evs, err := src.Next(rctx, max)
		stop()
		if len(evs) > 0 {
			s.next = evs[len(evs)-1].GetSeq() + 1
			if s.local == nil {
				s.backToLocal()
			}
			return evs, nil
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case s.ctx.Err() != nil:
			return nil, ErrClosed
		case s.local != nil && s.lapsed.Err() != nil,
			s.local != nil && errors.Is(err, partition.ErrClosed),
			s.local != nil && errors.Is(err, storage.ErrNotFound):
			why := "it stopped being current"
			if err != nil && s.lapsed.Err() == nil {
				why = err.Error()
			}
			s.n.log.Info("event stream moves to another node's replica", "channel", s.channel,
				"partition", s.p, "after", s.next-1, "why", why)
			s.switchTo(nil, nil)
			continue
		}
		return nil, err
	}
}

// source returns the open source, opening one at the cursor if there is
// none: the local replica if it is current, else a peer's.
func (s *watchStream) source() (Stream, error) {
	s.mu.Lock()
	src, closed := s.src, s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if src != nil {
		return src, nil
	}
	if r := s.n.Replica(s.p); r != nil {
		if lapsed, ok := s.n.cur.lease(s.p, r, 0); ok {
			return s.switchTo(r, lapsed), nil
		}
	}
	return s.switchTo(nil, nil), nil
}

// switchTo closes the open source and opens one at the cursor: r's feed if
// r is set, else a watch on the partition's stream from a peer (upstream).
func (s *watchStream) switchTo(r *partition.Partition, lapsed context.Context) Stream {
	var src Stream
	if r != nil {
		src = r.Feed().Watch(s.channel, s.next-1)
	} else {
		src = s.n.ups.watch(s.p, s.channel, s.next-1)
		s.lookLocal = time.Now().Add(localRetry)
	}
	s.local, s.lapsed = r, lapsed
	s.mu.Lock()
	old := s.src
	s.src = src
	if s.closed {
		src.Close()
	}
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return src
}

// backToLocal moves a stream reading a peer's replica back to this
// node's, at most once a localRetry, if this node has one that has been
// current for two election timeouts and holds every event delivered.
func (s *watchStream) backToLocal() {
	if time.Now().Before(s.lookLocal) {
		return
	}
	s.lookLocal = time.Now().Add(localRetry)
	r := s.n.Replica(s.p)
	if r == nil {
		return
	}
	lapsed, ok := s.n.cur.lease(s.p, r, 2*s.n.electionTimeout())
	if !ok || headOf(r, s.channel) < s.next-1 {
		return
	}
	s.n.log.Info("event stream is back on this node's replica", "channel", s.channel,
		"partition", s.p, "after", s.next-1)
	s.switchTo(r, lapsed)
}

// headOf is the channel's head seq in r's state; 0 if r lacks the channel
// or cannot read it.
func headOf(r *partition.Partition, channel string) uint64 {
	var head uint64
	_ = r.DB().View(func(rd *storage.Reader) error { // an error leaves 0: not held
		_, h, _, err := rd.Events(channel, math.MaxUint64, 0)
		head = h
		return err
	})
	return head
}

// Close implements Stream.
func (s *watchStream) Close() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	src := s.src
	s.mu.Unlock()
	if src != nil {
		src.Close()
	}
}
