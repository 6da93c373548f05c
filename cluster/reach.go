package cluster

import (
	"context"
	"sync"
	"time"
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
}

func newReachability() *reachability {
	return &reachability{failed: make(map[string]time.Time)}
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
