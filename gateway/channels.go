package gateway

import (
	"context"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// channelService implements herald.v1.ChannelService.
type channelService struct{ s *Server }

// apply validates nothing: each handler validates first, then apply stamps
// the caller, proposes, and maps the error.
func (s *Server) apply(ctx context.Context, cmd *clusterv1.Command) (*storage.Result, error) {
	c := s.caller(ctx)
	cmd.User, cmd.Admin = c.User, c.Admin
	res, err := s.cl.Apply(ctx, cmd)
	if err != nil {
		return nil, connectError(s.log, err)
	}
	return res, nil
}

func (h *channelService) CreateChannel(ctx context.Context, req *heraldv1.CreateChannelRequest) (*heraldv1.CreateChannelResponse, error) {
	if err := firstErr(
		storage.ValidateChannelID(req.GetChannelId()),
		storage.ValidateLabel("name", req.GetName(), storage.MaxNameRunes),
		storage.ValidateLabel("topic", req.GetTopic(), storage.MaxTopicRunes),
	); err != nil {
		return nil, connectError(h.s.log, err)
	}
	res, err := h.s.apply(ctx, &clusterv1.Command{Op: &clusterv1.Command_CreateChannel{CreateChannel: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.CreateChannelResponse{Channel: res.Channel}, nil
}

func (h *channelService) GetChannel(ctx context.Context, req *heraldv1.GetChannelRequest) (*heraldv1.GetChannelResponse, error) {
	if err := storage.ValidateChannelID(req.GetChannelId()); err != nil {
		return nil, connectError(h.s.log, err)
	}
	ch, member, err := h.s.cl.GetChannel(ctx, h.s.caller(ctx), req.GetChannelId())
	if err != nil {
		return nil, connectError(h.s.log, err)
	}
	return &heraldv1.GetChannelResponse{Channel: ch, IsMember: member}, nil
}

func (h *channelService) ListChannels(ctx context.Context, req *heraldv1.ListChannelsRequest) (*heraldv1.ListChannelsResponse, error) {
	if _, err := storage.ValidateLimit(req.GetLimit()); err != nil {
		return nil, connectError(h.s.log, err)
	}
	if c := req.GetCursor(); c != "" {
		if err := storage.ValidateChannelID(c); err != nil {
			return nil, invalid("cursor: not a cursor this server returned")
		}
	}
	resp, err := h.s.cl.ListChannels(ctx, h.s.caller(ctx), req)
	if err != nil {
		return nil, connectError(h.s.log, err)
	}
	return resp, nil
}

func (h *channelService) JoinChannel(ctx context.Context, req *heraldv1.JoinChannelRequest) (*heraldv1.JoinChannelResponse, error) {
	res, err := h.s.applyChannelOp(ctx, req.GetChannelId(), &clusterv1.Command{
		Op: &clusterv1.Command_JoinChannel{JoinChannel: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.JoinChannelResponse{Channel: res.Channel}, nil
}

func (h *channelService) LeaveChannel(ctx context.Context, req *heraldv1.LeaveChannelRequest) (*heraldv1.LeaveChannelResponse, error) {
	res, err := h.s.applyChannelOp(ctx, req.GetChannelId(), &clusterv1.Command{
		Op: &clusterv1.Command_LeaveChannel{LeaveChannel: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.LeaveChannelResponse{Channel: res.Channel}, nil
}

func (h *channelService) ArchiveChannel(ctx context.Context, req *heraldv1.ArchiveChannelRequest) (*heraldv1.ArchiveChannelResponse, error) {
	res, err := h.s.applyChannelOp(ctx, req.GetChannelId(), &clusterv1.Command{
		Op: &clusterv1.Command_ArchiveChannel{ArchiveChannel: req}})
	if err != nil {
		return nil, err
	}
	return &heraldv1.ArchiveChannelResponse{Channel: res.Channel}, nil
}

// applyChannelOp validates a channel id, then applies cmd.
func (s *Server) applyChannelOp(ctx context.Context, channelID string, cmd *clusterv1.Command) (*storage.Result, error) {
	if err := storage.ValidateChannelID(channelID); err != nil {
		return nil, connectError(s.log, err)
	}
	return s.apply(ctx, cmd)
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
