package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// Caller is who a request is for.
type Caller = storage.Caller

// CommandChannel returns the channel a command is about.
func CommandChannel(cmd *clusterv1.Command) string {
	switch op := cmd.GetOp().(type) {
	case *clusterv1.Command_CreateChannel:
		return op.CreateChannel.GetChannelId()
	case *clusterv1.Command_JoinChannel:
		return op.JoinChannel.GetChannelId()
	case *clusterv1.Command_LeaveChannel:
		return op.LeaveChannel.GetChannelId()
	case *clusterv1.Command_ArchiveChannel:
		return op.ArchiveChannel.GetChannelId()
	case *clusterv1.Command_PostMessage:
		return op.PostMessage.GetChannelId()
	case *clusterv1.Command_EditMessage:
		return op.EditMessage.GetChannelId()
	case *clusterv1.Command_DeleteMessage:
		return op.DeleteMessage.GetChannelId()
	case *clusterv1.Command_AddReaction:
		return op.AddReaction.GetChannelId()
	case *clusterv1.Command_RemoveReaction:
		return op.RemoveReaction.GetChannelId()
	case *clusterv1.Command_TrimEvents:
		return op.TrimEvents.GetChannelId()
	}
	return ""
}

// Apply replicates a command in the partition that owns its channel and
// returns the result. It stamps the command with the current time. While
// the partition has no leader it retries until ctx's deadline (or the
// request timeout); a command that may have applied is never retried here.
// Errors: ErrNotApplied / ErrNoLeader (nothing applied), ErrIndeterminate
// (may have applied), or the command's *storage.Error.
func (n *Node) Apply(ctx context.Context, cmd *clusterv1.Command) (*storage.Result, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	channel := CommandChannel(cmd)
	if err := storage.ValidateChannelID(channel); err != nil {
		return nil, err
	}
	cmd.Ts = timestamppb.Now()
	r := n.replicas[n.PartitionOf(channel)]
	var res *storage.Result
	err := n.retryNotLeader(ctx, func() error {
		var err error
		res, err = r.Propose(ctx, cmd)
		return err
	})
	return res, err
}

// read runs fn on the state of the partition that owns channel, as a
// linearizable read unless stale.
func (n *Node) read(ctx context.Context, channel string, stale bool, fn func(*storage.Reader) error) error {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	if err := storage.ValidateChannelID(channel); err != nil {
		return err
	}
	r := n.replicas[n.PartitionOf(channel)]
	return n.retryNotLeader(ctx, func() error { return r.Read(ctx, stale, fn) })
}

// retryNotLeader calls fn until it returns something other than "not the
// leader" or ctx ends. With every replica local, "not the leader" means an
// election is under way.
func (n *Node) retryNotLeader(ctx context.Context, fn func() error) error {
	backoff := 5 * time.Millisecond
	for {
		if n.closed.Load() {
			return ErrClosed
		}
		err := fn()
		if !errors.Is(err, partition.ErrNotLeader) {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (n *Node) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

// GetChannel returns a channel visible to c and whether c is a member.
func (n *Node) GetChannel(ctx context.Context, c Caller, id string) (*heraldv1.Channel, bool, error) {
	var ch *heraldv1.Channel
	var member bool
	err := n.read(ctx, id, false, func(r *storage.Reader) error {
		var err error
		ch, member, err = r.Channel(c, id)
		return err
	})
	return ch, member, err
}

// History answers GetHistory.
func (n *Node) History(ctx context.Context, c Caller, req *heraldv1.GetHistoryRequest) (*heraldv1.GetHistoryResponse, error) {
	var resp *heraldv1.GetHistoryResponse
	err := n.read(ctx, req.GetChannelId(), req.GetStale(), func(r *storage.Reader) error {
		var err error
		resp, err = r.History(c, req)
		return err
	})
	return resp, err
}

// Thread answers GetThread.
func (n *Node) Thread(ctx context.Context, c Caller, req *heraldv1.GetThreadRequest) (*heraldv1.GetThreadResponse, error) {
	var resp *heraldv1.GetThreadResponse
	err := n.read(ctx, req.GetChannelId(), req.GetStale(), func(r *storage.Reader) error {
		var err error
		resp, err = r.Thread(c, req)
		return err
	})
	return resp, err
}

// Events returns up to limit events of a channel after a cursor, with the
// channel's head and oldest retained seq, read linearizably.
func (n *Node) Events(ctx context.Context, channel string, after uint64, limit int) (evs []*heraldv1.Event, head, oldest uint64, err error) {
	err = n.read(ctx, channel, false, func(r *storage.Reader) error {
		var err error
		evs, head, oldest, err = r.Events(channel, after, limit)
		return err
	})
	return evs, head, oldest, err
}

// ListChannels pages through the channels visible to c across all
// partitions, in id order.
func (n *Node) ListChannels(ctx context.Context, c Caller, req *heraldv1.ListChannelsRequest) (*heraldv1.ListChannelsResponse, error) {
	limit, err := storage.ValidateLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	var all []*heraldv1.Channel
	more := false
	for _, r := range n.replicas {
		var chs []*heraldv1.Channel
		var m bool
		err := n.retryNotLeader(ctx, func() error {
			return r.Read(ctx, false, func(rd *storage.Reader) error {
				var err error
				chs, m, err = rd.ListChannels(c, req.GetCursor(), limit, req.GetExcludeArchived())
				return err
			})
		})
		if err != nil {
			return nil, err
		}
		all = append(all, chs...)
		more = more || m
	}
	slices.SortFunc(all, func(a, b *heraldv1.Channel) int { return cmp.Compare(a.GetId(), b.GetId()) })
	resp := &heraldv1.ListChannelsResponse{Channels: all}
	if len(all) > limit {
		resp.Channels, more = all[:limit], true
	}
	if more && len(resp.Channels) > 0 {
		resp.NextCursor = resp.Channels[len(resp.Channels)-1].GetId()
	}
	return resp, nil
}

// Watch starts a stream of a channel's events with seq > after from the
// local replica's feed. The caller must Close it.
func (n *Node) Watch(channel string, after uint64) (*partition.Stream, error) {
	if err := storage.ValidateChannelID(channel); err != nil {
		return nil, err
	}
	return n.replicas[n.PartitionOf(channel)].Feed().Watch(channel, after), nil
}
