package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// remoteBuffer bounds the events a remote watch holds for its reader; one
// that falls further behind drops them and pauses, and watches again from
// its cursor when its reader has read what it held.
const remoteBuffer = 4096

// upstreams holds the node's WatchPartition streams to peers: one per
// partition whose channels it reads from a peer's replica, carrying every
// such watch of the partition, opened with the first and closed with the
// last. Lock order: upstreams.mu, then upstream.mu, then remoteWatch.mu.
type upstreams struct {
	n *Node
	// buffer is remoteBuffer but in tests; overflows counts the watches
	// whose reader fell buffer events behind.
	buffer    atomic.Int64
	overflows atomic.Int64

	mu    sync.Mutex // guards following
	parts map[uint32]*upstream
}

func newUpstreams(n *Node) *upstreams {
	u := &upstreams{n: n, parts: make(map[uint32]*upstream)}
	u.buffer.Store(remoteBuffer)
	return u
}

// stats returns the number of partitions read from peers (streams) and
// of watches on them.
func (u *upstreams) stats() (streams, watches int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, up := range u.parts {
		up.mu.Lock()
		watches += len(up.watches)
		up.mu.Unlock()
	}
	return len(u.parts), watches
}

// watch starts a watch of channel, of partition p, with seq > after, read
// from a peer's replica.
func (u *upstreams) watch(p uint32, channel string, after uint64) *remoteWatch {
	u.mu.Lock()
	defer u.mu.Unlock()
	up := u.parts[p]
	if up == nil {
		ctx, cancel := context.WithCancel(u.n.ctx)
		up = &upstream{u: u, p: p, ctx: ctx, cancel: cancel, watches: map[uint64]*remoteWatch{}}
		u.parts[p] = up
		go up.run()
	}
	w := &remoteWatch{up: up, channel: channel, next: after + 1, notify: make(chan struct{}, 1)}
	up.mu.Lock()
	up.registerLocked(w)
	up.mu.Unlock()
	return w
}

// remove ends w's watch, and the partition's stream with its last.
func (u *upstreams) remove(w *remoteWatch) {
	up := w.up
	u.mu.Lock()
	defer u.mu.Unlock()
	up.mu.Lock()
	if up.watches[w.id] == w {
		delete(up.watches, w.id)
		up.sendLocked(unwatchRequest(up.p, w.id))
	}
	empty := len(up.watches) == 0
	up.mu.Unlock()
	if empty && u.parts[up.p] == up {
		delete(u.parts, up.p)
		up.cancel()
	}
}

// upstream is one partition's stream to a peer, reopened to another
// replica when it fails, every watch resuming from its reader's cursor.
type upstream struct {
	u      *upstreams
	p      uint32
	ctx    context.Context // ends with the last watch, or the node
	cancel context.CancelFunc

	mu      sync.Mutex // guards following
	watches map[uint64]*remoteWatch
	lastID  uint64
	rpc     *connect.BidiStreamForClientSimple[clusterv1.WatchPartitionRequest, clusterv1.WatchPartitionResponse]
	source  string // the node rpc reads from
}

// registerLocked gives w a new id and asks the stream, if open, to
// watch from w's cursor. up.mu must be held, and w.mu unless w is new.
func (up *upstream) registerLocked(w *remoteWatch) {
	up.lastID++
	w.id = up.lastID
	up.watches[w.id] = w
	up.sendLocked(watchRequest(up.p, w))
}

func watchRequest(p uint32, w *remoteWatch) *clusterv1.WatchPartitionRequest {
	return &clusterv1.WatchPartitionRequest{Partition: p, Kind: &clusterv1.WatchPartitionRequest_Watch{
		Watch: &clusterv1.ChannelWatch{Id: w.id, ChannelId: w.channel, AfterSeq: w.next - 1}}}
}

func unwatchRequest(p uint32, id uint64) *clusterv1.WatchPartitionRequest {
	return &clusterv1.WatchPartitionRequest{Partition: p, Kind: &clusterv1.WatchPartitionRequest_Unwatch{Unwatch: id}}
}

// sendLocked sends req on the open stream, if any; a stream that fails
// is reopened by run, which asks again for every watch. up.mu must be
// held: sends keep the order of the registrations.
func (up *upstream) sendLocked(req *clusterv1.WatchPartitionRequest) {
	if up.rpc != nil {
		_ = up.rpc.Send(req) // a failure shows in Receive, and run reopens
	}
}

// run keeps the stream open while the upstream lives: it opens it to the
// partition's leader or another replica, asks for every watch, hands the
// events to their watches, and on failure goes to another replica, this
// node's last (its replica is not current, or it would not be asked).
func (up *upstream) run() {
	n := up.u.n
	failed := map[string]bool{n.cfg.NodeID: true}
	backoff := 10 * time.Millisecond
	for up.ctx.Err() == nil {
		target := n.leaderOf(up.p, failed)
		if target == "" {
			clear(failed)
			target = n.leaderOf(up.p, nil)
		}
		var err error
		if target == "" {
			err = errors.New("no replica known")
		} else if err = up.serve(target); err == nil {
			backoff = 10 * time.Millisecond
		}
		if up.ctx.Err() != nil {
			return
		}
		failed[target] = true
		n.log.Debug("partition event stream from a peer broke; reconnecting", "partition", up.p, "peer", target, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-up.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// serve reads one stream to target until it fails; nil means it
// delivered something before it did.
func (up *upstream) serve(target string) error {
	c, err := up.u.n.peers.to(target)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(up.ctx)
	defer cancel()
	rpc, err := c.WatchPartition(ctx)
	if err != nil {
		return err
	}
	up.mu.Lock()
	up.rpc, up.source = rpc, target
	for _, w := range up.watches {
		w.mu.Lock()
		w.pending = nil // events to come again, from the cursor
		if !w.paused {
			up.sendLocked(watchRequest(up.p, w))
		}
		w.mu.Unlock()
	}
	up.mu.Unlock()
	defer func() {
		up.mu.Lock()
		up.rpc = nil
		up.mu.Unlock()
		_ = rpc.CloseRequest()  // best effort: the stream is being replaced
		_ = rpc.CloseResponse() // as above
	}()
	got := false
	for {
		resp, err := rpc.Receive()
		if err != nil {
			if got && up.ctx.Err() == nil {
				return nil
			}
			return err
		}
		got = true
		up.dispatch(resp)
	}
}

// dispatch hands a response to its watch.
func (up *upstream) dispatch(resp *clusterv1.WatchPartitionResponse) {
	up.mu.Lock()
	defer up.mu.Unlock()
	w := up.watches[resp.GetWatchId()]
	if w == nil {
		return // unwatched, or watched again under a new id
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case resp.GetEnded() != nil:
		w.err = domainError(resp.GetEnded())
		delete(up.watches, w.id)
	case w.paused:
		return // events of the watch before it paused
	case int64(len(w.pending)) >= up.u.buffer.Load():
		// The reader is far behind: drop what it has not read and stop
		// the watch until it has read what it has; it starts again from
		// its cursor, under a new id (take).
		w.pending, w.paused = nil, true
		up.sendLocked(unwatchRequest(up.p, w.id))
		up.u.overflows.Add(1)
	default:
		w.pending = append(w.pending, resp.GetEvents()...)
	}
	w.wake()
}

// remoteWatch is one channel's events read through its partition's
// upstream: a Stream.
type remoteWatch struct {
	up      *upstream
	channel string
	id      uint64 // guarded by up.mu
	notify  chan struct{}

	mu      sync.Mutex // guards following
	next    uint64     // seq of the next event to deliver
	pending []*heraldv1.Event
	paused  bool // the reader fell behind: no events until it reads again
	err     error
	closed  bool
}

func (w *remoteWatch) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Next implements Stream. A domain error (a trimmed cursor, one past the
// channel's head for good, a missing channel) ends the watch; a peer that
// fails does not: the upstream reads from another.
func (w *remoteWatch) Next(ctx context.Context, max int) ([]*heraldv1.Event, error) {
	for {
		if evs, err := w.take(max); len(evs) > 0 || err != nil {
			return evs, err
		}
		select {
		case <-w.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.up.ctx.Done():
			return nil, ErrClosed // the node is closing, or w was closed
		}
	}
}

// take returns buffered events in order, dropping any already delivered.
func (w *remoteWatch) take(max int) ([]*heraldv1.Event, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	for len(w.pending) > 0 && w.pending[0].GetSeq() < w.next {
		w.pending = w.pending[1:]
	}
	n := 0
	for n < len(w.pending) && n < max && w.pending[n].GetSeq() == w.next+uint64(n) {
		n++
	}
	evs := w.pending[:n:n]
	w.pending = w.pending[n:]
	w.next += uint64(n)
	if len(evs) > 0 {
		return evs, nil
	}
	if len(w.pending) > 0 || w.paused {
		// A gap, which the peer's contract rules out, or a watch paused
		// while its reader was behind: watch again from the cursor.
		w.pending = nil
		w.mu.Unlock()
		w.rewatch()
		w.mu.Lock()
		return nil, nil
	}
	if w.err != nil {
		return nil, w.err
	}
	return nil, nil
}

// rewatch asks for w's events again from its cursor, under a new id.
func (w *remoteWatch) rewatch() {
	up := w.up
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.watches[w.id] != w {
		return
	}
	delete(up.watches, w.id)
	w.mu.Lock()
	if !w.paused { // a paused watch was unwatched when it paused
		up.sendLocked(unwatchRequest(up.p, w.id))
	}
	w.paused = false
	up.registerLocked(w)
	w.mu.Unlock()
}

// Close implements Stream.
func (w *remoteWatch) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.wake()
	w.up.u.remove(w)
}

// sourceOf says which peer w's upstream reads from.
func (w *remoteWatch) sourceOf() string {
	w.up.mu.Lock()
	defer w.up.mu.Unlock()
	return w.up.source
}
