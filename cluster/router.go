package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
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

// Apply replicates a command in the partition that owns its channel, on
// this node if its replica leads, else through the leader, following
// leader changes until ctx's deadline (or the request timeout). It stamps
// the command with the current time. A command that may have applied is
// retried only if it carries a client_msg_id, which makes the retry safe.
// Errors: ErrNotApplied / ErrNoLeader (nothing applied), ErrIndeterminate
// (may have applied), ErrClosed, or the command's *storage.Error.
func (n *Node) Apply(ctx context.Context, cmd *clusterv1.Command) (*storage.Result, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	channel := CommandChannel(cmd)
	if err := storage.ValidateChannelID(channel); err != nil {
		return nil, err
	}
	p, err := n.partitionOf(ctx, channel)
	if err != nil {
		return nil, err
	}
	cmd.Ts = timestamppb.Now()
	policy := retryNone
	if repeatable(cmd) {
		policy = retryWrite
	}
	var res *storage.Result
	err = route(ctx, policy, n.targets(p), func(target string, relay bool) error {
		var err error
		res, err = n.applyAt(ctx, p, cmd, target, relay)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// repeatable reports whether applying cmd twice has the effect of applying
// it once: a post with a client_msg_id, which the state machine looks up.
func repeatable(cmd *clusterv1.Command) bool {
	return cmd.GetPostMessage().GetClientMsgId() != ""
}

// applyAt makes one attempt of a command on partition p at node target:
// this node's replica, or a forward (relayed, if asked). A repeatable
// command goes on the ordered stream to target, shared with Submit;
// anything else is a unary Apply, whose credential covers the command.
func (n *Node) applyAt(ctx context.Context, p uint32, cmd *clusterv1.Command, target string, relay bool) (*storage.Result, error) {
	if r := n.Replica(p); target == n.cfg.NodeID && r != nil {
		return n.propose(ctx, r, cmd)
	}
	req := &clusterv1.ApplyRequest{Partition: p, Command: cmd, Relay: relay}
	if repeatable(cmd) && !relay {
		return n.fwd.send(ctx, target, req)()
	}
	return n.applyRemote(ctx, target, req)
}

// applyRemote forwards a command to a node: the partition's leader, or,
// with req.Relay, a node that forwards it to the leader it knows.
func (n *Node) applyRemote(ctx context.Context, target string, req *clusterv1.ApplyRequest) (*storage.Result, error) {
	c, err := n.peers.to(target)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	resp, err := c.Apply(ctx, req)
	n.reach.note(ctx, target, err, false)
	if err != nil {
		return nil, rpcOutcome(err)
	}
	return applyResult(target, req.GetPartition(), resp)
}

// applyResult reads the answer of target to a command forwarded on
// partition p.
func applyResult(target string, p uint32, resp *clusterv1.ApplyResponse) (*storage.Result, error) {
	switch r := resp.GetResult().(type) {
	case *clusterv1.ApplyResponse_Ok:
		return resultFromWire(r.Ok), nil
	case *clusterv1.ApplyResponse_Error:
		return nil, domainError(r.Error)
	case *clusterv1.ApplyResponse_NotLeader:
		return nil, &partition.NotLeaderError{Partition: p, LeaderID: r.NotLeader.GetLeaderId()}
	case *clusterv1.ApplyResponse_Failed:
		if err := noSpaceFromWire(p, r.Failed); err != nil {
			return nil, err
		}
		if r.Failed.GetMaybeApplied() {
			return nil, fmt.Errorf("%w: at %s: %s", ErrIndeterminate, target, r.Failed.GetReason())
		}
		return nil, fmt.Errorf("%w: at %s: %s", ErrNotApplied, target, r.Failed.GetReason())
	}
	return nil, fmt.Errorf("%w: empty answer from %s", ErrIndeterminate, target)
}

// rpcOutcome classifies a failed forward: a request that never reached the
// peer did not apply; one that may have reached it may have. A peer that
// could not be dialed, or whose connection failed, is unreachable.
func rpcOutcome(err error) error {
	if peerAnswered(err) && connect.CodeOf(err) == connect.CodeUnauthenticated {
		// Refused before it was handled (the peer did not take this
		// node's credential; say, their clocks disagree): nothing applied.
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	if notSent(err) {
		return fmt.Errorf("%w: %w: %w", ErrNotApplied, errPeerUnreachable, err)
	}
	if connectionFailed(err) {
		return fmt.Errorf("%w: %w: %w", ErrIndeterminate, errPeerUnreachable, err)
	}
	return fmt.Errorf("%w: %w", ErrIndeterminate, err)
}

// targets is where route sends the attempts of a request on partition p.
func (n *Node) targets(p uint32) routeTarget {
	return routeTarget{
		partition: p,
		next:      func(skip map[string]bool) string { return n.leaderOf(p, skip) },
		hint:      func(id string) { n.setHint(p, id) },
		down:      n.reach.down,
		closed:    n.closed.Load,
	}
}

// routeAny is route for callers that need no relay: retrySafe requests
// are retried as reads, the others as writes that must not be repeated.
func (n *Node) routeAny(ctx context.Context, p uint32, retrySafe bool, try func(target string) error) error {
	policy := retryNone
	if retrySafe {
		policy = retryRead
	}
	return route(ctx, policy, n.targets(p), func(target string, _ bool) error { return try(target) })
}

// leaderOf returns the node most likely to lead partition p, not in skip:
// this node if its replica leads, the leader its replica knows, the last
// hint, then the placement's replicas in order.
func (n *Node) leaderOf(p uint32, skip map[string]bool) string {
	var cands []string
	if r := n.Replica(p); r != nil {
		if r.IsLeader() {
			cands = append(cands, n.cfg.NodeID)
		}
		if id := r.Leader(); id != "" {
			cands = append(cands, id)
		}
	}
	n.mu.Lock()
	if h := n.hints[p]; h != "" {
		cands = append(cands, h)
	}
	n.mu.Unlock()
	if pl := placementOf(n.meta.State(), p); pl != nil {
		cands = append(cands, pl.GetReplicas()...)
	}
	for _, c := range cands {
		if !skip[c] {
			return c
		}
	}
	return ""
}

// knownLeader returns the leader of partition p that this node knows: its
// replica's, else the last hint, else "".
func (n *Node) knownLeader(p uint32) string {
	if r := n.Replica(p); r != nil {
		if id := r.Leader(); id != "" {
			return id
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hints[p]
}

func (n *Node) setHint(p uint32, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if id == "" {
		delete(n.hints, p)
	} else {
		n.hints[p] = id
	}
}

// partitionOf maps a channel to its partition, waiting (within ctx) for
// the metadata on a node that has just started.
func (n *Node) partitionOf(ctx context.Context, channel string) (uint32, error) {
	for n.Partitions() == 0 {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: the node has no cluster metadata yet: %w", ErrNotApplied, ctx.Err())
		case <-n.meta.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return n.PartitionOf(channel), nil
}

// withTimeout bounds a request by RequestTimeout and, when the caller has
// a deadline of its own, ends it early enough that the answer reaches the
// caller in time: a tenth of what is left, at most 250 ms, before. A
// context bounded once is not shortened again by nested calls.
func (n *Node) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Value(boundedKey{}) != nil {
		return context.WithCancel(ctx)
	}
	budget := n.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		budget = min(budget, left-min(left/10, 250*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	return context.WithValue(ctx, boundedKey{}, true), cancel
}

type boundedKey struct{}

// servesStale reports whether r may answer stale reads: it leads and is
// ready, or it follows and has caught up with its leader (as Ready
// requires). A replica still installing a snapshot or replaying its log
// after a restart hears from its leader but would answer with old state.
func (n *Node) servesStale(r *partition.Partition) bool {
	_, _, caughtUp, _ := n.reps.lookup(r.ID())
	return r.Ready() && (r.IsLeader() || caughtUp)
}

// read runs a query on partition p: linearizably on its leader, or, if
// stale, on this node's replica when it has caught up, else the leader.
func (n *Node) read(ctx context.Context, p uint32, stale bool, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	req.Partition = p
	req.Stale = stale
	if r := n.Replica(p); r != nil && n.cfg.Defects.LocalReads {
		return execRead(ctx, r, req) // the planted defect: whatever r's role
	}
	if r := n.Replica(p); stale && r != nil && n.servesStale(r) {
		resp, err := execRead(ctx, r, req)
		if err == nil {
			return resp, nil
		}
		if !errors.Is(err, partition.ErrTooStale) {
			return nil, err
		}
	}
	var resp *clusterv1.ReadResponse
	err := route(ctx, retryRead, n.targets(p), func(target string, relay bool) error {
		var err error
		if r := n.Replica(p); target == n.cfg.NodeID && r != nil {
			resp, err = n.readLocal(ctx, r, req)
			return err
		}
		req.Relay = relay
		resp, err = n.readRemote(ctx, target, req)
		return err
	})
	return resp, err
}

// readLocal runs a read on this node's replica r; a stale read only if r
// has caught up (ErrTooStale if not).
func (n *Node) readLocal(ctx context.Context, r *partition.Partition, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	if req.GetStale() && !n.servesStale(r) {
		return nil, fmt.Errorf("%w: partition %d on node %s has not caught up with its leader",
			partition.ErrTooStale, r.ID(), n.cfg.NodeID)
	}
	return execRead(ctx, r, req)
}

func (n *Node) readRemote(ctx context.Context, target string, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	c, err := n.peers.to(target)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	resp, err := c.Read(ctx, req)
	n.reach.note(ctx, target, err, false)
	if err != nil {
		return nil, rpcOutcome(err)
	}
	switch r := resp.GetResult().(type) {
	case *clusterv1.ReadResponse_Error:
		return nil, domainError(r.Error)
	case *clusterv1.ReadResponse_NotLeader:
		return nil, &partition.NotLeaderError{Partition: req.GetPartition(), LeaderID: r.NotLeader.GetLeaderId()}
	case *clusterv1.ReadResponse_TooStale:
		return nil, partition.ErrTooStale
	}
	return resp, nil
}

// readChannel routes a query about one channel.
func (n *Node) readChannel(ctx context.Context, channel string, stale bool, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	if err := storage.ValidateChannelID(channel); err != nil {
		return nil, err
	}
	p, err := n.partitionOf(ctx, channel)
	if err != nil {
		return nil, err
	}
	return n.read(ctx, p, stale, req)
}

func callerWire(c Caller) *clusterv1.Caller {
	return &clusterv1.Caller{User: c.User, Admin: c.Admin}
}

// GetChannel returns a channel visible to c and whether c is a member.
func (n *Node) GetChannel(ctx context.Context, c Caller, id string) (*heraldv1.Channel, bool, error) {
	resp, err := n.readChannel(ctx, id, false, &clusterv1.ReadRequest{Caller: callerWire(c),
		Query: &clusterv1.ReadRequest_GetChannel{GetChannel: &heraldv1.GetChannelRequest{ChannelId: id}}})
	if err != nil {
		return nil, false, err
	}
	return resp.GetGetChannel().GetChannel(), resp.GetGetChannel().GetIsMember(), nil
}

// History answers GetHistory.
func (n *Node) History(ctx context.Context, c Caller, req *heraldv1.GetHistoryRequest) (*heraldv1.GetHistoryResponse, error) {
	resp, err := n.readChannel(ctx, req.GetChannelId(), req.GetStale(), &clusterv1.ReadRequest{Caller: callerWire(c),
		Query: &clusterv1.ReadRequest_History{History: req}})
	if err != nil {
		return nil, err
	}
	return resp.GetHistory(), nil
}

// Thread answers GetThread.
func (n *Node) Thread(ctx context.Context, c Caller, req *heraldv1.GetThreadRequest) (*heraldv1.GetThreadResponse, error) {
	resp, err := n.readChannel(ctx, req.GetChannelId(), req.GetStale(), &clusterv1.ReadRequest{Caller: callerWire(c),
		Query: &clusterv1.ReadRequest_Thread{Thread: req}})
	if err != nil {
		return nil, err
	}
	return resp.GetThread(), nil
}

// Events returns up to limit events of a channel after a cursor, with the
// channel's head and oldest retained seq, read linearizably.
func (n *Node) Events(ctx context.Context, channel string, after uint64, limit int) ([]*heraldv1.Event, uint64, uint64, error) {
	resp, err := n.readChannel(ctx, channel, false, &clusterv1.ReadRequest{
		Query: &clusterv1.ReadRequest_Events{Events: &clusterv1.EventsRequest{
			ChannelId: channel, AfterSeq: after, Limit: uint32(limit)}}})
	if err != nil {
		return nil, 0, 0, err
	}
	e := resp.GetEvents()
	return e.GetEvents(), e.GetHeadSeq(), e.GetOldestSeq(), nil
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
	if _, err := n.partitionOf(ctx, ""); err != nil {
		return nil, err
	}
	var all []*heraldv1.Channel
	more := false
	for p := range n.Partitions() {
		resp, err := n.read(ctx, p, false, &clusterv1.ReadRequest{Caller: callerWire(c),
			Query: &clusterv1.ReadRequest_ListChannels{ListChannels: req}})
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetListChannels().GetChannels()...)
		more = more || resp.GetListChannels().GetMore()
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
