package cluster_test

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
)

// TestSubmitInOrderThroughAnyNode pipelines posts to one channel through
// each node of a settled 3-node cluster in turn: the partition's leader
// proposes its own, the others forward theirs over one ordered stream.
// Every post is acknowledged once, with seqs in the order of submission,
// and submitting the same client_msg_ids again through another node
// returns the first results as duplicates.
func TestSubmitInOrderThroughAnyNode(t *testing.T) {
	t.Parallel()
	per := 300
	if testing.Short() {
		per = 100
	}
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	c.WaitSettled(30 * time.Second)
	nodes := c.Running()
	const ch = "pipelined"
	clustertest.MustCreate(t, nodes[0], ch)

	want := uint64(0)
	seqOf := map[string]uint64{}
	for i, n := range nodes {
		ids := make([]string, per)
		pending := make([]*cluster.Pending, per)
		for k := range per {
			ids[k] = fmt.Sprintf("n%d-%03d", i, k)
			pending[k] = n.Submit(t.Context(), clustertest.Post(ch, "hello "+ids[k], ids[k]))
		}
		for k, pd := range pending {
			res, err := pd.Wait()
			if err != nil {
				t.Fatalf("post %s via %s: %v", ids[k], n.ID(), err)
			}
			want++
			if got := res.Message.GetSeq(); got != want || res.Duplicate {
				t.Fatalf("post %s via %s (leader of its partition: %v): got seq %d duplicate %v, want seq %d, new",
					ids[k], n.ID(), n.Replica(n.PartitionOf(ch)).IsLeader(), got, res.Duplicate, want)
			}
			seqOf[ids[k]] = want
		}
	}

	msgs := readHistory(t, nodes[1], ch, false)
	if len(msgs) != len(seqOf) {
		t.Fatalf("history: got %d messages, want %d", len(msgs), len(seqOf))
	}
	for _, m := range msgs {
		if seqOf[m.GetClientMsgId()] != m.GetSeq() {
			t.Fatalf("history: %q at seq %d, acknowledged at %d", m.GetClientMsgId(), m.GetSeq(), seqOf[m.GetClientMsgId()])
		}
	}

	// The same ids again, through the next node: the first results.
	ids := make([]string, 0, len(seqOf))
	for id := range seqOf {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = ids[:per]
	pending := make([]*cluster.Pending, len(ids))
	for k, id := range ids {
		pending[k] = nodes[k%len(nodes)].Submit(t.Context(), clustertest.Post(ch, "again", id))
	}
	for k, pd := range pending {
		res, err := pd.Wait()
		if err != nil {
			t.Fatalf("repeat of %s: %v", ids[k], err)
		}
		if !res.Duplicate || res.Message.GetSeq() != seqOf[ids[k]] || res.Message.GetText() != "hello "+ids[k] {
			t.Fatalf("repeat of %s: got seq %d duplicate %v text %q, want the first result (seq %d)",
				ids[k], res.Message.GetSeq(), res.Duplicate, res.Message.GetText(), seqOf[ids[k]])
		}
	}
}

// TestSubmitThroughFailover pipelines posts through a node that does not
// lead the channel's partition, 32 in flight, while the leader is killed:
// the stream to the dead leader fails and its posts are retried on the new
// leader. Every acknowledged post is in the history once, at the seq it was
// acknowledged with; a post that failed is there at most once; and posts
// are acknowledged after the kill.
func TestSubmitThroughFailover(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	c.WaitSettled(30 * time.Second)
	const ch = "pipelined-failover"
	nodes := c.Running()
	clustertest.MustCreate(t, nodes[0], ch)
	p := nodes[0].PartitionOf(ch)
	leader, via := -1, -1
	for i, n := range nodes {
		if n.Replica(p) != nil && n.Replica(p).IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("partition %d has no leader after settling", p)
	}
	via = (leader + 1) % len(nodes)

	type outcome struct {
		id   string
		seq  uint64
		err  error
		late bool // sent after the kill
	}
	var killed atomic.Bool
	results := make(chan outcome, 1024)
	window := make(chan struct{}, 32)
	total := 600
	if testing.Short() {
		total = 300
	}
	go func() {
		for k := range total {
			window <- struct{}{}
			id := fmt.Sprintf("f-%04d", k)
			late := killed.Load()
			pd := nodes[via].Submit(t.Context(), clustertest.Post(ch, "hello", id))
			go func() {
				res, err := pd.Wait()
				o := outcome{id: id, err: err, late: late}
				if err == nil {
					o.seq = res.Message.GetSeq()
				}
				results <- o
				<-window
			}()
		}
	}()
	acked := map[string]uint64{}
	failed := map[string]error{}
	lateAcks := 0
	for k := range total {
		if k == total/3 {
			c.Member(leader).Kill()
			killed.Store(true)
			t.Logf("killed %s, leader of partition %d, after %d answers", nodes[leader].ID(), p, k)
		}
		o := <-results
		switch {
		case o.err == nil:
			acked[o.id] = o.seq
			if o.late {
				lateAcks++
			}
		case errors.Is(o.err, cluster.ErrIndeterminate), errors.Is(o.err, cluster.ErrNotApplied), errors.Is(o.err, cluster.ErrNoLeader):
			failed[o.id] = o.err
		default:
			t.Errorf("post %s: unexpected error %v", o.id, o.err)
		}
	}
	t.Logf("%d acknowledged (%d sent after the kill), %d failed", len(acked), lateAcks, len(failed))
	if lateAcks == 0 {
		t.Errorf("no post sent after the kill was acknowledged")
	}
	msgs := readHistory(t, nodes[via], ch, false)
	seen := map[string]int{}
	for _, m := range msgs {
		id := m.GetClientMsgId()
		seen[id]++
		if seq, ok := acked[id]; ok && seq != m.GetSeq() {
			t.Errorf("%s: in the history at seq %d, acknowledged at %d", id, m.GetSeq(), seq)
		}
		if _, ok := acked[id]; !ok {
			if _, ok := failed[id]; !ok {
				t.Errorf("%s: in the history but neither acknowledged nor failed", id)
			}
		}
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s: stored %d times, want once", id, k)
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("%s: acknowledged but not in the history", id)
		}
	}
}
