package gateway

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

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
	res, err := s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_PostMessage{PostMessage: req}})
	if err != nil {
		return nil, err
	}
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
	return resp, nil
}

func validateWindow(channelID string, limit uint32, after, before uint64) error {
	if err := storage.ValidateChannelID(channelID); err != nil {
		return err
	}
	if _, err := storage.ValidateLimit(limit); err != nil {
		return err
	}
	if before != 0 && before <= after+1 {
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
	snk := newStreamSink(h.s.cfg.QueueFrames)
	sub, err := h.s.hub.subscribe(ctx, h.s.caller(ctx), snk, req.GetChannelId(), req.AfterSeq, "")
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
			return stream.Send(&heraldv1.SubscribeResponse{Kind: &heraldv1.SubscribeResponse_ResyncRequired{
				ResyncRequired: &heraldv1.ResyncRequired{ChannelId: req.GetChannelId(),
					Reason: heraldv1.ResyncRequired_SLOW_CONSUMER, LastSentSeq: sent}}})
		case len(items) > 0:
			continue
		}
		select {
		case <-snk.notify:
		case <-ctx.Done():
			return nil
		case <-h.s.hub.ctx.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("node is shutting down"))
		}
	}
}
