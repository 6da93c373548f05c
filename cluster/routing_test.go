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

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage"
)

// TestRoutingManyChannels posts to 200 channels through rotating nodes of
// a 3-node cluster: each channel lands in the partition the ring gives it
// and in no other, on every replica of that partition; its history reads
// the same through every node; and ListChannels pages across the
// partitions in id order through any node.
func TestRoutingManyChannels(t *testing.T) {
	t.Parallel()
	parts := uint32(16)
	if testing.Short() {
		parts = 4
	}
	const channels = 200
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts})
	c.WaitSettled(30 * time.Second)
	nodes := c.Running()
	ctx := t.Context()

	ids := make([]string, channels)
	for i := range ids {
		ids[i] = fmt.Sprintf("route-%03d", i)
	}
	begin := time.Now()
	parallelEach(t, channels, 8, func(i int) error {
		ch := ids[i]
		via := nodes[i%len(nodes)]
		if _, err := clustertest.Write(ctx, via, clustertest.Create(ch)); err != nil {
			return fmt.Errorf("create %s via %s: %w", ch, via.ID(), err)
		}
		via = nodes[(i+1)%len(nodes)]
		res, err := clustertest.Write(ctx, via, clustertest.Post(ch, "hello "+ch, "m-"+ch))
		if err != nil {
			return fmt.Errorf("post to %s via %s: %w", ch, via.ID(), err)
		}
		if got := res.Message.GetSeq(); got != 1 {
			return fmt.Errorf("post to %s via %s: got seq %d, want 1", ch, via.ID(), got)
		}
		return nil
	})
	t.Logf("created and posted to %d channels through %d nodes in %v", channels, len(nodes), since(begin))
	if t.Failed() {
		t.FailNow()
	}

	// Every replica of every partition holds exactly the channels the ring
	// gives the partition.
	took := c.WaitSameDigests(30 * time.Second)
	t.Logf("replicas converged %v after the last write", took)
	want := map[uint32][]string{}
	for _, ch := range ids {
		p := ring.Partition(ch, parts)
		want[p] = append(want[p], ch)
		for _, n := range nodes {
			if got := n.PartitionOf(ch); got != p {
				t.Errorf("%s: PartitionOf(%s): got %d, want %d", n.ID(), ch, got, p)
			}
		}
	}
	if len(want) != int(parts) {
		t.Errorf("%d channels used %d of %d partitions, want all", channels, len(want), parts)
	}
	for p := range parts {
		holders := 0
		for _, n := range nodes {
			r := n.Replica(p)
			if r == nil {
				continue
			}
			holders++
			var got []string
			err := r.DB().View(func(rd *storage.Reader) error {
				chs, _, err := rd.ListChannels(clustertest.Alice, "", storage.MaxPageSize, false)
				for _, ch := range chs {
					got = append(got, ch.GetId())
				}
				return err
			})
			if err != nil {
				t.Fatalf("%s: list partition %d: %v", n.ID(), p, err)
			}
			if strings.Join(got, ",") != strings.Join(want[p], ",") {
				t.Errorf("%s: partition %d holds %v, want %v", n.ID(), p, got, want[p])
			}
			// A channel of another partition is not found here.
			for _, ch := range ids {
				if ring.Partition(ch, parts) == p {
					continue
				}
				err := r.DB().View(func(rd *storage.Reader) error {
					_, _, err := rd.Channel(clustertest.Alice, ch)
					return err
				})
				if !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("%s: channel %s (partition %d) in partition %d: got %v, want not found",
						n.ID(), ch, ring.Partition(ch, parts), p, err)
				}
			}
		}
		if holders != 3 {
			t.Errorf("partition %d: got %d replicas, want 3", p, holders)
		}
	}

	// History through every node.
	begin = time.Now()
	parallelEach(t, channels*len(nodes), 8, func(i int) error {
		ch, n := ids[i/len(nodes)], nodes[i%len(nodes)]
		h, err := n.History(ctx, clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch})
		if err != nil {
			return fmt.Errorf("history of %s via %s: %w", ch, n.ID(), err)
		}
		msgs := h.GetMessages()
		if len(msgs) != 1 || msgs[0].GetText() != "hello "+ch || msgs[0].GetClientMsgId() != "m-"+ch || msgs[0].GetSeq() != 1 {
			return fmt.Errorf("history of %s via %s: got %v, want one message %q with seq 1", ch, n.ID(), msgs, "hello "+ch)
		}
		return nil
	})
	t.Logf("read %d histories in %v", channels*len(nodes), since(begin))

	// ListChannels pages across partitions, in id order, through any node.
	sorted := slices.Clone(ids)
	sort.Strings(sorted)
	for _, n := range nodes {
		for _, limit := range []uint32{7, 64, 1000} {
			got := listAllChannels(t, n, limit)
			if strings.Join(got, ",") != strings.Join(sorted, ",") {
				t.Errorf("ListChannels via %s, limit %d: got %d channels %v, want %d in id order",
					n.ID(), limit, len(got), got, len(sorted))
			}
		}
	}
}

// listAllChannels pages through ListChannels on n and returns the ids.
func listAllChannels(t *testing.T, n *cluster.Node, limit uint32) []string {
	t.Helper()
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("ListChannels via %s, limit %d: more than 1000 pages", n.ID(), limit)
		}
		resp, err := n.ListChannels(t.Context(), clustertest.Alice,
			&heraldv1.ListChannelsRequest{Limit: limit, Cursor: cursor})
		if err != nil {
			t.Fatalf("ListChannels via %s, limit %d, cursor %q: %v", n.ID(), limit, cursor, err)
		}
		if len(resp.GetChannels()) > int(limit) {
			t.Fatalf("ListChannels via %s, limit %d: got a page of %d", n.ID(), limit, len(resp.GetChannels()))
		}
		for _, ch := range resp.GetChannels() {
			got = append(got, ch.GetId())
		}
		if cursor = resp.GetNextCursor(); cursor == "" {
			return got
		}
	}
}

// TestRoutingThroughNodeWithoutReplica uses a 4-node cluster with 8
// partitions of 3 replicas, so some node holds no replica of some
// partition. Through that node, a write and a linearizable read are
// forwarded and work, and Watch streams the channel from a replica on
// another node: backlog, then live events, gap-free while posts go on,
// and on without a gap or a duplicate after the node it streamed from is
// killed.
func TestRoutingThroughNodeWithoutReplica(t *testing.T) {
	t.Parallel()
	const parts = 8
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: parts})
	took := c.WaitSettled(30 * time.Second)
	t.Logf("settled %v after ready", took)
	// Leadership moves to each partition's preferred replica after
	// settling; let it, so that the leader x learns below stays the leader.
	took = clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "every partition led by its preferred replica", func() bool {
		for _, part := range c.Ring().GetPartitions() {
			if part.GetLeader() != part.GetDesiredReplicas()[0] {
				return false
			}
		}
		return true
	})
	t.Logf("preferred leaders lead %v later", took)
	ctx := t.Context()

	// A node and a partition it holds no replica of.
	xi, p := -1, uint32(0)
	for _, part := range c.Ring().GetPartitions() {
		for i, m := range c.Members() {
			if !slices.Contains(part.GetDesiredReplicas(), m.ID) && xi < 0 {
				xi, p = i, part.GetId()
			}
		}
	}
	if xi < 0 {
		t.Fatal("every node holds a replica of every partition; want some node without one")
	}
	x := c.Node(xi)
	if x.Replica(p) != nil {
		t.Fatalf("%s: has a replica of partition %d, which the placement does not give it", x.ID(), p)
	}
	ch := spreadChannels("remote", parts, 1)[p]
	t.Logf("%s holds no replica of partition %d; channel %s", x.ID(), p, ch)

	clustertest.MustCreate(t, x, ch)
	res, err := x.Apply(ctx, clustertest.Post(ch, "first", "first"))
	if err != nil {
		t.Fatalf("post to %s via %s: %v", ch, x.ID(), err)
	}
	if res.Message.GetSeq() != 1 {
		t.Fatalf("post to %s via %s: got seq %d, want 1", ch, x.ID(), res.Message.GetSeq())
	}
	h, err := x.History(ctx, clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch})
	if err != nil {
		t.Fatalf("linearizable history via %s: %v", x.ID(), err)
	}
	if len(h.GetMessages()) != 1 || h.GetMessages()[0].GetText() != "first" {
		t.Fatalf("linearizable history via %s: got %v, want the one message", x.ID(), h.GetMessages())
	}
	if x.Replica(p) != nil {
		t.Fatalf("%s: got a replica of partition %d after serving it, want none", x.ID(), p)
	}

	// Next on a remote stream with nothing to deliver returns when its ctx
	// ends.
	quiet, err := x.Watch(ch, 1)
	if err != nil {
		t.Fatalf("Watch via %s: %v", x.ID(), err)
	}
	nextErr := make(chan error, 1)
	begin := time.Now()
	go func() { // exits when Next returns
		nctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		evs, err := quiet.Next(nctx, 10)
		if err == nil {
			err = fmt.Errorf("got %d events, want none", len(evs))
		}
		nextErr <- err
	}()
	select {
	case err := <-nextErr:
		t.Logf("Next with a 300ms deadline on a quiet remote stream returned after %v: %v", since(begin), err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Next with a 300ms deadline on a quiet remote stream: got %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		quiet.Close() // lets the goroutine exit
		t.Fatalf("Next with a 300ms deadline on a quiet remote stream: still blocked after 10s, want it to return at the deadline")
	}
	quiet.Close()

	// A writer posts through the nodes other than x, so x learns of no
	// leader change from its own writes. Once it has posted some, a remote
	// stream from seq 0 gets the backlog, then live events.
	w := startWriter(t, c, ch, "w", func(n *cluster.Node) bool { return n != x })
	clustertest.CheckFor(t, 20*time.Second, 10*time.Millisecond, "10 posts acknowledged", func() bool {
		return w.lastSeq() >= 10
	})
	s, err := x.Watch(ch, 0)
	if err != nil {
		t.Fatalf("Watch via %s: %v", x.ID(), err)
	}
	defer s.Close()
	col := collectStream(t, s)
	clustertest.CheckFor(t, 20*time.Second, 10*time.Millisecond, "30 events streamed before the kill", func() bool {
		return col.last() >= 30
	})

	// x streams from the node it last routed the partition to: its leader.
	from := c.Ring().GetPartitions()[p].GetLeader()
	if want := c.Ring().GetPartitions()[p].GetDesiredReplicas()[0]; from != want {
		t.Fatalf("partition %d: got leader %s, want %s, which led it when x routed to it", p, from, want)
	}
	fi := memberIndex(c, from)
	before := col.last()
	ackedBefore := w.lastSeq()
	begin = time.Now()
	c.Member(fi).Kill()
	killed := time.Now()
	t.Logf("killed %s (leader of partition %d, the stream's source) in %v; stream at seq %d, writer at %d",
		from, p, killed.Sub(begin).Round(time.Millisecond), before, ackedBefore)

	clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "writes resume after the kill", func() bool {
		return w.lastSeq() >= ackedBefore+20
	})
	t.Logf("20 more posts acknowledged %v after the kill returned", since(killed))
	clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "stream resumes after the kill", func() bool {
		return col.last() >= ackedBefore+20
	})
	t.Logf("stream at seq %d %v after the kill returned", col.last(), since(killed))
	acked := append([]ack{{id: "first", seq: 1}}, w.stop()...)
	// x still forwards writes, to the new leader.
	a, err := postAcked(ctx, func() *cluster.Node { return x }, ch, "via-x-after-kill")
	if err != nil {
		t.Fatalf("post through %s after the kill: %v", x.ID(), err)
	}
	acked = append(acked, a)
	checkHistory(t, fmt.Sprintf("linearizable history of %s via %s after the kill", ch, x.ID()),
		readHistory(t, x, ch, false), acked)
	head := acked[len(acked)-1].seq
	took = clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "stream delivers up to the head", func() bool {
		return col.last() >= head
	})
	t.Logf("stream delivered all %d events %v after the last post", head, took)

	evs := col.stop()
	for i, ev := range evs {
		if want := uint64(i + 1); ev.GetSeq() != want {
			t.Fatalf("event %d: got seq %d, want %d (gap or duplicate)", i, ev.GetSeq(), want)
		}
	}
	if len(evs) != int(head) {
		t.Errorf("stream: got %d events, want %d", len(evs), head)
	}
	for _, a := range acked {
		if a.seq > uint64(len(evs)) {
			t.Errorf("acknowledged %s at seq %d: not streamed (got %d events)", a.id, a.seq, len(evs))
			continue
		}
		if got := evs[a.seq-1].GetMessagePosted().GetMessage().GetClientMsgId(); got != a.id {
			t.Errorf("event %d: got client_msg_id %q, want %q", a.seq, got, a.id)
		}
	}
}

// streamCollector reads a Stream on its own goroutine until stopped.
type streamCollector struct {
	t      *testing.T
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex // guards following
	evs []*heraldv1.Event
	err error
}

// collectStream starts reading s; the goroutine exits when stop is called
// (or at the end of the test) or Next fails.
func collectStream(t *testing.T, s cluster.Stream) *streamCollector {
	ctx, cancel := context.WithCancel(t.Context())
	col := &streamCollector{t: t, cancel: cancel}
	col.wg.Go(func() {
		for {
			evs, err := s.Next(ctx, 64)
			col.mu.Lock()
			col.evs = append(col.evs, evs...)
			if err != nil && ctx.Err() == nil {
				col.err = err
			}
			col.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	t.Cleanup(col.stopReading)
	return col
}

// last returns the seq of the last event received, failing the test if the
// stream failed.
func (col *streamCollector) last() uint64 {
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.err != nil {
		col.t.Fatalf("stream failed after %d events: %v", len(col.evs), col.err)
	}
	if len(col.evs) == 0 {
		return 0
	}
	return col.evs[len(col.evs)-1].GetSeq()
}

func (col *streamCollector) stopReading() {
	col.cancel()
	col.wg.Wait()
}

// stop ends the reader and returns every event received.
func (col *streamCollector) stop() []*heraldv1.Event {
	col.stopReading()
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.err != nil {
		col.t.Fatalf("stream failed after %d events: %v", len(col.evs), col.err)
	}
	return col.evs
}

// spreadChannels returns, for each partition of parts, perPartition
// channel ids (prefix-i) the ring places in it, in partition order.
func spreadChannels(prefix string, parts uint32, perPartition int) []string {
	byPart := make([][]string, parts)
	out := make([]string, 0, int(parts)*perPartition)
	for i, placed := 0, 0; placed < int(parts)*perPartition; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		p := ring.Partition(id, parts)
		if len(byPart[p]) < perPartition {
			byPart[p] = append(byPart[p], id)
			placed++
		}
	}
	for _, ids := range byPart {
		out = append(out, ids...)
	}
	return out
}

// memberIndex returns the index of the cluster member with the given id.
func memberIndex(c *clustertest.Cluster, id string) int {
	for i, m := range c.Members() {
		if m.ID == id {
			return i
		}
	}
	panic(fmt.Sprintf("no member %q", id))
}

// parallelEach runs fn(0..n-1) on workers goroutines, reporting each
// error as a test error.
func parallelEach(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
