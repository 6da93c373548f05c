package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/meta"
)

// TestWatchLeavesACutOffReplica watches a channel through a follower
// node, then cuts that node off from the partition's leader, both ways,
// while it can still reach the third node. Its replica stops hearing of
// commits, so the stream must go on from another node's replica: every
// post acknowledged through the third node arrives, and, once the link
// heals and the local replica has been current a while, the stream reads
// it again. Before, the stream stalled on the cut-off replica, with no
// event and no error, until the link healed. The events streamed are the
// channel's history, each once, in order.
func TestWatchLeavesACutOffReplica(t *testing.T) {
	c, ch, leader, others := faultCluster(t, "watch-cut-1")
	edge, third := others[0], others[1]
	s, err := edge.Cluster().Watch(ch, 0)
	if err != nil {
		t.Fatalf("Watch via %s: %v", edge.ID, err)
	}
	defer s.Close()
	col := collectStream(t, s)
	last := postThrough(t, leader.Cluster(), ch, "before", 5)
	waitStreamed(t, col, last, 10*time.Second, "posts before the cut")
	if src := cluster.WatchSource(s); src != "" {
		t.Fatalf("stream through %s, which holds a current replica, reads from %s, want its own", edge.ID, src)
	}

	c.Net.Partition(edge.ID, leader.ID)
	cut := time.Now()
	t.Logf("%s", c.Net)
	last = postThrough(t, third.Cluster(), ch, "cut", 10)
	waitStreamed(t, col, last, 20*time.Second, "posts while "+edge.ID+" is cut off from "+leader.ID)
	t.Logf("the posts made while %s was cut off streamed through it %v after the cut, from %s",
		edge.ID, since(cut), cluster.WatchSource(s))

	if v := gauges(t, edge.Cluster(), "herald_partition_current"); v != 0 {
		t.Errorf("%s's herald_partition_current while cut off: %v, want 0", edge.ID, v)
	}
	// A peer's stream from the cut-off replica is refused, so that a node
	// reading through it goes elsewhere.
	rpc, err := rawClient(edge.HTTP, staticHeader("")).Watch(t.Context(),
		&clusterv1.WatchRequest{Partition: 0, ChannelId: ch, AfterSeq: last})
	if err == nil {
		if rpc.Receive() {
			t.Errorf("Watch RPC to %s, cut off from its leader: got events, want unavailable", edge.ID)
		}
		err = rpc.Err()
		_ = rpc.Close()
	}
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "not current") {
		t.Errorf("Watch RPC to %s, cut off from its leader: got %v, want unavailable, not current", edge.ID, err)
	}

	c.Net.Heal()
	healed := time.Now()
	for i := 0; cluster.WatchSource(s) != ""; i++ {
		if time.Since(healed) > 20*time.Second {
			t.Fatalf("stream through %s still reads from %s 20s after the link healed, want its own replica",
				edge.ID, cluster.WatchSource(s))
		}
		last = postThrough(t, edge.Cluster(), ch, fmt.Sprintf("healed-%d", i), 1)
		waitStreamed(t, col, last, 10*time.Second, "posts after the heal")
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("back on %s's own replica %v after the heal", edge.ID, since(healed))
	if v := gauges(t, edge.Cluster(), "herald_partition_current"); v != 1 {
		t.Errorf("%s's herald_partition_current back on its own replica: %v, want 1", edge.ID, v)
	}
	last = postThrough(t, third.Cluster(), ch, "after", 5)
	waitStreamed(t, col, last, 10*time.Second, "posts after the stream came back")
	checkStreamed(t, col.stop(), leader.Cluster(), ch)
}

// postThrough posts k messages to ch through n, retrying as a client
// would, and returns the last one's seq.
func postThrough(t *testing.T, n *cluster.Node, ch, prefix string, k int) uint64 {
	t.Helper()
	var seq uint64
	for i := range k {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		a, err := postAcked(ctx, func() *cluster.Node { return n }, ch, fmt.Sprintf("%s-%d", prefix, i))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		seq = a.seq
	}
	return seq
}

// waitStreamed waits until col has received the event of seq.
func waitStreamed(t *testing.T, col *streamCollector, seq uint64, total time.Duration, what string) {
	t.Helper()
	clustertest.CheckFor(t, total, 10*time.Millisecond, fmt.Sprintf("%s streamed (seq %d)", what, seq), func() bool {
		return col.last() >= seq
	})
}

// checkStreamed checks that evs, streamed from seq 1, are ch's events as n
// reads them linearizably: each once, in seq order, none missing.
func checkStreamed(t *testing.T, evs []*heraldv1.Event, n *cluster.Node, ch string) {
	t.Helper()
	var want []*heraldv1.Event
	for after := uint64(0); ; {
		page, head, _, err := n.Events(t.Context(), ch, after, 500)
		if err != nil {
			t.Fatalf("events of %s after %d: %v", ch, after, err)
		}
		want = append(want, page...)
		if len(page) == 0 || page[len(page)-1].GetSeq() >= head {
			break
		}
		after = page[len(page)-1].GetSeq()
	}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) {
			t.Fatalf("streamed event %d has seq %d, want %d: a gap or a duplicate", i, ev.GetSeq(), i+1)
		}
	}
	if len(evs) > len(want) {
		t.Fatalf("streamed %d events, the channel has %d", len(evs), len(want))
	}
	for i, ev := range evs {
		if !proto.Equal(ev, want[i]) {
			t.Fatalf("streamed event seq %d is %v, the channel's is %v", ev.GetSeq(), ev, want[i])
		}
	}
	t.Logf("streamed %d events of %s, each once and in order, as the channel holds them (%d)", len(evs), ch, len(want))
}

// TestOneUpstreamPerPartition watches seven channels of two partitions
// through a gateway-only node, which holds no replica: it reads them over
// two streams, one per partition, whatever the number of channels, and
// each watch gets its own channel's events, each once and in order. The
// streams close with their partition's last watch.
func TestOneUpstreamPerPartition(t *testing.T) {
	t.Parallel()
	const parts = 4
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	g := addGateway(t, c)
	spread := spreadChannels("mux", parts, 5)
	channels := append(append([]string{}, spread[:5]...), spread[5:7]...) // 5 of partition 0, 2 of 1
	gw := g.Cluster()
	streams := map[string]cluster.Stream{}
	cols := map[string]*streamCollector{}
	for _, ch := range channels {
		clustertest.MustCreate(t, c.Node(0), ch)
		s, err := gw.Watch(ch, 0)
		if err != nil {
			t.Fatalf("Watch %s through %s: %v", ch, g.ID, err)
		}
		streams[ch], cols[ch] = s, collectStream(t, s)
	}
	last := map[string]uint64{}
	for i := range 3 {
		for k, ch := range channels {
			last[ch] = clustertest.MustPost(t, c.Node(k%3), ch, "text", fmt.Sprintf("%s-%d", ch, i))
		}
	}
	for _, ch := range channels {
		waitStreamed(t, cols[ch], last[ch], 20*time.Second, "posts to "+ch)
	}
	if got := cluster.Upstreams(gw); got != 2 {
		t.Errorf("%s reads %d channels of 2 partitions over %d streams, want 2", g.ID, len(channels), got)
	}
	peerStreams, peerWatches := gauges(t, gw, "herald_peer_watch_streams"), gauges(t, gw, "herald_peer_watches")
	if peerStreams != 2 || peerWatches != float64(len(channels)) {
		t.Errorf("%s's metrics: herald_peer_watch_streams %v, herald_peer_watches %v; want 2 and %d",
			g.ID, peerStreams, peerWatches, len(channels))
	}
	for _, ch := range channels {
		evs := cols[ch].stop()
		for _, ev := range evs {
			if ev.GetChannelId() != ch {
				t.Fatalf("the watch of %s got an event of %s", ch, ev.GetChannelId())
			}
		}
		checkStreamed(t, evs, c.Node(0), ch)
	}
	for i, ch := range channels {
		streams[ch].Close()
		want := 2
		switch {
		case i >= 6:
			want = 0
		case i >= 4:
			want = 1
		}
		if got := cluster.Upstreams(gw); got != want {
			t.Errorf("after closing %d of the watches: %d streams, want %d", i+1, got, want)
		}
	}
}

// TestRemoteWatchReaderFallsBehind lets the reader of a watch from a peer
// fall further behind than the watch buffers: the watch drops what it
// holds and pauses, once, however many posts follow, and starts again
// from the reader's cursor when it reads, so the reader gets every event
// once and in order, and memory stayed bounded.
func TestRemoteWatchReaderFallsBehind(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 1})
	c.WaitSettled(30 * time.Second)
	g := addGateway(t, c)
	gw := g.Cluster()
	cluster.SetRemoteBuffer(gw, 4)
	const ch = "behind-1"
	clustertest.MustCreate(t, c.Node(0), ch)
	s, err := gw.Watch(ch, 0)
	if err != nil {
		t.Fatalf("Watch %s through %s: %v", ch, g.ID, err)
	}
	defer s.Close()
	// One read opens the stream; then the reader stops.
	last := clustertest.MustPost(t, c.Node(0), ch, "first", "first")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	evs, err := s.Next(ctx, 1)
	if err != nil {
		t.Fatalf("first event through %s: %v", g.ID, err)
	}
	for i := range 30 {
		last = clustertest.MustPost(t, c.Node(i%3), ch, "text", fmt.Sprint("m-", i))
	}
	clustertest.CheckFor(t, 20*time.Second, 10*time.Millisecond, "the watch overflowed", func() bool {
		return cluster.RemoteOverflows(gw) > 0
	})
	// Paused, it is sent nothing more until the reader reads.
	for i := range 5 {
		last = clustertest.MustPost(t, c.Node(i%3), ch, "text", fmt.Sprint("late-", i))
	}
	if n := cluster.RemoteOverflows(gw); n != 1 {
		t.Errorf("the watch overflowed %d times while its reader did not read, want once", n)
	}
	for evs[len(evs)-1].GetSeq() < last {
		more, err := s.Next(ctx, 3)
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, more...)
	}
	t.Logf("the watch overflowed %d times", cluster.RemoteOverflows(gw))
	checkStreamed(t, evs, c.Node(0), ch)
}

// gauges is the sum of n's series of the gauge name.
func gauges(t *testing.T, n *cluster.Node, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(n.Metrics())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather %s's metrics: %v", n.ID(), err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("%s serves no %s", n.ID(), name)
	return 0
}

// TestWatchThroughAGracefulStop stops, gracefully, the node whose replica
// feeds a gateway-only node's watch: the node's HTTP server must shut down
// at once (the watch stream it serves ends as Shutdown starts, instead of
// holding it until its timeout), and the watch goes on from another
// replica with every event once and in order.
func TestWatchThroughAGracefulStop(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 1})
	c.WaitSettled(30 * time.Second)
	g := addGateway(t, c)
	const ch = "graceful-1"
	clustertest.MustCreate(t, c.Node(0), ch)
	s, err := g.Cluster().Watch(ch, 0)
	if err != nil {
		t.Fatalf("Watch %s through %s: %v", ch, g.ID, err)
	}
	defer s.Close()
	col := collectStream(t, s)
	post := func(via *cluster.Node, i int) uint64 {
		return clustertest.MustPost(t, via, ch, "text", fmt.Sprintf("%s-%d", ch, i))
	}
	last := post(c.Node(0), 0)
	waitStreamed(t, col, last, 20*time.Second, "the first post")
	if got := cluster.Upstreams(g.Cluster()); got != 1 {
		t.Fatalf("%s reads %s over %d streams, want 1", g.ID, ch, got)
	}
	// The watch reads from the leader first.
	leader, others := leaderAndOthers(t, c, 0)
	leader.Stop()
	if err := leader.ShutdownErr(); err != nil {
		t.Errorf("%s's HTTP server did not shut down: %v", leader.ID, err)
	}
	for i := 1; i <= 5; i++ {
		last = post(others[0].Cluster(), i)
	}
	waitStreamed(t, col, last, 20*time.Second, "the posts after "+leader.ID+" stopped")
	checkStreamed(t, col.stop(), others[0].Cluster(), ch)
}

// addGateway adds a gateway-only node to c (edge and gateway roles, so no
// replicas: it reads every partition from peers) and waits until it is
// ready.
func addGateway(t *testing.T, c *clustertest.Cluster) *clustertest.Node {
	t.Helper()
	g := c.AddNode(meta.RoleEdge, meta.RoleGateway)
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, g.ID+" ready", g.Cluster().Ready)
	return g
}
