package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/meta"
)

// holders returns the nodes the ring places or finds replicas of any
// partition on, and those leading one.
func holders(r *heraldv1.GetRingResponse) (replicas, leaders map[string]bool) {
	replicas, leaders = map[string]bool{}, map[string]bool{}
	for _, p := range r.GetPartitions() {
		for _, rep := range p.GetReplicas() {
			replicas[rep.GetNodeId()] = true
		}
		for _, id := range p.GetDesiredReplicas() {
			replicas[id] = true
		}
		leaders[p.GetLeader()] = true
	}
	return replicas, leaders
}

// TestRoles: a node that joins without the channel role holds no replica
// and still serves writes and event streams for every channel, through
// the replicas elsewhere; a node restarted without the channel role hands
// its replicas and leaderships over, as a drain does; the metadata
// records each node's roles.
func TestRoles(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 4})
	c.WaitSettled(30 * time.Second)
	g := c.AddNode(meta.RoleEdge, meta.RoleGateway)
	spare := c.AddNode()
	settled := func(what string, without ...string) {
		t.Helper()
		var last string
		clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, what, func() bool {
			r := c.Ring()
			reps, leads := holders(r)
			last = fmt.Sprintf("replicas on %v, leaders %v", reps, leads)
			if !clustertest.Settled(r) {
				return false
			}
			for _, id := range without {
				if reps[id] || leads[id] {
					return false
				}
			}
			for _, p := range r.GetPartitions() {
				if len(p.GetReplicas()) != 3 {
					return false
				}
			}
			return true
		})
		t.Logf("%s: %s", what, last)
	}
	settled("settled with a gateway-only node", g.ID)
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, g.ID+" ready", g.Cluster().Ready)

	// Writes and event streams through the gateway-only node.
	const ch = "roles"
	clustertest.MustCreate(t, g.Cluster(), ch)
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, clustertest.MustPost(t, g.Cluster(), ch, "via the gateway node", fmt.Sprint("g-", i)))
	}
	s, err := g.Cluster().Watch(ch, 0)
	if err != nil {
		t.Fatalf("Watch %s through %s: %v", ch, g.ID, err)
	}
	defer s.Close()
	var got []uint64
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for !slices.Contains(got, seqs[len(seqs)-1]) {
		evs, err := s.Next(ctx, 100)
		if err != nil {
			t.Fatalf("Next on %s's stream after %v: %v", g.ID, got, err)
		}
		for _, ev := range evs {
			if ev.GetMessagePosted() != nil {
				got = append(got, ev.GetSeq())
			}
		}
	}
	if !slices.Equal(got, seqs) {
		t.Errorf("events through %s: posts at seqs %v, want %v", g.ID, got, seqs)
	}

	// n3 comes back without the channel role: its replicas move to the spare.
	n3 := c.Member(2)
	n3.Stop()
	n3.SetRoles(meta.RoleEdge, meta.RoleGateway, meta.RoleAdmin)
	n3.Restart()
	settled("n3's replicas handed over", g.ID, n3.ID)
	if reps, _ := holders(c.Ring()); !reps[spare.ID] {
		t.Errorf("%s, with every role, holds no replica after n3 gave its replicas away", spare.ID)
	}
	clustertest.MustPost(t, n3.Cluster(), ch, "via n3, now without replicas", "n3-1")

	want := map[string]string{"n1": "edge,admin,channel,gateway", "n2": "edge,admin,channel,gateway",
		"n3": "edge,admin,gateway", g.ID: "edge,gateway", spare.ID: "edge,admin,channel,gateway"}
	var diffs []string
	t.Cleanup(func() {
		if t.Failed() && len(diffs) > 0 {
			t.Logf("ListNodes, last read: %s", strings.Join(diffs, "; "))
		}
	})
	clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, "ListNodes with roles, and n3 and the gateway node holding nothing", func() bool {
		resp, err := c.Member(0).Cluster().ListNodes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		diffs = nil
		for _, node := range resp.GetNodes() {
			if got := strings.Join(node.GetRoles(), ","); got != want[node.GetId()] {
				diffs = append(diffs, fmt.Sprintf("%s has roles %q, want %q", node.GetId(), got, want[node.GetId()]))
			}
			if id := node.GetId(); (id == g.ID || id == n3.ID) && (node.GetReplicas() != 0 || node.GetLeaders() != 0) {
				diffs = append(diffs, fmt.Sprintf("%s holds %d replicas and leads %d, want none", id, node.GetReplicas(), node.GetLeaders()))
			}
		}
		return len(diffs) == 0
	})
}

// TestFoundWithGatewayOnlyNode: a cluster founded by three full nodes and
// a gateway-only one places every partition on the three.
func TestFoundWithGatewayOnlyNode(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: 4,
		Roles: map[string][]string{"n4": {meta.RoleEdge, meta.RoleGateway}}})
	c.WaitSettled(30 * time.Second)
	r := c.Ring()
	for _, p := range r.GetPartitions() {
		if len(p.GetDesiredReplicas()) != 3 || slices.Contains(p.GetDesiredReplicas(), "n4") {
			t.Errorf("partition %d placed on %v, want three replicas, none on n4", p.GetId(), p.GetDesiredReplicas())
		}
	}
	clustertest.MustCreate(t, c.Member(3).Cluster(), "founded")
	clustertest.MustPost(t, c.Member(3).Cluster(), "founded", "through n4", "f-1")
}

// TestMetaVotersHoldReplicas: a cluster founded with a gateway-only node
// among its first three, the metadata group's founding voters, moves that
// vote to a node with the channel role, and keeps three voters: a node
// meant to come and go does not carry the metadata's quorum.
func TestMetaVotersHoldReplicas(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: 4,
		Roles: map[string][]string{"n1": {meta.RoleEdge, meta.RoleGateway}}})
	c.WaitSettled(30 * time.Second)
	var last []string
	clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, "metadata voters n2, n3, n4", func() bool {
		resp, err := c.Member(1).Cluster().ListNodes(t.Context())
		if err != nil {
			return false
		}
		last = last[:0]
		for _, node := range resp.GetNodes() {
			if node.GetMetaVoter() {
				last = append(last, node.GetId())
			}
		}
		slices.Sort(last)
		return slices.Equal(last, []string{"n2", "n3", "n4"})
	})
	t.Logf("metadata voters: %v", last)
	clustertest.MustCreate(t, c.Member(0).Cluster(), "voters")
	clustertest.MustPost(t, c.Member(0).Cluster(), "voters", "through the gateway-only node", "v-1")
}

// TestParseRoles reads --roles.
func TestParseRoles(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{"all", "edge,admin,channel,gateway", ""},
		{"gateway,edge", "edge,gateway", ""},
		{" channel ", "channel", ""},
		{"", "", "no roles: give one or more of edge, admin, channel, gateway"},
		{"edge,gatway", "", `unknown role "gatway": want one or more of edge, admin, channel, gateway`},
		{"edge,edge", "", `role "edge" given twice`},
	} {
		got, err := cluster.ParseRoles(c.in)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("ParseRoles(%q): got %v, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("ParseRoles(%q): got %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}
