package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
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
