package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// streamPoster posts over one PostMessages stream to one node: every
// goroutine calling post has one post in flight on it, and the answers are
// matched to them by client_msg_id. A stream that fails is opened again at
// the next post.
type streamPoster struct {
	client heraldv1connect.MessageServiceClient

	mu     sync.Mutex // orders Send; guards the fields below
	stream *connect.BidiStreamForClientSimple[heraldv1.PostMessageRequest, heraldv1.PostMessagesResponse]
	cancel context.CancelFunc
	waits  map[string]chan *heraldv1.PostMessagesResponse // closed: the stream failed
}

// newStreamPoster is a poster with one HTTP/2 cleartext connection to
// addr, speaking Connect with binary protobuf.
func newStreamPoster(addr string) *streamPoster {
	tr := &http.Transport{Protocols: new(http.Protocols), IdleConnTimeout: time.Minute}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &streamPoster{client: heraldv1connect.NewMessageServiceClient(&http.Client{Transport: tr}, "http://"+addr)}
}

func (s *streamPoster) post(ctx context.Context, channel, text, id string) error {
	ch := make(chan *heraldv1.PostMessagesResponse, 1)
	s.mu.Lock()
	if s.stream == nil {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		st, err := s.client.PostMessages(sctx)
		if err != nil {
			cancel()
			s.mu.Unlock()
			return err
		}
		s.stream, s.cancel, s.waits = st, cancel, map[string]chan *heraldv1.PostMessagesResponse{}
		go s.receive(st, s.waits)
	}
	s.waits[id] = ch
	st := s.stream
	err := st.Send(&heraldv1.PostMessageRequest{ChannelId: channel, Text: text, ClientMsgId: id})
	if err != nil {
		s.retire(st)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return connect.NewError(connect.CodeUnavailable, errors.New("the stream failed before the answer came"))
		}
		if e := resp.GetError(); e != nil {
			var code connect.Code
			if code.UnmarshalText([]byte(e.GetCode())) != nil {
				code = connect.CodeUnknown
			}
			return connect.NewError(code, fmt.Errorf("%s", e.GetMessage()))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// receive hands out st's answers until it fails, then fails the rest.
func (s *streamPoster) receive(st *connect.BidiStreamForClientSimple[heraldv1.PostMessageRequest, heraldv1.PostMessagesResponse], waits map[string]chan *heraldv1.PostMessagesResponse) {
	for {
		resp, err := st.Receive()
		if err != nil {
			break
		}
		s.mu.Lock()
		ch := waits[resp.GetClientMsgId()]
		delete(waits, resp.GetClientMsgId())
		s.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
	s.mu.Lock()
	s.retire(st)
	for id, ch := range waits {
		close(ch)
		delete(waits, id)
	}
	s.mu.Unlock()
}

// retire drops st if it is the current stream; s.mu is held.
func (s *streamPoster) retire(st *connect.BidiStreamForClientSimple[heraldv1.PostMessageRequest, heraldv1.PostMessagesResponse]) {
	if s.stream == st {
		s.stream = nil
		s.cancel()
	}
}

// close ends the current stream.
func (s *streamPoster) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream != nil {
		s.retire(s.stream)
	}
}
