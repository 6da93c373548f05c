package cluster

import (
	"context"
	"fmt"
	"sync"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/partition"
)

// WatchPartition serves the watches a peer starts on one stream, each from
// this node's replica's feed, until the peer ends the stream or the replica
// stops being current (then unavailable: the peer reads elsewhere). A
// watch whose cursor cannot be served, or whose channel does not exist,
// ends alone with a DomainError; any other failure ends the stream.
func (s *rpcServer) WatchPartition(ctx context.Context, stream *connect.BidiStream[clusterv1.WatchPartitionRequest, clusterv1.WatchPartitionResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return nil // the peer went away before asking anything
	}
	p := first.GetPartition()
	r := s.n.Replica(p)
	if r == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"node %s holds no replica of partition %d", s.n.cfg.NodeID, p))
	}
	lapsed, ok := s.n.cur.lease(p, r, 0)
	if !ok {
		return s.notCurrent(r)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer context.AfterFunc(lapsed, cancel)()
	ws := &watchServer{n: s.n, r: r, stream: stream, cancel: cancel, watches: map[uint64]context.CancelFunc{}}
	received := make(chan struct{})
	go func() { // ends when the request body does, at the latest when this handler returns
		defer close(received)
		ws.receive(wctx, first)
	}()
	ending := false
	select {
	case <-wctx.Done():
	case <-received:
	case <-s.n.streamsEnd: // the server is shutting down: the peer reads elsewhere
		ending = true
	}
	cancel()
	ws.stop()
	switch {
	case ending:
		return errStreamsEnd(s.n.cfg.NodeID)
	case ctx.Err() != nil:
		return nil
	case lapsed.Err() != nil:
		return s.notCurrent(r)
	}
	return ws.err()
}

// watchServer runs one WatchPartition stream's watches.
type watchServer struct {
	n      *Node
	r      *partition.Partition
	stream *connect.BidiStream[clusterv1.WatchPartitionRequest, clusterv1.WatchPartitionResponse]
	cancel context.CancelFunc // ends the stream
	wg     sync.WaitGroup

	sendMu sync.Mutex // serializes Send

	mu      sync.Mutex // guards following
	watches map[uint64]context.CancelFunc
	stopped bool
	failed  error // why the stream ends, if a watch ended it
}

// receive starts and stops watches as the peer asks, from first on.
func (ws *watchServer) receive(ctx context.Context, req *clusterv1.WatchPartitionRequest) {
	for {
		if req.GetPartition() != ws.r.ID() {
			ws.fail(connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"a WatchPartition stream reads one partition: got %d on the stream of %d", req.GetPartition(), ws.r.ID())))
			return
		}
		switch {
		case req.GetWatch() != nil:
			ws.start(ctx, req.GetWatch())
		case req.GetUnwatch() != 0:
			ws.mu.Lock()
			if stop := ws.watches[req.GetUnwatch()]; stop != nil {
				stop()
				delete(ws.watches, req.GetUnwatch())
			}
			ws.mu.Unlock()
		}
		var err error
		if req, err = ws.stream.Receive(); err != nil {
			return
		}
	}
}

// start runs watch w in a goroutine of its own.
func (ws *watchServer) start(ctx context.Context, w *clusterv1.ChannelWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.stopped || ws.watches[w.GetId()] != nil {
		return
	}
	wctx, stop := context.WithCancel(ctx)
	ws.watches[w.GetId()] = stop
	ws.wg.Go(func() {
		defer stop()
		ws.run(wctx, w)
	})
}

// run streams one watch's events until it ends or ctx does.
func (ws *watchServer) run(ctx context.Context, w *clusterv1.ChannelWatch) {
	id := w.GetId()
	if err := ws.n.leaderCursorAhead(ctx, ws.r, w.GetChannelId(), w.GetAfterSeq()); err != nil {
		ws.end(id, err)
		return
	}
	feed := ws.r.Feed().Watch(w.GetChannelId(), w.GetAfterSeq())
	defer feed.Close()
	for {
		evs, err := feed.Next(ctx, watchBatch)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			ws.end(id, err)
			return
		}
		if err := ws.send(&clusterv1.WatchPartitionResponse{WatchId: id, Events: evs}); err != nil {
			ws.fail(nil) // the peer is gone
			return
		}
	}
}

// end ends watch id with err: alone if err is a domain error, with the
// whole stream otherwise.
func (ws *watchServer) end(id uint64, err error) {
	de, ok := toWire(err)
	if !ok {
		ws.fail(watchError(err))
		return
	}
	if err := ws.send(&clusterv1.WatchPartitionResponse{WatchId: id, Ended: de}); err != nil {
		ws.fail(nil)
	}
	ws.mu.Lock()
	delete(ws.watches, id)
	ws.mu.Unlock()
}

func (ws *watchServer) send(resp *clusterv1.WatchPartitionResponse) error {
	ws.sendMu.Lock()
	defer ws.sendMu.Unlock()
	return ws.stream.Send(resp)
}

// fail ends the stream with err (nil: the peer is gone).
func (ws *watchServer) fail(err error) {
	ws.mu.Lock()
	if ws.failed == nil {
		ws.failed = err
	}
	ws.mu.Unlock()
	ws.cancel()
}

// stop ends every watch and waits for them; none starts after.
func (ws *watchServer) stop() {
	ws.mu.Lock()
	ws.stopped = true
	for _, stop := range ws.watches {
		stop()
	}
	ws.mu.Unlock()
	ws.wg.Wait()
}

func (ws *watchServer) err() error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.failed
}
