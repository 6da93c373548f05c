package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/clustertest"
)

func TestThreeNodesBootstrapAndServe(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 16})
	took := c.WaitSettled(30 * time.Second)
	t.Logf("settled %v after ready", took)
	// A ring seen settled: on a loaded machine a leader can be lost again
	// between two looks, and a partition electing has no replicas to show.
	ring := settledRing(t, c)
	leads := map[string]int{}
	for _, p := range ring.GetPartitions() {
		seen := map[string]bool{}
		for _, r := range p.GetReplicas() {
			if seen[r.GetNodeId()] {
				t.Errorf("partition %d: node %s holds two replicas", p.GetId(), r.GetNodeId())
			}
			seen[r.GetNodeId()] = true
		}
		if len(seen) != 3 {
			t.Errorf("partition %d: got %d replicas, want 3", p.GetId(), len(seen))
		}
		leads[p.GetLeader()]++
	}
	for id, n := range leads {
		if n > 8 {
			t.Errorf("node %s leads %d of 16 partitions, want at most 8", id, n)
		}
	}
	t.Logf("leaders per node: %v", leads)

	postAndReadEverywhere(t, c, "ch-%03d", 40)
}

// postAndReadEverywhere creates channels named by format and posts once to
// each, through rotating nodes of c, then reads each one's history through
// every node, and waits for the replicas' digests to agree.
func postAndReadEverywhere(t *testing.T, c *clustertest.Cluster, format string, channels int) {
	t.Helper()
	ctx := context.Background()
	nodes := c.Running()
	for i := range channels {
		ch := fmt.Sprintf(format, i)
		via := nodes[i%len(nodes)]
		clustertest.MustCreate(t, via, ch)
		via = nodes[(i+1)%len(nodes)]
		res, err := clustertest.Write(ctx, via, clustertest.Post(ch, "hello "+ch, "m-"+ch))
		if err != nil {
			t.Fatalf("post to %s via %s: %v", ch, via.ID(), err)
		}
		if res.Message.GetSeq() != 1 {
			t.Fatalf("post to %s: got seq %d, want 1", ch, res.Message.GetSeq())
		}
	}
	for i := range channels {
		ch := fmt.Sprintf(format, i)
		for _, n := range nodes {
			h, err := n.History(ctx, clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch})
			if err != nil {
				t.Fatalf("history of %s via %s: %v", ch, n.ID(), err)
			}
			if len(h.GetMessages()) != 1 || h.GetMessages()[0].GetText() != "hello "+ch {
				t.Fatalf("history of %s via %s: got %v, want one message", ch, n.ID(), h.GetMessages())
			}
		}
	}
	c.WaitSameDigests(10 * time.Second)
}
