package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// streamPeer is a ClusterService whose ApplyStream runs serve.
type streamPeer struct {
	clusterv1connect.UnimplementedClusterServiceHandler
	serve func(context.Context, *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error
}

func (p streamPeer) ApplyStream(ctx context.Context, s *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error {
	return p.serve(ctx, s)
}

// refuseStreams is a handler interceptor that refuses every stream the way
// a node refuses a credential it does not take.
type refuseStreams struct{}

func (refuseStreams) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }
func (refuseStreams) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}
func (refuseStreams) WrapStreamingHandler(connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(context.Context, connect.StreamingHandlerConn) error { return errUnauthenticated }
}

// servePeer starts an h2c HTTP server for p and returns its address.
func servePeer(t *testing.T, p streamPeer, opts ...connect.HandlerOption) (string, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(clusterv1connect.NewClusterServiceHandler(p, opts...))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.Listener.Addr().String(), srv
}

// testForwarders forwards to addr over h2c, as a node's peers do, and
// records what reaching the peer did; cancel is the node's end.
func testForwarders(t *testing.T, addr string) (fs *forwarders, reach *reachability, cancel func()) {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	c := clusterv1connect.NewClusterServiceClient(&http.Client{Transport: tr}, "http://"+addr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reach = newReachability()
	return &forwarders{ctx: ctx, log: slog.New(slog.DiscardHandler),
		to:   func(string) (clusterv1connect.ClusterServiceClient, error) { return c, nil },
		note: func(ctx context.Context, id string, err error) { reach.note(ctx, id, err, false) },
	}, reach, cancel
}

func forwardPost(t *testing.T, fs *forwarders, text string) (*storage.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return fs.send(ctx, "peer", &clusterv1.ApplyRequest{Partition: 3, Command: &clusterv1.Command{User: "alice",
		Op: &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{ChannelId: "general", Text: text, ClientMsgId: "m-" + text}}}})()
}

// TestForwardStreamOutcomes checks what a post forwarded on the ordered
// stream reports when the stream fails, which decides whether routing may
// try it elsewhere and whether the caller is told it may have applied:
// a stream that never reached the peer or that the peer refused before
// its handler ran applied nothing; one that broke after the peer read the
// command may have applied it.
func TestForwardStreamOutcomes(t *testing.T) {
	t.Parallel()

	t.Run("answered", func(t *testing.T) {
		t.Parallel()
		ended := make(chan struct{})
		addr, _ := servePeer(t, streamPeer{serve: func(_ context.Context, s *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error {
			for {
				req, err := s.Receive()
				if errors.Is(err, io.EOF) {
					close(ended)
					return nil
				}
				if err != nil {
					return err
				}
				text := req.GetRequest().GetCommand().GetPostMessage().GetText()
				ok := &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_Ok{Ok: &clusterv1.CommandResult{
					Message: &heraldv1.Message{Text: text}}}}
				if err := s.Send(&clusterv1.ApplyStreamResponse{Id: req.GetId(), Response: ok}); err != nil {
					return err
				}
			}
		}})
		fs, reach, end := testForwarders(t, addr)
		for _, text := range []string{"a", "bb", "ccc"} {
			res, err := forwardPost(t, fs, text)
			if err != nil {
				t.Fatalf("post %q: %v", text, err)
			}
			if got := res.Message.GetText(); got != text {
				t.Errorf("post %q: got the answer for %q", text, got)
			}
		}
		if reach.down("peer") {
			t.Error("a peer that answered counts as down")
		}
		end()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream is still open 10 s after the node's end")
		}
	})

	t.Run("dial fails", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		fs, reach, _ := testForwarders(t, addr)
		for i := range 2 { // the second send finds no stream and dials again
			_, err := forwardPost(t, fs, "x")
			if !errors.Is(err, ErrNotApplied) || !errors.Is(err, errPeerUnreachable) || errors.Is(err, ErrIndeterminate) {
				t.Fatalf("send %d to a closed port: %v; want not applied, peer unreachable", i, err)
			}
		}
		if !reach.down("peer") {
			t.Error("a peer that could not be dialed does not count as down")
		}
	})

	t.Run("credential refused", func(t *testing.T) {
		t.Parallel()
		addr, _ := servePeer(t, streamPeer{serve: func(context.Context, *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error {
			t.Error("the handler ran for a refused stream")
			return nil
		}}, connect.WithInterceptors(refuseStreams{}))
		fs, _, _ := testForwarders(t, addr)
		for i := range 2 {
			_, err := forwardPost(t, fs, "x")
			if !errors.Is(err, ErrNotApplied) || errors.Is(err, ErrIndeterminate) || connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("send %d to a peer refusing the credential: %v; want not applied, unauthenticated", i, err)
			}
		}
	})

	t.Run("broken after the peer read it", func(t *testing.T) {
		t.Parallel()
		read := make(chan struct{})
		addr, srv := servePeer(t, streamPeer{serve: func(ctx context.Context, s *connect.BidiStream[clusterv1.ApplyStreamRequest, clusterv1.ApplyStreamResponse]) error {
			if _, err := s.Receive(); err != nil {
				return err
			}
			close(read)
			<-ctx.Done() // no answer: the connection is cut first
			return ctx.Err()
		}})
		go func() {
			<-read
			srv.CloseClientConnections()
		}()
		fs, reach, _ := testForwarders(t, addr)
		_, err := forwardPost(t, fs, "x")
		if !errors.Is(err, ErrIndeterminate) || errors.Is(err, ErrNotApplied) {
			t.Fatalf("a stream cut after the peer read the post: %v; want indeterminate", err)
		}
		if !reach.down("peer") {
			t.Error("a peer whose connection broke does not count as down")
		}
	})
}
