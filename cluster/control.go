package cluster

import (
	"context"
	"time"
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
}

// run is the node's life: join or found the cluster, then reconcile
// until ctx ends.
func (c *controller) run() {
	n := c.n
	if err := n.discover(n.ctx); err != nil {
		if n.ctx.Err() == nil {
			n.log.Error("cannot join a cluster", "err", err)
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
	c.reconcileReplicas(ctx)
	c.trackCatchUp(ctx)
	c.executeMembership(ctx)
	if c.n.meta.IsLeader() {
		c.lead(ctx)
	}
}
