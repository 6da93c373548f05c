package cluster_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// smallSnapshots makes replicas snapshot and compact their logs often.
var smallSnapshots = partition.Config{SnapshotThreshold: 32, TrailingLogs: 16, SnapshotInterval: 50 * time.Millisecond}

// TestRestartedNodeRejoins takes a node down while writers post to every
// partition, first with a graceful stop and then with a kill, and brings
// it back each time: it catches up, its replicas end identical to the
// others', it serves reads and writes again, and nothing acknowledged is
// lost.
func TestRestartedNodeRejoins(t *testing.T) {
	t.Parallel()
	const parts = 4
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	chs := spreadChannels("rejoin", parts, 1)
	createAll(t, c, chs)
	writers := map[string]*writer{}
	for _, ch := range chs {
		writers[ch] = startWriter(t, c, ch, ch, nil)
	}
	waitAcks := func(what string, n int) {
		t.Helper()
		want := map[string]int{}
		for ch, w := range writers {
			want[ch] = len(w.snapshot()) + n
		}
		took := clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, what, func() bool {
			for ch, w := range writers {
				if len(w.snapshot()) < want[ch] {
					return false
				}
			}
			return true
		})
		t.Logf("%s: %v", what, took)
	}
	waitAcks("5 posts acknowledged on every channel", 5)

	for i, tc := range []struct {
		name string
		down func(*clustertest.Node)
	}{
		{"stop", (*clustertest.Node).Stop},
		{"kill", (*clustertest.Node).Kill},
	} {
		m := c.Member(2 - i)
		begin := time.Now()
		tc.down(m)
		t.Logf("%s: %s down in %v", tc.name, m.ID, since(begin))
		if err := m.ShutdownErr(); tc.name == "stop" && err != nil {
			// Peers forward posts to it on streams, which its HTTP
			// server's Shutdown waits for unless the node ends them.
			t.Errorf("%s: %s's HTTP server did not shut down: %v", tc.name, m.ID, err)
		}
		waitAcks(tc.name+": 20 more posts acknowledged on every channel while "+m.ID+" is down", 20)

		// What the restarted node must catch up to: each leader's commit
		// index now.
		commit := map[uint32]uint64{}
		for p := range uint32(parts) {
			_, r := leaderReplica(c, p)
			if r == nil {
				t.Fatalf("%s: partition %d has no leader while %s is down", tc.name, p, m.ID)
			}
			commit[p] = r.Status().CommitIndex
		}
		begin = time.Now()
		m.Restart()
		took := c.WaitReady(30 * time.Second)
		t.Logf("%s: %s restarted and ready in %v", tc.name, m.ID, took)
		took = clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, m.ID+" catches up", func() bool {
			n := m.Cluster()
			for p, want := range commit {
				r := n.Replica(p)
				if r == nil {
					return false
				}
				if got, _, err := r.DB().AppliedIndex(); err != nil || got < want {
					return false
				}
			}
			return true
		})
		t.Logf("%s: %s applied every partition's commit index of the restart time %v after the restart (ready + %v)",
			tc.name, m.ID, since(begin), took)
		waitAcks(tc.name+": 5 more posts acknowledged on every channel after the restart", 5)
		// The restarted node serves writes again.
		back := m.Cluster()
		for _, ch := range chs {
			id := fmt.Sprintf("%s-via-%s", ch, tc.name)
			a, err := postAcked(t.Context(), func() *cluster.Node { return back }, ch, id)
			if err != nil {
				t.Fatalf("%s: post through restarted %s: %v", tc.name, m.ID, err)
			}
			t.Logf("%s: post to %s through restarted %s acknowledged in %v", tc.name, ch, m.ID, a.at.Sub(a.sent).Round(time.Millisecond))
		}
	}

	acked := map[string][]ack{}
	for ch, w := range writers {
		acked[ch] = w.stop()
	}
	took := c.WaitSameDigests(30 * time.Second)
	t.Logf("replicas identical %v after the writers stopped", took)
	for p := range uint32(parts) {
		if d := c.Digests(p); len(d) != 3 {
			t.Errorf("partition %d: got digests of %d replicas, want 3", p, len(d))
		}
	}
	for _, m := range []*clustertest.Node{c.Member(1), c.Member(2)} {
		n := m.Cluster()
		for _, ch := range chs {
			for _, stale := range []bool{false, true} {
				// The posts through the restarted nodes are not in the
				// writers' lists: drop them (they are checked by count).
				var mine []*heraldv1.Message
				extra := 0
				for _, msg := range readHistory(t, n, ch, stale) {
					if msg.GetClientMsgId() == ch+"-via-stop" || msg.GetClientMsgId() == ch+"-via-kill" {
						extra++
						continue
					}
					mine = append(mine, msg)
				}
				what := fmt.Sprintf("history (stale %v) of %s via restarted %s", stale, ch, n.ID())
				if extra != 2 {
					t.Errorf("%s: got %d posts made through the restarted nodes, want 2", what, extra)
				}
				checkHistory(t, what, mine, acked[ch])
			}
		}
	}
}

// TestRestartCatchesUpThroughSnapshot stops a node and writes until every
// partition's leader has compacted its log past the node's last entry, so
// the restarted node can catch up only through snapshots the leaders
// install; then its replicas match the others'.
func TestRestartCatchesUpThroughSnapshot(t *testing.T) {
	t.Parallel()
	const parts = 4
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts, Partition: smallSnapshots})
	c.WaitSettled(30 * time.Second)
	chs := spreadChannels("snap", parts, 1)
	createAll(t, c, chs)
	for _, ch := range chs {
		postSome(t, c, ch, ch+"-before", 5)
	}
	c.WaitSameDigests(30 * time.Second)

	const vi = 2
	m := c.Member(vi)
	last := map[uint32]uint64{}
	for p := range uint32(parts) {
		last[p] = m.Cluster().Replica(p).Status().LastIndex
	}
	m.Stop()
	t.Logf("stopped %s; its last log indexes: %v", m.ID, last)

	// Write until each leader's log starts past the stopped replica's end:
	// a leader's snapshot at index S keeps at most TrailingLogs entries
	// before S.
	writers := make([]*writer, len(chs))
	for i, ch := range chs {
		writers[i] = startWriter(t, c, ch, ch, nil)
	}
	snapAt := map[uint32]uint64{}
	begin := time.Now()
	clustertest.CheckFor(t, 60*time.Second, 10*time.Millisecond, "every leader compacts its log past the stopped node's end", func() bool {
		for p := range uint32(parts) {
			_, r := leaderReplica(c, p)
			if r == nil {
				return false
			}
			snap := r.LastSnapshotIndex()
			if snap < last[p]+smallSnapshots.TrailingLogs+8 {
				return false
			}
			snapAt[p] = snap
		}
		return true
	})
	acked := map[string][]ack{}
	total := 0
	for _, w := range writers {
		acked[w.ch] = w.stop()
		total += len(acked[w.ch])
	}
	t.Logf("%d posts acknowledged while %s was down, in %v; leaders' snapshots at %v", total, m.ID, since(begin), snapAt)

	begin = time.Now()
	m.Restart()
	took := c.WaitReady(30 * time.Second)
	t.Logf("%s restarted and ready in %v", m.ID, took)
	took = c.WaitSameDigests(30 * time.Second)
	t.Logf("replicas identical %v after the restart", since(begin))
	n := m.Cluster()
	for p := range uint32(parts) {
		r := n.Replica(p)
		if r == nil {
			t.Fatalf("%s: no replica of partition %d after the restart", m.ID, p)
		}
		// The replica's own log ended at last[p], and no leader's log
		// reached back that far: only an installed snapshot brings its
		// latest snapshot past the leader's.
		if got := r.LastSnapshotIndex(); got < snapAt[p] {
			t.Errorf("%s: partition %d: got latest snapshot at index %d, want one installed by the leader, at or past %d (its log ended at %d)",
				m.ID, p, got, snapAt[p], last[p])
		}
		index, _, err := r.DB().AppliedIndex()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: partition %d applied up to %d (log ended at %d before the stop; leader snapshot %d)", m.ID, p, index, last[p], snapAt[p])
	}
	for _, ch := range chs {
		msgs := readHistory(t, n, ch, true)
		if len(msgs) < 5 {
			t.Errorf("stale history of %s on restarted %s: got %d messages, want the 5 from before the stop and more", ch, m.ID, len(msgs))
			continue
		}
		checkHistory(t, fmt.Sprintf("stale history of %s on restarted %s", ch, m.ID), msgs[5:], acked[ch])
	}
}

// TestStaleStateFileRepairedAtStart restarts the leader of a partition
// with its state file replaced by an older copy of itself. The replica
// restores its latest snapshot before it opens and replays its log after
// it: no read through the node ever sees the old state, and its digest
// ends equal to the others'.
func TestStaleStateFileRepairedAtStart(t *testing.T) {
	t.Parallel()
	const parts = 4
	// No commit nudges: the test compares the reopened state's applied
	// index with the snapshot's Raft index, which a Barrier after the last
	// command would put one past it.
	cfg := smallSnapshots
	cfg.CommitNudge = -1
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts, Partition: cfg})
	c.WaitSettled(30 * time.Second)
	const p = 0
	ch := spreadChannels("stale", parts, 1)[p]
	createAll(t, c, []string{ch})
	lead := c.Ring().GetPartitions()[p].GetDesiredReplicas()[0]
	li := memberIndex(c, lead)
	m := c.Member(li)
	waitLeads := func(what string) {
		t.Helper()
		took := clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, what, func() bool {
			n := m.Cluster()
			return n != nil && n.Replica(p) != nil && n.Replica(p).IsLeader()
		})
		t.Logf("%s: %v", what, took)
	}
	waitLeads(lead + " leads partition 0, as its preferred leader")
	first := postSome(t, c, ch, "old", 10)

	// An older copy of the state file, taken while the node is stopped.
	m.Stop()
	state := filepath.Join(m.Dir, "partitions", fmt.Sprintf("%03d", p), partition.StateFile)
	old := filepath.Join(t.TempDir(), "old-state.db")
	copyFile(t, state, old)
	oldIndex := appliedIndexOf(t, old)
	m.Restart()
	c.WaitReady(30 * time.Second)
	waitLeads(lead + " leads partition 0 again after the restart")

	// More writes, until the leader has snapshotted well past the copy.
	w := startWriter(t, c, ch, "new", nil)
	var snap uint64
	clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "the leader snapshots past the old copy", func() bool {
		snap = m.Cluster().Replica(p).LastSnapshotIndex()
		return snap >= oldIndex+2*smallSnapshots.SnapshotThreshold
	})
	more := len(w.snapshot()) + 10
	clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "10 more posts after the snapshot", func() bool {
		return len(w.snapshot()) >= more
	})
	acked := append(first, w.stop()...)
	waitLeads(lead + " still leads partition 0")
	c.WaitSameDigests(30 * time.Second)
	snap = m.Cluster().Replica(p).LastSnapshotIndex()
	want := c.Digests(p)[lead]
	t.Logf("old copy at index %d; %s's latest snapshot at %d; state at %d; %d posts", oldIndex, lead, snap, want.Index, len(acked))

	m.Stop()
	copyFile(t, old, state)
	begin := time.Now()
	m.Restart()
	// The replica opens only after restoring the snapshot: the first look
	// at it must find the snapshot's state, not the old copy's.
	var r *partition.Partition
	clustertest.CheckFor(t, 30*time.Second, time.Millisecond, lead+" reopens its replica", func() bool {
		if n := m.Cluster(); n != nil {
			r = n.Replica(p)
		}
		return r != nil
	})
	index, _, err := r.DB().AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s reopened partition %d %v after the restart at applied index %d (old copy %d, snapshot %d)",
		lead, p, since(begin), index, oldIndex, snap)
	if index < snap {
		t.Errorf("%s: partition %d opened at applied index %d, want at least its snapshot's %d (the old copy had %d)",
			lead, p, index, snap, oldIndex)
	}

	// Every read through the node, stale or not, while it catches up,
	// answers from at least the snapshot and agrees with what was
	// acknowledged.
	n := m.Cluster()
	reads := 0
	took := clustertest.CheckFor(t, 30*time.Second, 5*time.Millisecond, lead+"'s replica converges", func() bool {
		for _, stale := range []bool{true, false} {
			msgs := readHistoryIndexed(t, n, ch, stale, snap)
			reads++
			if len(msgs) <= len(first) || len(msgs) > len(acked) {
				t.Fatalf("history of %s via %s (stale %v) while it catches up: got %d messages, want more than the old copy's %d and at most %d",
					ch, lead, stale, len(msgs), len(first), len(acked))
			}
			checkHistory(t, fmt.Sprintf("history of %s via %s (stale %v) while it catches up", ch, lead, stale), msgs, acked[:len(msgs)])
		}
		d, ok := c.Digests(p)[lead]
		return ok && d == want
	})
	t.Logf("%s's replica equal to the others' %v after it reopened (%d reads checked meanwhile)", lead, took, reads)
	c.WaitSameDigests(30 * time.Second)
	checkHistory(t, fmt.Sprintf("stale history of %s via repaired %s", ch, lead), readHistory(t, n, ch, true), acked)
}

// readHistoryIndexed reads a channel's history (up to 1000 messages,
// oldest first) through n, failing the test if the replica that answered
// had applied less than minIndex.
func readHistoryIndexed(t *testing.T, n *cluster.Node, ch string, stale bool, minIndex uint64) []*heraldv1.Message {
	t.Helper()
	h, err := n.History(t.Context(), clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch,
		Limit: 1000, OldestFirst: true, Stale: stale})
	if err != nil {
		t.Fatalf("history of %s via %s (stale %v): %v", ch, n.ID(), stale, err)
	}
	if h.GetHasMore() {
		t.Fatalf("history of %s via %s (stale %v): more than 1000 messages", ch, n.ID(), stale)
	}
	if got := h.GetAppliedIndex(); got < minIndex {
		t.Fatalf("history of %s via %s (stale %v): answered at applied index %d, want at least %d",
			ch, n.ID(), stale, got, minIndex)
	}
	return h.GetMessages()
}

// createAll creates the channels through the running nodes in turn.
func createAll(t *testing.T, c *clustertest.Cluster, chs []string) {
	t.Helper()
	nodes := c.Running()
	for i, ch := range chs {
		clustertest.MustCreate(t, nodes[i%len(nodes)], ch)
	}
}

// postSome posts k messages to ch (client_msg_ids prefix-0 …) through the
// running nodes in turn and returns their acknowledgements.
func postSome(t *testing.T, c *clustertest.Cluster, ch, prefix string, k int) []ack {
	t.Helper()
	var out []ack
	turn := 0
	pick := func() *cluster.Node {
		nodes := c.Running()
		turn++
		return nodes[turn%len(nodes)]
	}
	for i := range k {
		a, err := postAcked(t.Context(), pick, ch, fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// leaderReplica returns the running node whose replica of p leads, and
// that replica, or nils.
func leaderReplica(c *clustertest.Cluster, p uint32) (*cluster.Node, *partition.Partition) {
	for _, n := range c.Running() {
		if r := n.Replica(p); r != nil && r.IsLeader() {
			return n, r
		}
	}
	return nil, nil
}

// appliedIndexOf reads the applied index of a state file, from a copy so
// that the file itself is left as it is.
func appliedIndexOf(t *testing.T, path string) uint64 {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "probe.db")
	copyFile(t, path, probe)
	db, err := storage.Open(probe, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	index, _, err := db.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	return index
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
