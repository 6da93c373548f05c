package gateway

import (
	"context"
	"errors"
	"io"
	"sync"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// MaxPipelinedPosts is how many posts one PostMessages stream or WebSocket
// connection may have in flight; past it the gateway reads no further
// request until one is answered.
const MaxPipelinedPosts = 1024

// errNoClientMsgID refuses a pipelined post without a client_msg_id.
var errNoClientMsgID = invalid("a pipelined post needs a client_msg_id: its answer carries it, and it makes a retry after a failover safe")

// submitPost checks a pipelined post and sends it on its way, in the order
// of the calls; the function it returns waits for the answer.
func (s *Server) submitPost(ctx context.Context, req *heraldv1.PostMessageRequest) func() (*heraldv1.PostMessageResponse, *connect.Error) {
	fail := func(ce *connect.Error) func() (*heraldv1.PostMessageResponse, *connect.Error) {
		return func() (*heraldv1.PostMessageResponse, *connect.Error) { return nil, ce }
	}
	if err := validatePost(req); err != nil {
		return fail(connectError(s.log, err))
	}
	if req.GetClientMsgId() == "" {
		return fail(errNoClientMsgID)
	}
	c := s.caller(ctx)
	if ok, wait := s.posts.allow(c.User); !ok {
		return fail(rateLimited(wait, s.cfg.MaxPostsPerUser))
	}
	pd := s.cl.Submit(ctx, &clusterv1.Command{User: c.User, Admin: c.Admin,
		Op: &clusterv1.Command_PostMessage{PostMessage: req}})
	return func() (*heraldv1.PostMessageResponse, *connect.Error) {
		res, err := pd.Wait()
		if err != nil {
			return nil, connectError(s.log, err)
		}
		s.m.posts.Inc()
		return &heraldv1.PostMessageResponse{Message: res.Message, Duplicate: res.Duplicate}, nil
	}
}

// wireError is a failed request's answer inside a stream or frame.
func wireError(ce *connect.Error) *heraldv1.Error {
	return &heraldv1.Error{Code: ce.Code().String(), Message: ce.Message(), Outcome: ce.Meta().Get(OutcomeHeader)}
}

func (h *messageService) PostMessages(ctx context.Context, stream *connect.BidiStream[heraldv1.PostMessageRequest, heraldv1.PostMessagesResponse]) error {
	window := make(chan struct{}, MaxPipelinedPosts)
	var mu sync.Mutex // orders Send
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return connectError(h.s.log, err)
		}
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return nil // the client went away
		}
		wait := h.s.submitPost(ctx, req)
		id := req.GetClientMsgId()
		wg.Go(func() {
			resp := &heraldv1.PostMessagesResponse{ClientMsgId: id}
			if ok, ce := wait(); ce != nil {
				resp.Result = &heraldv1.PostMessagesResponse_Error{Error: wireError(ce)}
			} else {
				resp.Result = &heraldv1.PostMessagesResponse_Ok{Ok: ok}
			}
			mu.Lock()
			_ = stream.Send(resp) // fails only when the client went away
			mu.Unlock()
			<-window
		})
	}
}
