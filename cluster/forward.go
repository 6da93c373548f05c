package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	"github.com/heraldhq/herald/storage"
)

// forwarders keeps one ApplyStream open to each peer that posts with a
// client_msg_id are forwarded to, by Submit and by Apply: commands sent on
// it reach the peer in the order they were sent, many are in flight at
// once, and each costs a message each way instead of an HTTP/2 request of
// its own (headers, a stream, a handler goroutine and a credential).
type forwarders struct {
	ctx  context.Context // ends when the node closes, and with it every stream
	log  *slog.Logger
	to   func(id string) (clusterv1connect.ClusterServiceClient, error)
	note func(ctx context.Context, id string, err error) // what reaching id did (reachability.note)

	mu    sync.Mutex
	peers map[string]*forwarder
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
	waits  map[uint64]chan *clusterv1.ApplyResponse // closed once the stream failed
	err    error                                    // why it failed: set before waits are closed
	once   sync.Once                                // closes the stream
	stop   func() bool                              // undoes the close at the node's end
}

func (fs *forwarders) get(target string) *forwarder {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.peers == nil {
		fs.peers = map[string]*forwarder{}
	}
	f := fs.peers[target]
	if f == nil {
		f = &forwarder{f: fs, target: target}
		fs.peers[target] = f
	}
	return f
}

// send forwards req to target and returns how to wait for its answer
// (within ctx). Its errors are Apply's: ErrNotApplied if the command
// cannot have reached the peer (no address, the dial failed, the peer
// refused the stream's credential), ErrIndeterminate if it may have.
func (fs *forwarders) send(ctx context.Context, target string, req *clusterv1.ApplyRequest) func() (*storage.Result, error) {
	f := fs.get(target)
	ch, id, st, err := f.send(req)
	if err != nil {
		if errors.Is(err, errPeerUnreachable) {
			fs.note(ctx, target, err)
		}
		return func() (*storage.Result, error) { return nil, err }
	}
	return func() (*storage.Result, error) {
		select {
		case resp, ok := <-ch:
			if !ok {
				fs.note(ctx, target, st.err)
				return nil, st.err
			}
			fs.note(ctx, target, nil)
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
		c, err := f.f.to(f.target)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
		ctx, cancel := context.WithCancel(f.f.ctx)
		s, err := c.ApplyStream(ctx)
		if err != nil {
			cancel()
			return nil, 0, nil, fmt.Errorf("%w: forward to %s: %w", ErrNotApplied, f.target, err)
		}
		st := &fwdStream{s: s, cancel: cancel, waits: map[uint64]chan *clusterv1.ApplyResponse{}}
		// Cancelling a stream's context does not end it while its request
		// side is open (net/http's HTTP/2 client watches it only once the
		// body is done): at the node's end, close the request side, after
		// any send in progress, and the peer ends the stream.
		st.stop = context.AfterFunc(ctx, func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.retire(st)
			st.close()
		})
		f.cur = st
		go f.receive(st)
	}
	st := f.cur
	st.next++
	id := st.next
	ch := make(chan *clusterv1.ApplyResponse, 1)
	st.waits[id] = ch
	if err := st.s.Send(&clusterv1.ApplyStreamRequest{Id: id, Request: req}); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream has ended (connect-go: Receive tells why). Its
			// receiver fails this command with the rest, as not applied
			// if the stream never reached the peer.
			f.retire(st)
			return ch, id, st, nil
		}
		// This command may have gone out before the failure showed.
		delete(st.waits, id)
		f.retire(st)
		st.close()
		return nil, 0, nil, fmt.Errorf("%w: %w: forward to %s: %w", ErrIndeterminate, errPeerUnreachable, f.target, err)
	}
	return ch, id, st, nil
}

// receive hands the stream's answers to their waiters until it fails,
// then fails the rest with the stream's failure.
func (f *forwarder) receive(st *fwdStream) {
	var err error
	for {
		var resp *clusterv1.ApplyStreamResponse
		resp, err = st.s.Receive()
		if err != nil {
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
	if !errors.Is(err, io.EOF) && f.f.ctx.Err() == nil {
		f.f.log.Debug("forwarding stream failed", "peer", f.target, "err", err)
	}
	f.mu.Lock()
	f.retire(st)
	st.err = streamFailure(f.target, err)
	waits := st.waits
	st.waits = map[uint64]chan *clusterv1.ApplyResponse{}
	f.mu.Unlock()
	for _, ch := range waits {
		close(ch)
	}
	_ = st.s.CloseResponse()
	st.close()
}

// streamFailure is the outcome of the commands still waiting on a
// forwarding stream to target when it failed with err: not applied if the
// stream never reached the peer (the dial failed) or the peer refused its
// credential, which it checks before its handler reads a command; else
// each may have applied.
func streamFailure(target string, err error) error {
	if errors.Is(err, io.EOF) {
		return errStreamBroken
	}
	return fmt.Errorf("forward to %s: %w", target, rpcOutcome(err))
}

// retire stops new commands going on st; f.mu is held.
func (f *forwarder) retire(st *fwdStream) {
	if f.cur == st {
		f.cur = nil
	}
}

// close ends both directions of st, once; its receiver then fails. No
// send may be in progress on st: f.mu is held, or st is retired.
func (st *fwdStream) close() {
	st.once.Do(func() {
		st.stop()
		_ = st.s.CloseRequest()
		st.cancel()
	})
}

func (f *forwarder) forget(st *fwdStream, id uint64) {
	f.mu.Lock()
	delete(st.waits, id)
	f.mu.Unlock()
}

// ApplyStream serves a peer's forwarding stream: commands are proposed in
// the order they arrive, each answered once it has applied. It ends when
// the peer ends it, or with unavailable when this node stops serving
// (EndStreams, Close), once every command it proposed has been answered.
func (s *rpcServer) ApplyStream(ctx context.Context, stream *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error {
	var mu sync.Mutex // orders Send
	var wg sync.WaitGroup
	defer wg.Wait()
	answer := func(id uint64, res *storage.Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		_ = stream.Send(&clusterv1.ApplyStreamResponse{Id: id, Response: s.applyResponse(res, err)}) // a gone caller gets nothing
	}
	reqs := make(chan *clusterv1.ApplyStreamRequest)
	failed := make(chan error, 1)
	go func() { // ends when the request body does, at the latest when this handler returns
		for {
			req, err := stream.Receive()
			if err != nil {
				failed <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var req *clusterv1.ApplyStreamRequest
		select {
		case req = <-reqs:
		case err := <-failed:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-s.n.streamsEnd:
			return errStreamsEnd(s.n.cfg.NodeID)
		case <-s.n.ctx.Done():
			return errStreamsEnd(s.n.cfg.NodeID)
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

// errStreamsEnd ends a forwarding stream to a node that stops serving.
func errStreamsEnd(node string) error {
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("node %s is shutting down", node))
}
