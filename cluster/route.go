package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/cluster/partition"
)

// retry says which failed attempts of a routed request may be made again
// elsewhere, and what the request's failure then says.
type retry int

const (
	// retryNone: a write that is not safe to repeat (no client_msg_id). An
	// attempt that may have applied ends the request as indeterminate.
	retryNone retry = iota
	// retryWrite: a write that is safe to repeat (a post with a
	// client_msg_id). Every attempt is retried until the deadline; if any
	// of them may have applied, the request's failure is indeterminate,
	// whatever the later attempts said.
	retryWrite
	// retryRead: a read. Every attempt is retried; nothing can have
	// applied.
	retryRead
)

// errPeerUnreachable marks a forward that could not reach its node: the
// dial failed, or the connection died before an answer came. The router
// then asks another node to relay.
var errPeerUnreachable = errors.New("cluster: node unreachable")

// routeTarget is where route sends attempts of one request.
type routeTarget struct {
	partition uint32
	// next returns the node most likely to lead, not in skip, or "".
	next func(skip map[string]bool) string
	// hint records the node found leading ("" forgets the hint).
	hint func(id string)
	// down reports a node this node failed to reach lately (nil: none).
	down func(id string) bool
	// closed reports that the node is shutting down.
	closed func() bool
}

// attempt sends one attempt of a request to node target; with relay, target
// forwards it to the leader it knows.
type attempt func(target string, relay bool) error

// route sends attempts of a request, try, to the node that should lead its
// partition until one succeeds, one fails for good, or ctx ends.
//
// "Not the leader" follows the leader named, or moves on to the next
// candidate; "not applied" and "too stale" move on at once. A candidate
// that cannot be reached, now or lately (to.down), is skipped, and a node
// that names it as the leader is asked to relay the request to it; one
// that was skipped only for being down lately is tried directly once the
// others have been. An attempt that may have
// applied ends a retryNone request and is retried otherwise. When every
// candidate has been tried, route backs off (5 ms doubling to 100 ms) and
// starts over. A request that runs out of time fails with the last
// attempt's error wrapped with ctx's, and with ErrIndeterminate first if
// any attempt of a write may have applied.
func route(ctx context.Context, policy retry, to routeTarget, try attempt) error {
	backoff := 5 * time.Millisecond
	skip := map[string]bool{}
	unreachable := map[string]bool{}
	tried := map[string]bool{} // candidates attempted directly since the last back-off
	var wentRound []string     // candidates skipped as down lately, not yet tried
	maybeApplied := false
	var last error
	fail := func(err error) error {
		if maybeApplied && !errors.Is(err, ErrIndeterminate) {
			return fmt.Errorf("%w: an earlier attempt may have applied: %w", ErrIndeterminate, err)
		}
		return err
	}
	for {
		if to.closed() {
			return fail(ErrClosed)
		}
		target := to.next(skip)
		if target != "" && !tried[target] && to.down != nil && to.down(target) {
			// Down lately: go round it now, try it directly later.
			skip[target], unreachable[target] = true, true
			wentRound = append(wentRound, target)
			continue
		}
		if target == "" && len(wentRound) > 0 {
			target, wentRound = wentRound[0], wentRound[1:]
		}
		relay := false
		for target != "" {
			tried[target] = true
			err := try(target, relay)
			if err == nil {
				if !relay {
					to.hint(target)
				}
				return nil
			}
			last = err
			skip[target] = true
			var nle *partition.NotLeaderError
			switch {
			case errors.As(err, &nle):
				to.hint(nle.LeaderID)
				leader := nle.LeaderID
				switch {
				case leader == "" || leader == target || relay:
					target = ""
				case unreachable[leader] || (!tried[leader] && to.down != nil && to.down(leader)):
					unreachable[leader] = true
					relay = true // ask target to forward to the leader we cannot reach
				case !skip[leader]:
					target, relay = leader, false // follow the hint at once
				default:
					target = ""
				}
				continue
			case errors.Is(err, ErrIndeterminate):
				if policy == retryNone || ctx.Err() != nil {
					return err
				}
				maybeApplied = maybeApplied || policy == retryWrite
			case errors.Is(err, ErrNotApplied), errors.Is(err, partition.ErrTooStale),
				errors.Is(err, partition.ErrClosed):
				// Nothing happened there: a replica closing or retiring
				// answers partition.ErrClosed before it proposes.
			default:
				return fail(err)
			}
			if errors.Is(err, errPeerUnreachable) && !relay {
				unreachable[target] = true
			}
			target = ""
		}
		if to.next(skip) != "" {
			continue // another candidate to try
		}
		clear(skip)
		clear(tried)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if last == nil {
				last = fmt.Errorf("%w: partition %d", ErrNoLeader, to.partition)
			}
			return fail(fmt.Errorf("%w: %w", last, ctx.Err()))
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}
