package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// Stream is one channel's events in seq order with no gap or duplicate.
// One goroutine calls Next; Close may be called from any goroutine.
type Stream interface {
	// Next returns the next events, at most max, waiting until there is at
	// least one or ctx ends.
	Next(ctx context.Context, max int) ([]*heraldv1.Event, error)
	// Close ends the stream; it is idempotent.
	Close()
}

// remoteStream reads a channel's events from a replica on another node.
type remoteStream struct {
	n       *Node
	p       uint32
	channel string
	ctx     context.Context // ends at Close; the RPC runs under it
	cancel  context.CancelFunc

	// Used only by the goroutine calling Next.
	source string          // node the open RPC reads from
	failed map[string]bool // nodes whose stream failed, skipped until every candidate has

	mu      sync.Mutex // guards following
	next    uint64     // seq of the next event to deliver
	pending []*heraldv1.Event
	rpc     *connect.ServerStreamForClient[clusterv1.WatchResponse]
	stopRPC context.CancelFunc // cancels rpc's context: a blocked Receive returns
}

// Next implements Stream. A dropped connection is retried against the
// partition's replicas until ctx ends; a trimmed cursor, a cursor past
// the channel's head for good or a missing channel is returned as the
// storage error. When ctx ends while Next waits
// for the peer, the RPC is dropped (the next call reopens it from the
// cursor) and Next returns ctx's error.
func (s *remoteStream) Next(ctx context.Context, max int) ([]*heraldv1.Event, error) {
	backoff := 10 * time.Millisecond
	stop := context.AfterFunc(ctx, s.interrupt)
	defer stop()
	for {
		if evs := s.take(max); len(evs) > 0 {
			return evs, nil
		}
		if err := s.ctx.Err(); err != nil {
			return nil, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		err := s.receive(ctx)
		switch {
		case err == nil:
			backoff = 10 * time.Millisecond
			continue
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case domainErrorDetail(err) != nil:
			return nil, domainErrorDetail(err)
		case connect.CodeOf(err) == connect.CodeOutOfRange:
			return nil, &storage.Error{Kind: storage.ErrCursorExpired, Msg: errorMessage(err)}
		case connect.CodeOf(err) == connect.CodeNotFound:
			return nil, &storage.Error{Kind: storage.ErrNotFound, Msg: errorMessage(err)}
		}
		s.n.log.Debug("event stream from a peer broke; reconnecting", "channel", s.channel, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
			return nil, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// take returns buffered events in order, dropping any already delivered.
func (s *remoteStream) take(max int) []*heraldv1.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) > 0 && s.pending[0].GetSeq() < s.next {
		s.pending = s.pending[1:]
	}
	n := 0
	for n < len(s.pending) && n < max && s.pending[n].GetSeq() == s.next+uint64(n) {
		n++
	}
	evs := s.pending[:n:n]
	s.pending = s.pending[n:]
	s.next += uint64(n)
	if len(s.pending) > 0 && n == 0 {
		// A gap: the upstream's contract rules it out; start over from the
		// cursor rather than skip.
		s.pending = nil
		s.closeRPCLocked()
	}
	return evs
}

// interrupt makes a Receive blocked in Next return; Next's ctx ended.
func (s *remoteStream) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopRPC != nil {
		s.stopRPC()
	}
}

// receive reads the next message of the RPC, opening it (from the
// cursor) if needed. A node whose stream failed is skipped when the RPC is
// reopened, until every candidate has failed: the leader hint that chose
// it may name a node that is down, and nothing else would correct it.
// ctx is Next's: when it ends, the RPC is dropped, and its node is not
// counted as failed.
func (s *remoteStream) receive(ctx context.Context) error {
	s.mu.Lock()
	rpc := s.rpc
	after := s.next - 1
	s.mu.Unlock()
	if rpc == nil {
		target := s.n.leaderOf(s.p, s.failed)
		if target == "" {
			clear(s.failed)
			target = s.n.leaderOf(s.p, nil)
		}
		if target == "" {
			return errors.New("no replica known")
		}
		c, err := s.n.peers.to(target)
		if err != nil {
			s.failed[target] = true
			return err
		}
		// The call waits for the peer's first message, so interrupt must
		// be able to cancel it already.
		rctx, rcancel := context.WithCancel(s.ctx)
		s.mu.Lock()
		s.stopRPC = rcancel
		if ctx.Err() != nil {
			rcancel() // interrupt ran before stopRPC was set
		}
		s.mu.Unlock()
		rpc, err = c.Watch(rctx, &clusterv1.WatchRequest{Partition: s.p, ChannelId: s.channel, AfterSeq: after})
		if err != nil {
			s.mu.Lock()
			s.closeRPCLocked()
			s.mu.Unlock()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.failed[target] = true
			return err
		}
		s.source = target
		s.mu.Lock()
		s.rpc = rpc
		s.mu.Unlock()
	}
	if !rpc.Receive() {
		err := rpc.Err()
		s.mu.Lock()
		s.closeRPCLocked()
		s.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.failed[s.source] = true
		if err == nil {
			err = errors.New("stream ended")
		}
		return err
	}
	s.mu.Lock()
	s.pending = append(s.pending, rpc.Msg().GetEvents()...)
	s.mu.Unlock()
	return nil
}

// closeRPCLocked drops the RPC. Only the goroutine calling Next calls it:
// the RPC's Receive must not run concurrently with its Close.
func (s *remoteStream) closeRPCLocked() {
	if s.stopRPC != nil {
		s.stopRPC()
		s.stopRPC = nil
	}
	if s.rpc != nil {
		_ = s.rpc.Close() // best effort: the stream is being replaced
		s.rpc = nil
	}
}

// Close implements Stream. Canceling the stream's context ends its RPC: a
// Next blocked on it returns ErrClosed.
func (s *remoteStream) Close() {
	s.cancel()
}

// errorMessage is a Connect error's message without its code.
func errorMessage(err error) string {
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		return ce.Message()
	}
	return err.Error()
}
