package cluster_test

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/meta"
)

// TestSignal: a signal reaches every other node with the gateway role,
// as sent, and neither the sender nor a node without the role.
func TestSignal(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	noGateway := c.AddNode(meta.RoleChannel, meta.RoleEdge)
	c.WaitReady(30 * time.Second)
	var mu sync.Mutex
	got := map[string][]*clusterv1.SignalRequest{}
	for _, m := range c.Members() {
		m.Cluster().OnSignal(func(req *clusterv1.SignalRequest) {
			mu.Lock()
			got[m.ID] = append(got[m.ID], req)
			mu.Unlock()
		})
	}
	// Every node must know the gateway-less node's roles first.
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "every node knows n4", func() bool {
		for _, m := range c.Members() {
			resp, err := m.Cluster().ListNodes(t.Context())
			if err != nil || len(resp.GetNodes()) != 4 {
				return false
			}
		}
		return true
	})
	sent := &clusterv1.SignalRequest{ChannelId: "general",
		Kind: &clusterv1.SignalRequest_Typing{Typing: &heraldv1.Typing{ChannelId: "general", User: "alice"}}}
	c.Member(0).Cluster().Signal(sent)
	clustertest.CheckFor(t, 10*time.Second, 10*time.Millisecond, "n2 and n3 receive the signal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["n2"]) == 1 && len(got["n3"]) == 1
	})
	time.Sleep(200 * time.Millisecond) // a stray relay would have come by now, on loopback
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"n2", "n3"} {
		if len(got[id]) != 1 || !proto.Equal(got[id][0], sent) {
			t.Errorf("%s received %v, want exactly %v", id, got[id], sent)
		}
	}
	for _, id := range []string{"n1", noGateway.ID} {
		if len(got[id]) != 0 {
			t.Errorf("%s received %v, want nothing (the sender, and a node without the gateway role)", id, got[id])
		}
	}
}
