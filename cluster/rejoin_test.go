package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/storage"
)

// waitFailed waits until the node fails by itself, and returns its error.
func waitFailed(t *testing.T, m *clustertest.Node, within time.Duration) error {
	t.Helper()
	n := m.Cluster()
	if n == nil {
		t.Fatalf("%s is not running", m.ID)
	}
	select {
	case <-n.Failed():
		return n.Err()
	case <-time.After(within):
		t.Fatalf("%s did not refuse to run within %v (ready: %v)", m.ID, within, n.Ready())
		return nil
	}
}

// TestLostDataDirRefused restarts a node whose data directory is gone
// under the id the cluster knows: its Raft replicas would have forgotten
// their votes (vote amnesia), and as voters they could vote twice in one
// term. Before, the node rejoined its groups as a voter with no state. It
// must refuse, saying what to do, without taking part in any group.
func TestLostDataDirRefused(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	c.WaitSettled(30 * time.Second)
	m := c.Member(2)
	m.Kill()
	if err := os.RemoveAll(m.Dir); err != nil {
		t.Fatal(err)
	}
	m.Restart()
	err := waitFailed(t, m, 30*time.Second)
	if !errors.Is(err, cluster.ErrStateLost) || !strings.Contains(err.Error(), "herald admin remove "+m.ID) {
		t.Errorf("restart with an empty data directory: got %v, want ErrStateLost saying to run herald admin remove %s", err, m.ID)
	}
	t.Logf("refused: %v", err)
	for p := range uint32(2) {
		if m.Cluster().Replica(p) != nil {
			t.Errorf("%s opened a replica of partition %d", m.ID, p)
		}
	}
	// The others go on.
	m.Kill()
	postAndReadEverywhere(t, c, "after-refusal-%d", 2)
}

// TestLostReplicaDirRefused deletes one partition replica's directory of a
// stopped node whose other data is intact: that replica had voted and
// acknowledged entries, and must not come back empty as a voter.
func TestLostReplicaDirRefused(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	c.WaitSettled(30 * time.Second)
	m := c.Member(1)
	m.Stop()
	dir := filepath.Join(m.Dir, "partitions", "001")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	m.Restart()
	err := waitFailed(t, m, 30*time.Second)
	if !errors.Is(err, cluster.ErrStateLost) || !strings.Contains(err.Error(), dir) {
		t.Errorf("restart without partition 1's replica: got %v, want ErrStateLost naming %s", err, dir)
	}
	t.Logf("refused: %v", err)
}

// TestRemovedNodeRejoins removes a dead node, and starts it again under
// its id with an empty data directory: it joins as a new member and gets
// replicas again. Before, it never became ready. Started with its old
// data instead, it refuses at once.
func TestRemovedNodeRejoins(t *testing.T) {
	const parts = 2
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	m := c.Member(2)
	m.Kill()
	via := c.Node(0)
	if _, err := via.RemoveNode(t.Context(), m.ID); err != nil {
		t.Fatalf("RemoveNode(%s): %v", m.ID, err)
	}
	clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, m.ID+" out of every group", func() bool {
		r, err := via.GetRing(t.Context())
		if err != nil {
			return false
		}
		for _, p := range r.GetPartitions() {
			if p.GetLeader() == "" {
				return false
			}
			for _, rep := range p.GetReplicas() {
				if rep.GetNodeId() == m.ID {
					return false
				}
			}
		}
		return true
	})

	// With its old data, the removed node has nothing to rejoin with.
	m.Restart()
	err := waitFailed(t, m, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "was removed") {
		t.Errorf("removed node started with its old data: got %v, want a refusal saying it was removed", err)
	}
	m.Kill()

	if err := os.RemoveAll(m.Dir); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	m.Restart()
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, m.ID+" back in every group", func() bool {
		r, err := via.GetRing(t.Context())
		if err != nil || !clustertest.Settled(r) {
			return false
		}
		for _, p := range r.GetPartitions() {
			if len(p.GetReplicas()) != 3 {
				return false
			}
		}
		return true
	})
	c.WaitReady(30 * time.Second)
	t.Logf("%s rejoined as a new member: every partition has 3 replicas again %v after its start", m.ID, since(begin))
	st, err := via.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range st.GetNodes() {
		if node.GetId() == m.ID && node.GetState() != heraldv1.Node_STATE_ACTIVE {
			t.Errorf("%s: state %v, want active", m.ID, node.GetState())
		}
	}
	c.WaitSameDigests(30 * time.Second)
}

// TestDrainedNodeReturnsToService drains a node until it holds nothing,
// stops it and starts it again: it is wanted again, so it goes back into
// service and takes replicas. Before, it stayed draining for ever.
func TestDrainedNodeReturnsToService(t *testing.T) {
	const parts = 4
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	m := c.Member(3)
	via := c.Node(0)
	if _, err := via.DrainNode(context.Background(), m.ID); err != nil {
		t.Fatalf("DrainNode(%s): %v", m.ID, err)
	}
	holds := func() int {
		r, err := via.GetRing(t.Context())
		if err != nil || !clustertest.Settled(r) {
			return -1
		}
		reps, _ := replicasPerNode(r)
		return reps[m.ID]
	}
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, m.ID+" holds nothing", func() bool { return holds() == 0 })
	m.Stop()
	m.Restart()
	begin := time.Now()
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, m.ID+" back in service with replicas", func() bool {
		st, err := via.ListNodes(t.Context())
		if err != nil {
			return false
		}
		for _, node := range st.GetNodes() {
			if node.GetId() == m.ID && node.GetState() != heraldv1.Node_STATE_ACTIVE {
				return false
			}
		}
		return holds() > 0
	})
	t.Logf("%s active again, holding %d replicas, %v after its restart", m.ID, holds(), since(begin))
}

// TestEveryFounderBootstraps founds a cluster of four (three metadata
// voters and a non-voter) and checks that every node's ledger records it
// as a founder, so that each bootstraps its replicas of the first
// placement. A node whose Hello found a peer that had already bootstrapped
// the metadata group used to take the join path and never record it: a
// first-placement group whose replicas were all such nodes bootstrapped
// nowhere and never elected a leader.
func TestEveryFounderBootstraps(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: 4})
	c.WaitSettled(30 * time.Second)
	for _, m := range c.Members() {
		b, err := os.ReadFile(filepath.Join(m.Dir, "replicas.json"))
		if err != nil {
			t.Fatal(err)
		}
		var l struct {
			Founder bool `json:"founder"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("%s: replicas.json: %v", m.ID, err)
		}
		if !l.Founder {
			t.Errorf("%s founded the cluster, but its ledger says it did not: %s", m.ID, b)
		}
	}
}

// partsOfStopTwo is the partition count of stopTwoReplicas' cluster.
const partsOfStopTwo = 4

// stopTwoReplicas starts five nodes, picks a partition p and two of its
// replicas whose stop leaves the metadata group a quorum, posts ten
// messages ("before 0" … "before 9", ids away-N) to a channel of p, and
// stops the two, gracefully. via is a node left running.
func stopTwoReplicas(t *testing.T) (c *clustertest.Cluster, p uint32, down []string, via *cluster.Node) {
	t.Helper()
	c = clustertest.New(t, clustertest.Options{Nodes: 5, Partitions: partsOfStopTwo})
	c.WaitSettled(30 * time.Second)
	voters := metaVoters(t, c.Node(0))
	// A partition and two of its replicas whose stop leaves the metadata
	// group a quorum.
	for _, part := range c.Ring().GetPartitions() {
		reps := part.GetDesiredReplicas()
		for i := range reps {
			for j := i + 1; j < len(reps); j++ {
				lost := 0
				for _, id := range []string{reps[i], reps[j]} {
					if voters[id] {
						lost++
					}
				}
				if down == nil && len(voters)-lost > len(voters)/2 {
					p, down = part.GetId(), []string{reps[i], reps[j]}
				}
			}
		}
	}
	if down == nil {
		t.Fatalf("no partition with two replicas whose stop keeps a metadata quorum of voters %v", voters)
	}
	for _, n := range c.Running() {
		if !slices.Contains(down, n.ID()) {
			via = n
		}
	}
	ch := channelIn("away", p, partsOfStopTwo)
	clustertest.MustCreate(t, via, ch)
	for i := range 10 {
		clustertest.MustPost(t, via, ch, fmt.Sprintf("before %d", i), fmt.Sprintf("away-%d", i))
	}
	for _, id := range down {
		c.Member(memberIndex(c, id)).Stop()
	}
	return c, p, down, via
}

// TestMovedWhileDownRejoinsItsGroups stops two of a partition's three
// replicas and, while they are down, places the partition on the other
// three nodes (as a rebalance can: its group cannot follow without a
// quorum), then starts the two again. They must open the replicas they
// hold, though the placement no longer lists them, so that the group has
// its quorum back and can hand its data over. Before, a node opened only
// the replicas the placement gave it, and the group was left with one
// voter of three for good (found by herald torture, seed 12).
func TestMovedWhileDownRejoinsItsGroups(t *testing.T) {
	c, p, down, via := stopTwoReplicas(t)
	// The partition's one live replica first, then the two nodes that had
	// none.
	var placed []string
	for _, id := range placementOf(t, via, p).GetReplicas() {
		if !slices.Contains(down, id) {
			placed = append(placed, id)
		}
	}
	for _, n := range c.Running() {
		if !slices.Contains(placed, n.ID()) {
			placed = append(placed, n.ID())
		}
	}
	clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, fmt.Sprintf("partition %d placed on %v", p, placed), func() bool {
		for _, n := range c.Running() {
			if !n.Meta().IsLeader() {
				continue
			}
			_, err := n.Meta().Propose(t.Context(), &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
				SetPlacement: &clusterv1.SetPlacement{Placements: []*clusterv1.Placement{{
					Partition: p, Replicas: placed, ExpectEpoch: placementOf(t, n, p).GetEpoch()}}}}})
			return err == nil
		}
		return false
	})
	t.Logf("partition %d placed on %v while %v, which hold it, are down; starting them again", p, placed, down)
	begin := time.Now()
	for _, id := range down {
		c.Member(memberIndex(c, id)).Restart()
	}
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, "ring settled", func() bool {
		r, err := via.GetRing(t.Context())
		return err == nil && clustertest.Settled(r)
	})
	t.Logf("ring settled %v after the restart", since(begin))
	// Handed over, the reopened replicas leave (unless a rebalance has
	// placed the partition on their node again since).
	for _, id := range down {
		m := c.Member(memberIndex(c, id))
		clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, id+" retired its replica of the moved partition", func() bool {
			return m.Cluster().Replica(p) == nil || slices.Contains(placementOf(t, via, p).GetReplicas(), id)
		})
	}
	checkBefore(t, via, p)
}

// checkBefore checks, through n, that partition p's channel of
// stopTwoReplicas holds the ten messages posted before the stop, in order.
func checkBefore(t *testing.T, n *cluster.Node, p uint32) {
	t.Helper()
	ch := channelIn("away", p, partsOfStopTwo)
	msgs := readAll(t, n, ch)
	if len(msgs) != 10 {
		t.Errorf("%s: got %d messages, want the 10 posted before the stop", ch, len(msgs))
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("before %d", i); m.GetText() != want {
			t.Errorf("%s message %d: got %q, want %q", ch, i, m.GetText(), want)
		}
	}
}

// TestRebalanceLeavesUnsettledPartitions drains two of a partition's three
// replicas while they are down, so that its group has no quorum, and asks
// for a rebalance: the partition must keep its placement until its group
// can follow. Before, Rebalance planned every partition as if settled, one
// change per call: two calls took both drained replicas out of the
// placement of a group that still needed them (herald torture, seed 12,
// restarts each drained node and rebalances). Then the two start again and
// the ring settles.
func TestRebalanceLeavesUnsettledPartitions(t *testing.T) {
	c, p, down, via := stopTwoReplicas(t)
	for _, id := range down {
		if _, err := via.DrainNode(t.Context(), id); err != nil {
			t.Fatalf("DrainNode(%s) while it is down: %v", id, err)
		}
	}
	before := placementOf(t, via, p)
	for k := 0; k < 3; {
		moves, err := via.Rebalance(t.Context())
		if errors.Is(err, storage.ErrFailedPrecondition) {
			continue // the metadata leader changed a placement meanwhile
		}
		if err != nil {
			t.Fatalf("Rebalance: %v", err)
		}
		t.Logf("Rebalance %d: %d moves", k+1, moves)
		k++
	}
	holdFor(t, time.Second, 50*time.Millisecond, fmt.Sprintf("partition %d kept at %v", p, before.GetReplicas()), func() bool {
		got := placementOf(t, via, p)
		if got.GetEpoch() != before.GetEpoch() {
			t.Errorf("partition %d, without a quorum, placed on %v (epoch %d), want kept on %v (epoch %d)",
				p, got.GetReplicas(), got.GetEpoch(), before.GetReplicas(), before.GetEpoch())
			return false
		}
		return true
	})
	for _, id := range down {
		c.Member(memberIndex(c, id)).Restart()
	}
	begin := time.Now()
	var last *heraldv1.GetRingResponse
	defer func() {
		if t.Failed() {
			t.Logf("the ring at the end: %v", ringSummary(last))
		}
	}()
	// The group has its quorum back and the drain goes on; a drained node
	// that is started again may also be back in service by the end.
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, "ring settled", func() bool {
		r, err := via.GetRing(t.Context())
		if err != nil {
			return false
		}
		last = r
		return clustertest.Settled(r)
	})
	t.Logf("ring settled %v after the restart", since(begin))
	checkBefore(t, via, p)
}

// placementOf returns partition p's placement as n's metadata has it.
func placementOf(t *testing.T, n *cluster.Node, p uint32) *clusterv1.Placement {
	t.Helper()
	for _, pl := range n.Meta().State().GetPlacements() {
		if pl.GetPartition() == p {
			return pl
		}
	}
	t.Fatalf("%s: no placement of partition %d", n.ID(), p)
	return nil
}

// ringSummary is r in one line per partition, for a failure message.
func ringSummary(r *heraldv1.GetRingResponse) string {
	var b strings.Builder
	for _, p := range r.GetPartitions() {
		fmt.Fprintf(&b, "\n  partition %d leader %q %v placed on %v:", p.GetId(), p.GetLeader(), p.GetHealth(), p.GetDesiredReplicas())
		for _, rep := range p.GetReplicas() {
			fmt.Fprintf(&b, " %s %s %d/%d voter=%v", rep.GetNodeId(), rep.GetState(), rep.GetAppliedIndex(), rep.GetCommitIndex(), rep.GetVoter())
		}
	}
	return b.String()
}

// metaVoters returns the ids of the metadata group's voters, as n sees
// its configuration.
func metaVoters(t *testing.T, n *cluster.Node) map[string]bool {
	t.Helper()
	servers, err := n.Meta().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	voters := map[string]bool{}
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters[string(s.ID)] = true
		}
	}
	return voters
}
