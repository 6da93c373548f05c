package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// messageService implements herald.v1.MessageService.
type messageService struct{ s *Server }

// validatePost checks a post before it is proposed.
func validatePost(req *heraldv1.PostMessageRequest) error {
	return firstErr(
		storage.ValidateChannelID(req.GetChannelId()),
		storage.ValidateText(req.GetText()),
		storage.ValidateClientMsgID(req.GetClientMsgId()),
	)
}

// post validates and applies a post; WebSocket posts share it.
func (s *Server) post(ctx context.Context, req *heraldv1.PostMessageRequest) (*heraldv1.PostMessageResponse, error) {
	if err := validatePost(req); err != nil {
		return nil, connectError(s.log, err)
	}
	if ok, wait := s.posts.allow(s.caller(ctx).User); !ok {
		return nil, rateLimited(wait, s.cfg.MaxPostsPerUser)
	}
	res, err := s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_PostMessage{PostMessage: req}})
	if err != nil {
		return nil, err
	}
	s.m.posts.Inc()
	return &heraldv1.PostMessageResponse{Message: res.Message, Duplicate: res.Duplicate}, nil
}

func (h *messageService) PostMessage(ctx context.Context, req *heraldv1.PostMessageRequest) (*heraldv1.PostMessageResponse, error) {
	return h.s.post(ctx, req)
}

func (h *messageService) EditMessage(ctx context.Context, req *heraldv1.EditMessageRequest) (*heraldv1.EditMessageResponse, error) {
	if err := firstErr(
		storage.ValidateChannelID(req.GetChannelId()),
		validateSeq("seq", req.GetSeq()),
		storage.ValidateText(req.GetText()),
	); err != nil {
		return nil, connectError(h.s.log, err)
	}
	res, err := h.s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_EditMessage{EditMessage: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.EditMessageResponse{Message: res.Message}, nil
}

func (h *messageService) DeleteMessage(ctx context.Context, req *heraldv1.DeleteMessageRequest) (*heraldv1.DeleteMessageResponse, error) {
	if err := firstErr(
		storage.ValidateChannelID(req.GetChannelId()),
		validateSeq("seq", req.GetSeq()),
	); err != nil {
		return nil, connectError(h.s.log, err)
	}
	res, err := h.s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_DeleteMessage{DeleteMessage: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.DeleteMessageResponse{Message: res.Message}, nil
}

func (h *messageService) AddReaction(ctx context.Context, req *heraldv1.AddReactionRequest) (*heraldv1.AddReactionResponse, error) {
	if err := validateReaction(req.GetChannelId(), req.GetSeq(), req.GetName()); err != nil {
		return nil, connectError(h.s.log, err)
	}
	res, err := h.s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_AddReaction{AddReaction: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.AddReactionResponse{Message: res.Message}, nil
}

func (h *messageService) RemoveReaction(ctx context.Context, req *heraldv1.RemoveReactionRequest) (*heraldv1.RemoveReactionResponse, error) {
	if err := validateReaction(req.GetChannelId(), req.GetSeq(), req.GetName()); err != nil {
		return nil, connectError(h.s.log, err)
	}
	res, err := h.s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_RemoveReaction{RemoveReaction: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.RemoveReactionResponse{Message: res.Message}, nil
}

func validateReaction(channelID string, seq uint64, name string) error {
	return firstErr(
		storage.ValidateChannelID(channelID),
		validateSeq("seq", seq),
		storage.ValidateReactionName(name),
	)
}

func validateSeq(field string, seq uint64) error {
	if seq == 0 {
		return &storage.Error{Kind: storage.ErrInvalidArgument, Msg: field + ": must be a message's seq (1 or more)"}
	}
	return nil
}

func (h *messageService) GetHistory(ctx context.Context, req *heraldv1.GetHistoryRequest) (*heraldv1.GetHistoryResponse, error) {
	if err := validateWindow(req.GetChannelId(), req.GetLimit(), req.GetAfterSeq(), req.GetBeforeSeq()); err != nil {
		return nil, connectError(h.s.log, err)
	}
	resp, err := h.s.cl.History(ctx, h.s.caller(ctx), req)
	if err != nil {
		return nil, connectError(h.s.log, err)
	}
	if msgs, cut := fitPage(resp.Messages, h.s.pageBudget(), 0); cut {
		resp.Messages, resp.HasMore = msgs, true
	}
	return resp, nil
}

func (h *messageService) GetThread(ctx context.Context, req *heraldv1.GetThreadRequest) (*heraldv1.GetThreadResponse, error) {
	if err := firstErr(
		validateWindow(req.GetChannelId(), req.GetLimit(), req.GetAfterSeq(), 0),
		validateSeq("thread_seq", req.GetThreadSeq()),
	); err != nil {
		return nil, connectError(h.s.log, err)
	}
	resp, err := h.s.cl.Thread(ctx, h.s.caller(ctx), req)
	if err != nil {
		return nil, connectError(h.s.log, err)
	}
	if msgs, cut := fitPage(resp.Replies, h.s.pageBudget(), encodedBound(resp.GetParent())); cut {
		resp.Replies, resp.HasMore = msgs, true
	}
	return resp, nil
}

// pageBudget is how many bytes of messages a history or thread page may
// carry: three quarters of the response limit, the rest left for the
// other fields and the envelope.
func (s *Server) pageBudget() int { return 3 * s.sendMaxBytes() / 4 }

// fitPage keeps the longest prefix of a page whose encoding, after used
// bytes of other fields, stays within budget in any codec, and reports
// whether it dropped any message. A page of messages near the text limit
// would otherwise exceed the response limit and fail however the client
// retried; a shorter page with has_more lets it read on. It keeps at least
// one message, so paging always advances.
func fitPage(msgs []*heraldv1.Message, budget, used int) ([]*heraldv1.Message, bool) {
	for i, m := range msgs {
		used += encodedBound(m)
		if used > budget && i > 0 {
			return msgs[:i], true
		}
	}
	return msgs, false
}

// encodedBound bounds a message's encoded size in protobuf and in
// protojson: its protobuf size, plus JSON's field names, quotes and
// timestamps, plus five bytes for each byte of text JSON escapes as \uXXXX.
func encodedBound(m *heraldv1.Message) int {
	n := proto.Size(m) + 512
	for _, r := range m.GetReactions() {
		n += 64 + 2*len(r.GetUsers())
	}
	text := m.GetText()
	for i := 0; i < len(text); i++ {
		if c := text[i]; c < 0x20 || c == '"' || c == '\\' {
			n += 5
		}
	}
	return n
}

func validateWindow(channelID string, limit uint32, after, before uint64) error {
	if err := storage.ValidateChannelID(channelID); err != nil {
		return err
	}
	if _, err := storage.ValidateLimit(limit); err != nil {
		return err
	}
	if before != 0 && after >= before-1 { // before <= after+1, without overflow at the top
		return &storage.Error{Kind: storage.ErrInvalidArgument, Msg: fmt.Sprintf(
			"before_seq %d and after_seq %d leave no room: both bounds are exclusive", before, after)}
	}
	return nil
}

// Subscribe streams a channel's events: subscribed, then the backlog and
// live events, until the client goes away or the stream must resync.
func (h *messageService) Subscribe(ctx context.Context, req *heraldv1.SubscribeRequest, stream *connect.ServerStream[heraldv1.SubscribeResponse]) error {
	if err := storage.ValidateChannelID(req.GetChannelId()); err != nil {
		return connectError(h.s.log, err)
	}
	id := h.s.identity(ctx)
	if err := h.s.conns.acquire(id.User); err != nil {
		return err
	}
	defer h.s.conns.release(id.User)
	var expired <-chan time.Time
	if !id.Expires.IsZero() {
		t := time.NewTimer(time.Until(id.Expires))
		defer t.Stop()
		expired = t.C
	}
	h.s.m.streams.Add(1)
	defer h.s.m.streams.Add(-1)
	snk := newStreamSink(h.s.cfg.QueueFrames)
	sub, err := h.s.hub.subscribe(ctx, id.Caller, snk, req.GetChannelId(), req.AfterSeq, "")
	if re, ok := errors.AsType[*resyncError](err); ok {
		return stream.Send(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_ResyncRequired{
			ResyncRequired: re.resync}})
	}
	if err != nil {
		return connectError(h.s.log, err)
	}
	defer h.s.hub.unsubscribe(sub)
	for {
		items, end, overflow := snk.take()
		for _, it := range items {
			if err := stream.Send(it); err != nil {
				return nil // the client went away
			}
		}
		switch {
		case end != nil && end.err != nil:
			return connectError(h.s.log, end.err)
		case end != nil:
			return stream.Send(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_ResyncRequired{
				ResyncRequired: end.resync}})
		case overflow:
			sent, _ := h.s.hub.unsubscribe(sub)
			resync := &heraldv1.ResyncRequired{ChannelId: req.GetChannelId(),
				Reason: heraldv1.ResyncRequired_SLOW_CONSUMER, LastSentSeq: sent}
			h.s.m.resync(resync)
			return stream.Send(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_ResyncRequired{
				ResyncRequired: resync}})
		case len(items) > 0:
			continue
		}
		select {
		case <-snk.notify:
		case <-expired:
			return connect.NewError(connect.CodeUnauthenticated, errors.New("token expired; subscribe again with a fresh token"))
		case <-ctx.Done():
			return nil
		case <-h.s.hub.ctx.Done():
			_ = stream.Send(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_Reconnect{
				Reconnect: h.s.reconnect()}}) // best effort: the stream ends either way
			return connect.NewError(connect.CodeUnavailable, errors.New("node is shutting down"))
		}
	}
}
