package cluster

import (
	"context"
	"sync/atomic"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/storage"
)

// SignalHandler receives the ephemeral frames other nodes relay for a
// channel's subscribers here (typing, presence).
type SignalHandler func(*clusterv1.SignalRequest)

// signalTimeout bounds one relay to one node; a signal late by more is
// worthless.
const signalTimeout = time.Second

// maxSignalsInFlight bounds the relays in flight from a node; past it,
// signals are dropped, as a best-effort signal may be.
const maxSignalsInFlight = 256

// signals relays ephemeral frames between the gateways of the cluster's
// nodes: sent straight to every node with the gateway role, never stored,
// never retried, dropped under overload (cluster/DESIGN.md "Signals").
type signals struct {
	n       *Node
	handler atomic.Pointer[SignalHandler]
	slots   chan struct{}
	dropped atomic.Uint64
}

func newSignals(n *Node) *signals {
	return &signals{n: n, slots: make(chan struct{}, maxSignalsInFlight)}
}

// OnSignal sets the function that receives the signals other nodes relay
// to this one; the gateway sets it once.
func (n *Node) OnSignal(h SignalHandler) { n.sig.handler.Store(&h) }

// Signal relays req to every other node that serves the gateway role,
// without waiting: best-effort, for frames that are never stored. It
// returns at once; a relay that fails is dropped.
func (n *Node) Signal(req *clusterv1.SignalRequest) {
	if n.closed.Load() {
		return
	}
	for _, node := range n.meta.State().GetNodes() {
		id := node.GetId()
		if id == n.cfg.NodeID || node.GetState() == heraldv1.Node_STATE_REMOVED || !meta.HasRole(node, meta.RoleGateway) {
			continue
		}
		select {
		case n.sig.slots <- struct{}{}:
		default:
			if d := n.sig.dropped.Add(1); d&(d-1) == 0 { // log the 1st, 2nd, 4th, ... drop
				n.log.Warn("signals dropped: too many relays in flight", "dropped", d)
			}
			continue
		}
		// Not in n.wg: a relay may start while Close waits, and it ends
		// with n.ctx (Close cancels it) or its timeout anyway.
		go func() {
			defer func() { <-n.sig.slots }()
			c, err := n.peers.to(id)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, signalTimeout)
			defer cancel()
			if _, err := c.Signal(ctx, req); err != nil {
				n.log.Debug("relay a signal", "to", id, "err", err)
			}
		}()
	}
}

// receive hands a relayed signal to the gateway, if one listens.
func (s *signals) receive(req *clusterv1.SignalRequest) error {
	if err := storage.ValidateChannelID(req.GetChannelId()); err != nil {
		return err
	}
	if h := s.handler.Load(); h != nil {
		(*h)(req)
	}
	return nil
}
