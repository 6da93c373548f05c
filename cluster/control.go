package cluster

import (
	"context"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// controller runs a node's duties towards the cluster, in one goroutine
// that the Node starts in New and stops at Close (its ctx): it finds or
// founds the cluster, then, every ReconcileInterval or when the metadata
// changes, registers the node's addresses, opens and retires replicas to
// match the placement, tracks which followers have caught up, moves the
// groups this node leads one step towards their placement, and, on the
// metadata leader, founds the partitions and plans placement changes.
//
// It keeps no state of its own: the replicas are in the Node's
// replicaSet, everything else in the metadata and the groups.
type controller struct {
	n *Node
	// Used only by the controller's goroutine.
	startChecked bool // returnToService has run to its end since the start
}

// run is the node's life: join or found the cluster, then reconcile
// until ctx ends.
func (c *controller) run() {
	n := c.n
	if err := n.discover(n.ctx); err != nil {
		if n.ctx.Err() == nil {
			n.fail(err)
		}
		return
	}
	n.mu.Lock()
	n.joined = true
	n.mu.Unlock()
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		changed := n.meta.Changed()
		c.reconcile(n.ctx)
		select {
		case <-n.ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// reconcile runs one round of the node's duties.
func (c *controller) reconcile(ctx context.Context) {
	c.probeDown(ctx)
	c.n.register(ctx)
	c.returnToService(ctx)
	c.reconcileReplicas(ctx)
	c.recordHeld()
	c.trackCatchUp(ctx)
	c.executeMembership(ctx)
	if c.n.meta.IsLeader() {
		c.lead(ctx)
	}
}

// returnToService puts a node that was drained, and is started again,
// back into service: a draining node that holds no replica any more has
// finished its drain, and starting it means it is wanted again. One that
// still holds replicas (it stopped in the middle of a drain) keeps
// draining. It runs once after each start, retrying until the metadata
// takes the change.
func (c *controller) returnToService(ctx context.Context) {
	if c.startChecked {
		return
	}
	n := c.n
	st := n.meta.State()
	me, err := n.node(st, n.cfg.NodeID)
	if err != nil {
		return // not registered yet
	}
	if me.GetState() != heraldv1.Node_STATE_DRAINING {
		c.startChecked = true
		return
	}
	for _, pl := range st.GetPlacements() {
		if contains(pl.GetReplicas(), n.cfg.NodeID) {
			n.log.Info("node is still draining: it holds replicas to hand over")
			c.startChecked = true
			return
		}
	}
	if _, err := n.setNodeState(ctx, n.cfg.NodeID, heraldv1.Node_STATE_ACTIVE); err != nil {
		n.log.Debug("return to service", "err", err)
		return
	}
	n.log.Info("node was drained and is started again: back in service")
	c.startChecked = true
}
