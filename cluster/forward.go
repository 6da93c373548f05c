package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/storage"
)

// forwarders keeps one ApplyStream open to each peer that Submit forwards
// commands to: commands sent on it reach the peer in the order they were
// sent, and many are in flight at once.
type forwarders struct {
	n  *Node
	mu sync.Mutex
	to map[string]*forwarder
}

// forwarder is the stream to one peer; mu orders the sends.
type forwarder struct {
	f      *forwarders
	target string
	mu     sync.Mutex
	cur    *fwdStream
}

// fwdStream is one ApplyStream and the commands waiting for its answers.
type fwdStream struct {
	s      *connect.BidiStreamForClientSimple[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]
	cancel context.CancelFunc
	next   uint64
	waits  map[uint64]chan *clusterv1.ApplyResponse // closed: the stream failed
}

func (fs *forwarders) get(target string) *forwarder {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.to == nil {
		fs.to = map[string]*forwarder{}
	}
	f := fs.to[target]
	if f == nil {
		f = &forwarder{f: fs, target: target}
		fs.to[target] = f
	}
	return f
}

// send forwards req to target and returns how to wait for its answer
// (within ctx).
func (fs *forwarders) send(ctx context.Context, target string, req *clusterv1.ApplyRequest) func() (*storage.Result, error) {
	f := fs.get(target)
	ch, id, st, err := f.send(req)
	if err != nil {
		return func() (*storage.Result, error) { return nil, err }
	}
	return func() (*storage.Result, error) {
		select {
		case resp, ok := <-ch:
			if !ok {
				return nil, errStreamBroken
			}
			return applyResult(target, req.GetPartition(), resp)
		case <-ctx.Done():
			f.forget(st, id)
			return nil, fmt.Errorf("%w: no answer from %s: %w", ErrIndeterminate, target, ctx.Err())
		}
	}
}

func (f *forwarder) send(req *clusterv1.ApplyRequest) (chan *clusterv1.ApplyResponse, uint64, *fwdStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur == nil {
		c, err := f.f.n.peers.to(f.target)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
		ctx, cancel := context.WithCancel(f.f.n.ctx)
		s, err := c.ApplyStream(ctx)
		if err != nil {
			cancel()
			return nil, 0, nil, fmt.Errorf("%w: forward to %s: %w", ErrNotApplied, f.target, err)
		}
		st := &fwdStream{s: s, cancel: cancel, waits: map[uint64]chan *clusterv1.ApplyResponse{}}
		f.cur = st
		go f.receive(st)
	}
	st := f.cur
	st.next++
	id := st.next
	ch := make(chan *clusterv1.ApplyResponse, 1)
	st.waits[id] = ch
	if err := st.s.Send(&clusterv1.ApplyStreamRequest{Id: id, Request: req}); err != nil {
		// The stream is gone; its receiver fails what waits on it. This
		// command may have gone out before the failure showed.
		delete(st.waits, id)
		f.drop(st)
		return nil, 0, nil, fmt.Errorf("%w: %w: forward to %s: %w", ErrIndeterminate, errPeerUnreachable, f.target, err)
	}
	return ch, id, st, nil
}

// receive hands the stream's answers to their waiters until it fails,
// then fails the rest.
func (f *forwarder) receive(st *fwdStream) {
	for {
		resp, err := st.s.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) && f.f.n.ctx.Err() == nil {
				f.f.n.log.Debug("forwarding stream failed", "peer", f.target, "err", err)
			}
			break
		}
		f.mu.Lock()
		ch := st.waits[resp.GetId()]
		delete(st.waits, resp.GetId())
		f.mu.Unlock()
		if ch != nil {
			ch <- resp.GetResponse()
		}
	}
	f.mu.Lock()
	f.drop(st)
	waits := st.waits
	st.waits = map[uint64]chan *clusterv1.ApplyResponse{}
	f.mu.Unlock()
	for _, ch := range waits {
		close(ch)
	}
	_ = st.s.CloseResponse()
}

// drop retires st, if it is still the current stream; f.mu is held.
func (f *forwarder) drop(st *fwdStream) {
	if f.cur == st {
		f.cur = nil
		_ = st.s.CloseRequest()
		st.cancel()
	}
}

func (f *forwarder) forget(st *fwdStream, id uint64) {
	f.mu.Lock()
	delete(st.waits, id)
	f.mu.Unlock()
}

// ApplyStream serves a peer's forwarding stream: commands are proposed in
// the order they arrive, each answered once it has applied.
func (s *rpcServer) ApplyStream(ctx context.Context, stream *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error {
	var mu sync.Mutex // orders Send
	var wg sync.WaitGroup
	defer wg.Wait()
	answer := func(id uint64, res *storage.Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		_ = stream.Send(&clusterv1.ApplyStreamResponse{Id: id, Response: s.applyResponse(res, err)}) // a gone caller gets nothing
	}
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		id := req.GetId()
		cctx, cancel := s.n.withTimeout(ctx)
		wait, err := s.n.submitHere(cctx, req.GetRequest())
		if err != nil {
			cancel()
			answer(id, nil, err)
			continue
		}
		wg.Go(func() {
			defer cancel()
			res, err := wait()
			answer(id, res, err)
		})
	}
}
