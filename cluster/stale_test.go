package cluster_test

import (
	"errors"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/storage"
)

// TestStaleReadsFromCaughtUpReplicas kills a node, creates a channel and
// posts to it and to a busy neighbour in the same partition while the node
// is down, restarts the node and reads the channel's history through it
// with stale reads, as fast as it answers, until it is ready. A stale read
// may lag by up to --max-stale, but never by everything the replica missed
// while down: the restarted replica hears from its leader long before it
// has caught up, and used to answer not_found, or an old history, from
// its own state. It must answer from a caught-up replica (its own, once it
// has caught up, else the leader).
func TestStaleReadsFromCaughtUpReplicas(t *testing.T) {
	const parts = 2
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	chs := spreadChannels("stale", parts, 2)
	quiet, busy := chs[0], chs[1] // both in partition 0
	m := c.Member(2)
	m.Kill()
	createAll(t, c, []string{quiet, busy})
	acked := postSome(t, c, quiet, "q", 20)
	filler := 300
	if testing.Short() {
		filler = 150
	}
	postSome(t, c, busy, "b", filler)

	m.Restart()
	n := m.Cluster()
	reads, forwardedOrCaughtUp := 0, 0
	var lastErr error
	begin := time.Now()
	for !n.Ready() {
		if time.Since(begin) > 30*time.Second {
			t.Fatalf("%s not ready 30s after its restart", m.ID)
		}
		h, err := n.History(t.Context(), clustertest.Alice, &heraldv1.GetHistoryRequest{
			ChannelId: quiet, Limit: 1000, OldestFirst: true, Stale: true})
		reads++
		switch {
		case errors.Is(err, storage.ErrNotFound):
			t.Fatalf("stale read %d via %s %v after its restart: %v; the channel was created before the restart",
				reads, m.ID, since(begin), err)
		case err != nil:
			lastErr = err
			continue // not ready to answer at all: fine, it says so
		}
		if got := len(h.GetMessages()); got != len(acked) {
			t.Fatalf("stale read %d via %s %v after its restart: %d messages, want the %d posted before it (applied index %d)",
				reads, m.ID, since(begin), got, len(acked), h.GetAppliedIndex())
		}
		forwardedOrCaughtUp++
	}
	t.Logf("%s ready %v after its restart; %d stale reads meanwhile, %d answered, all with every post",
		m.ID, since(begin), reads, forwardedOrCaughtUp)
	if forwardedOrCaughtUp == 0 {
		t.Fatalf("no stale read answered in %d tries; the last error: %v", reads, lastErr)
	}
}
