package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage"
)

// placementPartitions is the partition count of the placement tests that
// may run small: 4 with -short, 16 otherwise.
func placementPartitions() uint32 {
	if testing.Short() {
		return 4
	}
	return 16
}

// channelIn returns the first channel named prefix-N that partition p of
// partitions owns.
func channelIn(prefix string, p, partitions uint32) string {
	for i := 0; ; i++ {
		ch := fmt.Sprintf("%s-%d", prefix, i)
		if ring.Partition(ch, partitions) == p {
			return ch
		}
	}
}

// channelPerPartition returns one channel of each partition.
func channelPerPartition(prefix string, partitions uint32) []string {
	out := make([]string, partitions)
	for p := range partitions {
		out[p] = channelIn(prefix, p, partitions)
	}
	return out
}

// createChannels creates channels through n.
func createChannels(t *testing.T, n *cluster.Node, channels []string) {
	t.Helper()
	for _, ch := range channels {
		clustertest.MustCreate(t, n, ch)
	}
}

// ackLoad is a set of writers, one per channel, each posting messages with
// unique client_msg_ids and retrying a post with the same id until it is
// acknowledged. It records every acknowledgement.
type ackLoad struct {
	t      *testing.T
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex                   // guards following
	acked   map[string]map[string]uint64 // channel → client_msg_id → seq
	times   map[string][]time.Time       // channel → acknowledgement times
	retries int
}

// startLoad starts one writer per channel. via picks the node the k-th
// post (counting from 1) of a channel goes through; it must return a
// running node. The writers pace themselves at one post per 10 ms at most.
func startLoad(t *testing.T, via func(k int) *cluster.Node, channels []string) *ackLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &ackLoad{t: t, cancel: cancel, acked: map[string]map[string]uint64{}, times: map[string][]time.Time{}}
	for _, ch := range channels {
		l.acked[ch] = map[string]uint64{}
		l.wg.Go(func() { l.write(ctx, ch, via) })
	}
	t.Cleanup(l.stop)
	return l
}

func (l *ackLoad) write(ctx context.Context, ch string, via func(k int) *cluster.Node) {
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	for k := 1; ; k++ {
		id := fmt.Sprintf("%s-m%d", ch, k)
		for {
			if ctx.Err() != nil {
				return
			}
			n := via(k)
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := n.Apply(actx, clustertest.Post(ch, "text of "+id, id))
			cancel()
			if err == nil {
				l.mu.Lock()
				l.acked[ch][id] = res.Message.GetSeq()
				l.times[ch] = append(l.times[ch], time.Now())
				l.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			if !clustertest.Retryable(err) && !errors.Is(err, context.DeadlineExceeded) {
				l.t.Errorf("post %s to %s via %s: %v", id, ch, n.ID(), err)
				return
			}
			l.mu.Lock()
			l.retries++
			l.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
	}
}

// stop stops the writers and waits for them; it is idempotent.
func (l *ackLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// count returns how many posts have been acknowledged.
func (l *ackLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for _, m := range l.acked {
		total += len(m)
	}
	return total
}

// waitMore waits until k more posts than now have been acknowledged.
func (l *ackLoad) waitMore(k int, total time.Duration) time.Duration {
	l.t.Helper()
	want := l.count() + k
	return clustertest.CheckFor(l.t, total, 10*time.Millisecond, fmt.Sprintf("%d more acknowledged posts", k),
		func() bool { return l.count() >= want })
}

// longestGap returns the longest time between consecutive
// acknowledgements of the writer of ch.
// lastSeq is the highest seq acknowledged in ch.
func (l *ackLoad) lastSeq(ch string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last uint64
	for _, seq := range l.acked[ch] {
		last = max(last, seq)
	}
	return last
}

func (l *ackLoad) longestGap(ch string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var longest time.Duration
	ts := l.times[ch]
	for i := 1; i < len(ts); i++ {
		longest = max(longest, ts[i].Sub(ts[i-1]))
	}
	return longest
}

// verify stops the writers and checks, through n, that every acknowledged
// post is in its channel's history once, with the seq it was acknowledged
// with, that no client_msg_id appears twice, and that seqs are gap-free.
func (l *ackLoad) verify(t *testing.T, n *cluster.Node) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for ch, acked := range l.acked {
		msgs := readAll(t, n, ch)
		byID := map[string]uint64{}
		for i, m := range msgs {
			if want := uint64(i + 1); m.GetSeq() != want {
				t.Errorf("%s via %s: message %d has seq %d, want %d (gap or reorder)", ch, n.ID(), i, m.GetSeq(), want)
			}
			if prev, ok := byID[m.GetClientMsgId()]; ok {
				t.Errorf("%s via %s: client_msg_id %s stored twice, at seq %d and %d", ch, n.ID(), m.GetClientMsgId(), prev, m.GetSeq())
			}
			byID[m.GetClientMsgId()] = m.GetSeq()
		}
		for id, seq := range acked {
			got, ok := byID[id]
			switch {
			case !ok:
				t.Errorf("%s via %s: acknowledged post %s (seq %d) is missing", ch, n.ID(), id, seq)
			case got != seq:
				t.Errorf("%s via %s: post %s has seq %d, want the acknowledged %d", ch, n.ID(), id, got, seq)
			}
		}
		total += len(acked)
	}
	t.Logf("verified %d acknowledged posts in %d channels through %s (%d retried attempts)", total, len(l.acked), n.ID(), l.retries)
}

// readAll returns every message of a channel, oldest first, read
// linearizably through n.
func readAll(t *testing.T, n *cluster.Node, ch string) []*heraldv1.Message {
	t.Helper()
	var out []*heraldv1.Message
	var after uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		h, err := n.History(ctx, clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch,
			AfterSeq: after, OldestFirst: true, Limit: storage.MaxPageSize})
		cancel()
		if err != nil {
			t.Fatalf("history of %s via %s after seq %d: %v", ch, n.ID(), after, err)
		}
		out = append(out, h.GetMessages()...)
		if !h.GetHasMore() || len(h.GetMessages()) == 0 {
			return out
		}
		after = h.GetMessages()[len(h.GetMessages())-1].GetSeq()
	}
}

// replicasPerNode counts, from the ring, the replicas in the partitions'
// configurations on each node, and the partitions each node leads.
func replicasPerNode(r *heraldv1.GetRingResponse) (replicas, leaders map[string]int) {
	replicas, leaders = map[string]int{}, map[string]int{}
	for _, p := range r.GetPartitions() {
		for _, rep := range p.GetReplicas() {
			replicas[rep.GetNodeId()]++
		}
		if p.GetLeader() != "" {
			leaders[p.GetLeader()]++
		}
	}
	return replicas, leaders
}

// checkReplicaSets checks that every partition has want voters on
// distinct nodes among live.
func checkReplicaSets(t *testing.T, r *heraldv1.GetRingResponse, want int, live []string) {
	t.Helper()
	for _, p := range r.GetPartitions() {
		seen := map[string]bool{}
		for _, rep := range p.GetReplicas() {
			id := rep.GetNodeId()
			if seen[id] {
				t.Errorf("partition %d: node %s holds two replicas", p.GetId(), id)
			}
			seen[id] = true
			if !rep.GetVoter() {
				t.Errorf("partition %d: replica on %s is not a voter", p.GetId(), id)
			}
			if !slices.Contains(live, id) {
				t.Errorf("partition %d: replica on %s, want only %v", p.GetId(), id, live)
			}
		}
		if len(seen) != want {
			t.Errorf("partition %d: got %d replicas (%v), want %d", p.GetId(), len(seen), p.GetReplicas(), want)
		}
	}
}

// settledRing polls the ring until it is settled and returns it: right
// after WaitSettled, a leadership hand-over may leave a partition without
// a leader for a moment.
func settledRing(t *testing.T, c *clustertest.Cluster) *heraldv1.GetRingResponse {
	t.Helper()
	return settledRingVia(t, c.Running()[0])
}

// settledRingVia is settledRing as node n sees the ring.
func settledRingVia(t *testing.T, n *cluster.Node) *heraldv1.GetRingResponse {
	t.Helper()
	var r *heraldv1.GetRingResponse
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "ring settled as "+n.ID()+" sees it", func() bool {
		r = ringVia(t, n)
		return clustertest.Settled(r)
	})
	return r
}

// ringVia returns the ring as node n sees it.
func ringVia(t *testing.T, n *cluster.Node) *heraldv1.GetRingResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := n.GetRing(ctx)
	if err != nil {
		t.Fatalf("ring via %s: %v", n.ID(), err)
	}
	return r
}

// preferredLead reports whether every partition is led by its placement's
// first replica.
func preferredLead(r *heraldv1.GetRingResponse) bool {
	for _, p := range r.GetPartitions() {
		if len(p.GetDesiredReplicas()) == 0 || p.GetLeader() != p.GetDesiredReplicas()[0] {
			return false
		}
	}
	return true
}

// ids returns the ids of nodes.
func ids(nodes []*cluster.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID()
	}
	sort.Strings(out)
	return out
}

func TestPlacementThreeNodes(t *testing.T) {
	t.Parallel()
	const partitions = 16
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	t.Logf("settled %v after ready", c.WaitSettled(30*time.Second).Round(time.Millisecond))

	t.Run("spread", func(t *testing.T) {
		// Right after settling, leaders are whoever won the first
		// elections; each hands over to its preferred leader soon after.
		var r *heraldv1.GetRingResponse
		took := clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "every partition led by its preferred leader", func() bool {
			r = c.Ring()
			return clustertest.Settled(r) && preferredLead(r)
		})
		t.Logf("preferred leaders lead %v after settling", took.Round(time.Millisecond))
		checkReplicaSets(t, r, 3, ids(c.Running()))
		_, leaders := replicasPerNode(r)
		for id, k := range leaders {
			if k > partitions/2 {
				t.Errorf("node %s leads %d of %d partitions, want at most %d", id, k, partitions, partitions/2)
			}
		}
		t.Logf("leaders per node: %v", leaders)
	})

	t.Run("drain without a spare node", func(t *testing.T) {
		n := c.Node(1)
		_, err := n.DrainNode(context.Background(), c.Node(0).ID())
		if !errors.Is(err, storage.ErrFailedPrecondition) {
			t.Fatalf("DrainNode(%s) in a 3-node cluster: got %v, want failed precondition", c.Node(0).ID(), err)
		}
		if msg := err.Error(); !strings.Contains(msg, c.Node(0).ID()) {
			t.Errorf("DrainNode error %q does not name the node", msg)
		}
		for _, node := range n.Meta().State().GetNodes() {
			if node.GetState() != heraldv1.Node_STATE_ACTIVE {
				t.Errorf("after the refused drain, node %s is %v, want active", node.GetId(), node.GetState())
			}
		}
	})

	t.Run("unknown node", func(t *testing.T) {
		n := c.Node(0)
		if _, err := n.DrainNode(context.Background(), "n9"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("DrainNode(n9): got %v, want not found", err)
		}
		if _, err := n.RemoveNode(context.Background(), "n9"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("RemoveNode(n9): got %v, want not found", err)
		}
	})
}

func TestPlacementAddNodeUnderLoad(t *testing.T) {
	t.Parallel()
	partitions := placementPartitions()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	c.WaitSettled(30 * time.Second)
	first := c.Running()
	channels := channelPerPartition("add", partitions)
	createChannels(t, first[0], channels)
	load := startLoad(t, func(k int) *cluster.Node { return first[k%len(first)] }, channels)
	load.waitMore(20, 30*time.Second)

	begin := time.Now()
	added := c.AddNode()
	clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, added.ID+" holds a replica", func() bool {
		reps, _ := replicasPerNode(c.Ring())
		return reps[added.ID] > 0
	})
	t.Logf("first replica on %s after %v", added.ID, time.Since(begin).Round(time.Millisecond))
	// Settled can hold between two moves: wait for the share to even out too.
	var reps map[string]int
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, "replicas spread over 4 nodes", func() bool {
		r := c.Ring()
		if !clustertest.Settled(r) {
			return false
		}
		reps, _ = replicasPerNode(r)
		lo, hi := spread(reps, ids(c.Running()))
		return hi-lo <= 1
	})
	t.Logf("settled with %s after %v: replicas per node %v", added.ID, time.Since(begin).Round(time.Millisecond), reps)
	load.waitMore(20, 30*time.Second)
	checkReplicaSets(t, settledRing(t, c), 3, ids(c.Running()))
	load.verify(t, added.Cluster())
}

// spread returns the fewest and most replicas any of nodes holds.
func spread(reps map[string]int, nodes []string) (lo, hi int) {
	lo = -1
	for _, id := range nodes {
		k := reps[id]
		if lo < 0 || k < lo {
			lo = k
		}
		hi = max(hi, k)
	}
	return lo, hi
}

// TestPlacementDrainNode drains the metadata non-voter of four nodes.
func TestPlacementDrainNode(t *testing.T) {
	t.Parallel()
	testDrain(t, false)
}

// TestPlacementDrainMetaVoter drains a metadata voter of four nodes.
func TestPlacementDrainMetaVoter(t *testing.T) {
	t.Parallel()
	testDrain(t, true)
}

// testDrain drains one node of four, a metadata voter or not, while a
// writer posts to a partition it leads, through another node.
func testDrain(t *testing.T, voter bool) {
	partitions := placementPartitions()
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: partitions})
	c.WaitSettled(30 * time.Second)
	servers, err := c.Node(0).Meta().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	var drained *clustertest.Node
	for _, m := range c.Members() {
		i := slices.IndexFunc(servers, func(s raft.Server) bool { return string(s.ID) == m.ID })
		if i >= 0 && (servers[i].Suffrage == raft.Voter) == voter {
			drained = m
		}
	}
	if drained == nil {
		t.Fatalf("no node with metadata voter %v in %v", voter, servers)
	}
	var via *cluster.Node
	for _, n := range c.Running() {
		if n.ID() != drained.ID {
			via = n
			break
		}
	}
	var r *heraldv1.GetRingResponse
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "every partition led by its preferred leader", func() bool {
		r = ringVia(t, via)
		return clustertest.Settled(r) && preferredLead(r)
	})
	led := uint32(partitions)
	for _, p := range r.GetPartitions() {
		if p.GetLeader() == drained.ID {
			led = p.GetId()
			break
		}
	}
	if led == partitions {
		t.Fatalf("%s leads no partition: %v", drained.ID, r.GetPartitions())
	}
	ch := channelIn("drain", led, partitions)
	createChannels(t, via, []string{ch})
	load := startLoad(t, func(int) *cluster.Node { return via }, []string{ch})
	load.waitMore(20, 30*time.Second)
	// A stream through the drained node reads its replica at first, and
	// must go on from the others' once the replica has moved away.
	watch, err := drained.Cluster().Watch(ch, 0)
	if err != nil {
		t.Fatalf("Watch via %s: %v", drained.ID, err)
	}
	defer watch.Close()
	streamed := collectStream(t, watch)

	begin := time.Now()
	node, err := via.DrainNode(context.Background(), drained.ID)
	if err != nil {
		t.Fatalf("DrainNode(%s) via %s: %v", drained.ID, via.ID(), err)
	}
	if node.GetState() != heraldv1.Node_STATE_DRAINING {
		t.Errorf("DrainNode(%s): got state %v, want draining", drained.ID, node.GetState())
	}
	held := func(r *heraldv1.GetRingResponse) (holds, leads int) {
		reps, leaders := replicasPerNode(r)
		return reps[drained.ID], leaders[drained.ID]
	}
	var holdsAtNoLead int
	noLead := clustertest.CheckFor(t, 60*time.Second, 20*time.Millisecond, drained.ID+" leads nothing", func() bool {
		var leads int
		holdsAtNoLead, leads = held(ringVia(t, via))
		return leads == 0
	})
	t.Logf("%s leads nothing after %v, still holding %d replicas", drained.ID, noLead.Round(time.Millisecond), holdsAtNoLead)
	if holdsAtNoLead == 0 {
		t.Errorf("%s held no replica by the time it led nothing: want leaderships moved before replicas", drained.ID)
	}
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, drained.ID+" holds nothing", func() bool {
		r := ringVia(t, via)
		holds, _ := held(r)
		return holds == 0 && clustertest.Settled(r)
	})
	t.Logf("%s holds nothing after %v", drained.ID, time.Since(begin).Round(time.Millisecond))
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, drained.ID+" retired its replicas", func() bool {
		for p := range uint32(partitions) {
			if drained.Cluster().Replica(p) != nil {
				return false
			}
		}
		return true
	})
	t.Logf("%s retired every local replica after %v", drained.ID, time.Since(begin).Round(time.Millisecond))
	load.waitMore(20, 30*time.Second)
	waitStreamed(t, streamed, load.lastSeq(ch), 20*time.Second, "posts acknowledged after the drain, through "+drained.ID)
	t.Logf("the stream through %s reads from %s", drained.ID, cluster.WatchSource(watch))
	checkStreamed(t, streamed.stop(), via, ch)
	drained.Stop()
	load.waitMore(20, 30*time.Second)
	t.Logf("longest gap between acknowledged posts to %s (partition %d, led by %s at first): %v",
		ch, led, drained.ID, load.longestGap(ch).Round(time.Millisecond))
	if gap := load.longestGap(ch); gap > 15*time.Second {
		t.Errorf("writes stalled for %v during the drain, want under 15s", gap)
	}
	var live []string
	for _, n := range c.Running() {
		live = append(live, n.ID())
	}
	checkReplicaSets(t, settledRing(t, c), 3, live)
	load.verify(t, via)
}

func TestPlacementRemoveDeadNode(t *testing.T) {
	t.Parallel()
	partitions := placementPartitions()
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: partitions})
	c.WaitSettled(30 * time.Second)
	// Kill a metadata voter that does not lead the metadata group, and
	// remove it through a node that does not lead it either: the removal
	// must reach the metadata leader, and the dead node must leave the
	// metadata group.
	metaLeader, _ := c.Node(0).Meta().Leader()
	servers, err := c.Node(0).Meta().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, s := range servers {
		if id := string(s.ID); id != metaLeader && s.Suffrage == raft.Voter && victim == "" {
			victim = id
		}
	}
	var dead *clustertest.Node
	var via *cluster.Node
	var live []*cluster.Node
	for _, m := range c.Members() {
		switch {
		case m.ID == victim:
			dead = m
		default:
			live = append(live, m.Cluster())
			if m.ID != metaLeader && via == nil {
				via = m.Cluster()
			}
		}
	}
	if dead == nil || via == nil {
		t.Fatalf("no victim among %v (metadata leader %s)", servers, metaLeader)
	}
	t.Logf("killing %s, removing it through %s; metadata leader %s", dead.ID, via.ID(), metaLeader)
	channels := channelPerPartition("rm", partitions)
	createChannels(t, live[0], channels)
	load := startLoad(t, func(k int) *cluster.Node { return live[k%len(live)] }, channels)
	load.waitMore(20, 30*time.Second)

	dead.Kill()
	begin := time.Now()
	resp, err := via.RemoveNode(context.Background(), dead.ID)
	if err != nil {
		t.Fatalf("RemoveNode(%s) via %s: %v", dead.ID, via.ID(), err)
	}
	if resp.GetNode().GetState() != heraldv1.Node_STATE_REMOVED {
		t.Errorf("RemoveNode(%s): got state %v, want removed", dead.ID, resp.GetNode().GetState())
	}
	if resp.GetWarning() != "" {
		t.Errorf("RemoveNode(%s) with 3 active nodes left for 3 replicas: got warning %q, want none", dead.ID, resp.GetWarning())
	}
	liveIDs := ids(live)
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, "every partition back to 3 live replicas", func() bool {
		r := c.Ring()
		if !clustertest.Settled(r) {
			return false
		}
		for _, p := range r.GetPartitions() {
			if len(p.GetReplicas()) != 3 || slices.Contains(p.GetDesiredReplicas(), dead.ID) {
				return false
			}
		}
		return true
	})
	t.Logf("re-replicated %s's replicas after %v", dead.ID, time.Since(begin).Round(time.Millisecond))
	checkReplicaSets(t, settledRing(t, c), 3, liveIDs)
	clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, dead.ID+" out of the metadata group", func() bool {
		servers, err := live[0].Meta().Configuration()
		if err != nil {
			return false
		}
		return !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == dead.ID })
	})
	load.waitMore(20, 30*time.Second)
	load.stop()
	c.WaitSameDigests(30 * time.Second)
	load.verify(t, via)
}
