package cluster

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
)

// downMemory is how long a peer this node failed to reach counts as down
// without a success since; past it, requests try the peer again.
const downMemory = 10 * time.Second

// reachability remembers the peers this node failed to reach lately (the
// dial failed, or the connection died waiting for an answer), so that the
// router goes around them at once instead of waiting on each request for
// the failure to show. It is mutex-guarded.
type reachability struct {
	mu     sync.Mutex           // guards following
	failed map[string]time.Time // peer → last failure with no success since
	views  map[string]peerView  // peer → the peers it reported down, as last heard
}

// peerView is what a peer reported it cannot reach, and when.
type peerView struct {
	down []string
	at   time.Time
}

func newReachability() *reachability {
	return &reachability{failed: make(map[string]time.Time), views: make(map[string]peerView)}
}

// heard records the peers that peer id reports it cannot reach.
func (h *reachability) heard(id string, down []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.views[id] = peerView{down: down, at: time.Now()}
}

// reportsDown reports whether peer id said lately (within downMemory) that
// it cannot reach node target.
func (h *reachability) reportsDown(id, target string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.views[id]
	return ok && time.Since(v.at) < downMemory && slices.Contains(v.down, target)
}

// note records the outcome of a request to peer id made under ctx: a
// success or an error the peer sent means reachable; any other error (no
// connection, a connection that died) means not. A request cut short by
// its own ctx says nothing, unless probe: a probe's short deadline passing
// without an answer means not reachable.
func (h *reachability) note(ctx context.Context, id string, err error, probe bool) {
	if err != nil && ctx.Err() != nil && !probe {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil && !peerAnswered(err) {
		h.failed[id] = time.Now()
	} else {
		delete(h.failed, id)
	}
}

// down reports whether peer id failed lately and has not answered since.
func (h *reachability) down(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.failed[id]
	return ok && time.Since(t) < downMemory
}

// downPeers returns the peers that count as down.
func (h *reachability) downPeers() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for id, t := range h.failed {
		if time.Since(t) < downMemory {
			out = append(out, id)
		}
	}
	return out
}

// probeDown asks each peer that counts as down for its status, in
// parallel and briefly, so that a link that healed is used again without
// a request paying for the test.
func (c *controller) probeDown(ctx context.Context) {
	var wg sync.WaitGroup
	for _, id := range c.n.reach.downPeers() {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, _ = c.n.nodeStatus(ctx, id) // records the outcome, as a probe
		})
	}
	wg.Wait()
}

// handOverUnreachable moves the leadership of each partition this node
// leads, and of the metadata group, away from it when most of the other
// voters report that they cannot reach it: its own connections to them
// work, so Raft carries on, but nobody can forward a request to it (a
// one-way fault) and every write through another node would fail for as
// long as the fault lasts. The new leader is a caught-up voter that no
// voter reports unreachable. It does not come back while the fault lasts:
// handing leadership to the preferred leader needs that leader's status,
// which the new leader cannot get.
func (c *controller) handOverUnreachable(ctx context.Context, status func(string) *clusterv1.NodeStatusResponse) {
	n := c.n
	for _, r := range n.reps.leading() {
		cfg, err := r.Configuration()
		if err != nil {
			continue
		}
		var voters []string
		for _, m := range cfg.Members {
			if m.Voter && m.ID != n.cfg.NodeID {
				voters = append(voters, m.ID)
			}
		}
		to := c.reachableSuccessor(voters, func(id string) bool {
			for _, rs := range status(id).GetReplicas() {
				if rs.GetPartition() == r.ID() {
					return rs.GetAppliedIndex()+caughtUpLag >= r.Status().CommitIndex
				}
			}
			return false
		})
		if to == "" {
			continue
		}
		n.log.Warn("handing leadership over: most of the group cannot reach this node",
			"partition", r.ID(), "to", to)
		if err := r.TransferLeadership(ctx, to, n.peers.raftAddr(to)); err != nil {
			n.log.Warn("leadership hand-over", "partition", r.ID(), "err", err)
		}
	}
	if !n.meta.IsLeader() {
		return
	}
	servers, err := n.meta.Configuration()
	if err != nil {
		return
	}
	var voters []string
	for _, s := range servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.NodeID {
			voters = append(voters, string(s.ID))
		}
	}
	if to := c.reachableSuccessor(voters, func(id string) bool { return status(id) != nil }); to != "" {
		n.log.Warn("handing metadata leadership over: most of its voters cannot reach this node", "to", to)
		if err := n.meta.TransferLeadership(ctx, to, n.peers.raftAddr(to)); err != nil {
			n.log.Warn("metadata leadership hand-over", "err", err)
		}
	}
}

// reachableSuccessor returns the voter this node should hand its
// leadership to, or "" to keep it: "" unless more than half of the other
// voters report this node unreachable, else the first voter that none of
// the others reports unreachable and that ready accepts.
func (c *controller) reachableSuccessor(voters []string, ready func(id string) bool) string {
	h, me := c.n.reach, c.n.cfg.NodeID
	cut := 0
	for _, v := range voters {
		if h.reportsDown(v, me) {
			cut++
		}
	}
	if len(voters) == 0 || 2*cut <= len(voters) {
		return ""
	}
	for _, v := range voters {
		reached := true
		for _, w := range voters {
			if w != v && h.reportsDown(w, v) {
				reached = false
			}
		}
		if reached && ready(v) {
			return v
		}
	}
	return ""
}
