package cluster

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// Pending is a command Submit sent on its way.
type Pending struct {
	done chan struct{}
	res  *storage.Result
	err  error
}

// Wait returns the command's outcome, with Apply's errors.
func (pd *Pending) Wait() (*storage.Result, error) {
	<-pd.done
	return pd.res, pd.err
}

func (pd *Pending) finish(res *storage.Result, err error) {
	pd.res, pd.err = res, err
	close(pd.done)
}

// Submit is Apply for callers that keep many commands in flight. It
// returns once the command is on its way to its partition's leader, and
// Wait gives the outcome. Commands one goroutine submits one after another
// to one partition are proposed in that order, whether this node leads it
// or forwards them (over one ordered stream per peer). A command whose
// first attempt fails is retried the way Apply retries it, and may then
// land after commands submitted later; only seq orders them. Only a post
// with a client_msg_id, which makes the retry safe, is pipelined: any
// other command, and any command while no leader is known, goes through
// Apply, and Submit returns when it is done.
func (n *Node) Submit(ctx context.Context, cmd *clusterv1.Command) *Pending {
	pd := &Pending{done: make(chan struct{})}
	if !repeatable(cmd) {
		pd.finish(n.Apply(ctx, cmd))
		return pd
	}
	ctx, cancel := n.withTimeout(ctx)
	channel := CommandChannel(cmd)
	if err := storage.ValidateChannelID(channel); err != nil {
		cancel()
		pd.finish(nil, err)
		return pd
	}
	p, err := n.partitionOf(ctx, channel)
	if err != nil {
		cancel()
		pd.finish(nil, err)
		return pd
	}
	cmd.Ts = timestamppb.Now()
	first := n.sendFirst(ctx, p, cmd)
	if first == nil {
		defer cancel()
		pd.finish(n.Apply(ctx, cmd))
		return pd
	}
	go func() {
		defer cancel()
		var res *storage.Result
		err := route(ctx, retryWrite, n.targets(p), func(to string, relay bool) error {
			var err error
			if first != nil {
				// The attempt already sent, to the node route asks first
				// too (leaderOf, nothing skipped).
				res, err = first()
				first = nil
			} else {
				res, err = n.applyAt(ctx, p, cmd, to, relay)
			}
			return err
		})
		if err != nil {
			res = nil
		}
		pd.finish(res, err)
	}()
	return pd
}

// sendFirst proposes cmd on partition p's leader without waiting: on this
// node's replica if it leads, else over the ordered stream to the leader
// this node knows. It returns how to wait for the answer, or nil when
// there is no leader to send to.
func (n *Node) sendFirst(ctx context.Context, p uint32, cmd *clusterv1.Command) func() (*storage.Result, error) {
	target := n.leaderOf(p, nil)
	if target == "" || n.reach.down(target) {
		return nil
	}
	if target != n.cfg.NodeID {
		return n.fwd.send(ctx, target, &clusterv1.ApplyRequest{Partition: p, Command: cmd})
	}
	wait, err := n.submitHere(ctx, &clusterv1.ApplyRequest{Partition: p, Command: cmd})
	if err != nil {
		return func() (*storage.Result, error) { return nil, err }
	}
	return wait
}

// submitHere proposes a command forwarded over ApplyStream on this node's
// replica of its partition, without waiting.
func (n *Node) submitHere(ctx context.Context, req *clusterv1.ApplyRequest) (func() (*storage.Result, error), error) {
	r := n.Replica(req.GetPartition())
	if r == nil {
		return nil, &partition.NotLeaderError{Partition: req.GetPartition(), LeaderID: n.knownLeader(req.GetPartition())}
	}
	if err := n.writeRefusal(r, req.GetCommand()); err != nil {
		return nil, err
	}
	pd, err := r.Submit(ctx, req.GetCommand())
	if err != nil {
		return nil, err
	}
	return func() (*storage.Result, error) { return pd.Wait(ctx) }, nil
}

// errStreamBroken is the answer to a command sent on a forwarding stream
// that failed before its answer came.
var errStreamBroken = fmt.Errorf("%w: %w: the forwarding stream failed", ErrIndeterminate, errPeerUnreachable)
