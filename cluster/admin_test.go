package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage"
)

// post posts one message through n and returns its seq.
func post(t *testing.T, n *cluster.Node, ch, id string) uint64 {
	t.Helper()
	return clustertest.MustPost(t, n, ch, "text of "+id, id)
}

// holdFor checks fn every step for d and fails the test the first time it
// is false: a state that must last, not one being waited for.
func holdFor(t *testing.T, d, step time.Duration, what string, fn func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(step) {
		if !fn() {
			t.Fatalf("%s: stopped holding", what)
		}
	}
}

// placedFirst returns partition p's preferred leader in n's metadata.
func placedFirst(n *cluster.Node, p uint32) string {
	for _, pl := range n.Meta().State().GetPlacements() {
		if pl.GetPartition() == p && len(pl.GetReplicas()) > 0 {
			return pl.GetReplicas()[0]
		}
	}
	return ""
}

func TestAdminOperations(t *testing.T) {
	t.Parallel()
	const partitions = 4
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: partitions})
	nodes := c.Running()
	channels := channelPerPartition("adm", partitions)
	createChannels(t, nodes[0], channels)
	for i, ch := range channels {
		for k := range 5 {
			post(t, nodes[(i+k)%len(nodes)], ch, fmt.Sprintf("%s-%d", ch, k))
		}
	}
	took := clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "settled, preferred leaders leading", func() bool {
		r := c.Ring()
		return clustertest.Settled(r) && preferredLead(r)
	})
	t.Logf("settled with preferred leaders %v after the writes", took.Round(time.Millisecond))
	c.WaitSameDigests(30 * time.Second)
	ctx := context.Background()

	t.Run("ring", func(t *testing.T) {
		r := ringVia(t, nodes[1])
		if r.GetPartitionCount() != partitions || len(r.GetPartitions()) != partitions {
			t.Fatalf("ring: got %d partitions (count %d), want %d", len(r.GetPartitions()), r.GetPartitionCount(), partitions)
		}
		if r.GetPlacementEpoch() == 0 {
			t.Errorf("ring: placement epoch 0, want > 0")
		}
		var next uint64
		for i, p := range r.GetPartitions() {
			first, last := ring.Range(uint32(i), partitions)
			if p.GetId() != uint32(i) || p.GetFirstToken() != first || p.GetLastToken() != last {
				t.Errorf("partition %d: got id %d tokens [%d, %d], want id %d [%d, %d]",
					i, p.GetId(), p.GetFirstToken(), p.GetLastToken(), i, first, last)
			}
			if p.GetFirstToken() != next {
				t.Errorf("partition %d: first token %d, want %d (right after the previous range)", i, p.GetFirstToken(), next)
			}
			next = p.GetLastToken() + 1
			if p.GetHealth() != heraldv1.Partition_HEALTH_OK {
				t.Errorf("partition %d: health %v, want ok", i, p.GetHealth())
			}
			if p.GetAppliedIndex() == 0 || p.GetCommitIndex() < p.GetAppliedIndex() {
				t.Errorf("partition %d: commit %d applied %d, want 0 < applied <= commit", i, p.GetCommitIndex(), p.GetAppliedIndex())
			}
			if len(p.GetReplicas()) != 3 || len(p.GetDesiredReplicas()) != 3 {
				t.Errorf("partition %d: got %d replicas, %d desired, want 3 and 3", i, len(p.GetReplicas()), len(p.GetDesiredReplicas()))
			}
			leaders := 0
			for _, rep := range p.GetReplicas() {
				if rep.GetState() == raft.Leader.String() {
					leaders++
					if rep.GetNodeId() != p.GetLeader() {
						t.Errorf("partition %d: replica on %s is leader, ring says %s", i, rep.GetNodeId(), p.GetLeader())
					}
				} else if rep.GetState() != raft.Follower.String() {
					t.Errorf("partition %d: replica on %s in state %q, want Leader or Follower", i, rep.GetNodeId(), rep.GetState())
				}
				if !rep.GetVoter() || rep.GetAppliedIndex() == 0 || rep.GetCommitIndex() == 0 {
					t.Errorf("partition %d: replica %v, want a voter with commit and applied indexes", i, rep)
				}
			}
			if leaders != 1 {
				t.Errorf("partition %d: %d replicas lead, want 1", i, leaders)
			}
		}
		if next != 0 { // the last range ends at MaxUint64, so next wrapped
			t.Errorf("ranges end at %d, want %d", next-1, uint64(math.MaxUint64))
		}
	})

	t.Run("lookup", func(t *testing.T) {
		for i := range 20 {
			ch := fmt.Sprintf("look-%d", i)
			resp, err := nodes[i%len(nodes)].LookupChannel(ctx, ch)
			if err != nil {
				t.Fatalf("LookupChannel(%s): %v", ch, err)
			}
			p := resp.GetPartition()
			if want := ring.Partition(ch, partitions); p.GetId() != want {
				t.Errorf("LookupChannel(%s): got partition %d, want %d", ch, p.GetId(), want)
			}
			if tok := resp.GetToken(); tok != ring.Hash(ch) || tok < p.GetFirstToken() || tok > p.GetLastToken() {
				t.Errorf("LookupChannel(%s): token %d, want %d within [%d, %d]", ch, tok, ring.Hash(ch), p.GetFirstToken(), p.GetLastToken())
			}
			if p.GetLeader() == "" || len(p.GetReplicas()) != 3 {
				t.Errorf("LookupChannel(%s): leader %q, %d replicas, want a leader and 3", ch, p.GetLeader(), len(p.GetReplicas()))
			}
		}
		if _, err := nodes[0].LookupChannel(ctx, "Bad Id!"); !errors.Is(err, storage.ErrInvalidArgument) {
			t.Errorf("LookupChannel(bad id): got %v, want invalid argument", err)
		}
	})

	t.Run("nodes", func(t *testing.T) {
		// Counts come from a second round of status calls: retry until
		// they match the ring's (a leadership may move in between).
		var last string
		clustertest.CheckFor(t, 10*time.Second, 50*time.Millisecond, "ListNodes agrees with the ring", func() bool {
			reps, leaders := replicasPerNode(ringVia(t, nodes[2]))
			resp, err := nodes[2].ListNodes(ctx)
			if err != nil {
				t.Fatalf("ListNodes: %v", err)
			}
			var diffs []string
			if len(resp.GetNodes()) != len(nodes) || resp.GetMetaLeader() == "" {
				diffs = append(diffs, fmt.Sprintf("%d nodes, metadata leader %q", len(resp.GetNodes()), resp.GetMetaLeader()))
			}
			for _, node := range resp.GetNodes() {
				id := node.GetId()
				if int(node.GetReplicas()) != reps[id] || int(node.GetLeaders()) != leaders[id] ||
					!node.GetReachable() || node.GetState() != heraldv1.Node_STATE_ACTIVE {
					diffs = append(diffs, fmt.Sprintf("%s: %d replicas, %d leaders, reachable %v, %v; ring: %d, %d",
						id, node.GetReplicas(), node.GetLeaders(), node.GetReachable(), node.GetState(), reps[id], leaders[id]))
				}
			}
			last = strings.Join(diffs, "; ")
			return last == ""
		})
		if last != "" {
			t.Errorf("ListNodes: %s", last)
		}
	})

	t.Run("digests", func(t *testing.T) {
		r := ringVia(t, nodes[0])
		for _, p := range r.GetPartitions() {
			var first *heraldv1.GetReplicaDigestResponse
			for i, rep := range p.GetReplicas() {
				via := nodes[i%len(nodes)]
				d, err := via.ReplicaDigest(ctx, p.GetId(), rep.GetNodeId())
				if err != nil {
					t.Fatalf("ReplicaDigest(%d, %s) via %s: %v", p.GetId(), rep.GetNodeId(), via.ID(), err)
				}
				if d.GetAppliedIndex() == 0 || len(d.GetSha256()) != 32 {
					t.Errorf("ReplicaDigest(%d, %s): applied %d, %d-byte digest", p.GetId(), rep.GetNodeId(), d.GetAppliedIndex(), len(d.GetSha256()))
				}
				if first == nil {
					first = d
				} else if d.GetAppliedIndex() != first.GetAppliedIndex() || !bytes.Equal(d.GetSha256(), first.GetSha256()) {
					t.Errorf("partition %d: %s at %d %x, %s at %d %x: want equal", p.GetId(),
						first.GetNodeId(), first.GetAppliedIndex(), first.GetSha256()[:8], d.GetNodeId(), d.GetAppliedIndex(), d.GetSha256()[:8])
				}
			}
			var outsider string
			for _, n := range nodes {
				if !slices.ContainsFunc(p.GetReplicas(), func(r *heraldv1.Replica) bool { return r.GetNodeId() == n.ID() }) {
					outsider = n.ID()
				}
			}
			if _, err := nodes[0].ReplicaDigest(ctx, p.GetId(), outsider); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("ReplicaDigest(%d, %s), which holds none: got %v, want not found", p.GetId(), outsider, err)
			}
		}
		if _, err := nodes[0].ReplicaDigest(ctx, 0, "n9"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("ReplicaDigest(0, n9): got %v, want not found", err)
		}
	})

	t.Run("rebalance settled", func(t *testing.T) {
		moves, err := nodes[3].Rebalance(ctx)
		if err != nil || moves != 0 {
			t.Errorf("Rebalance on a settled cluster: got %d moves, %v; want 0, nil", moves, err)
		}
	})

	t.Run("transfer leadership", func(t *testing.T) {
		r := settledRingVia(t, nodes[0])
		const p = 1
		part := r.GetPartitions()[p]
		old, to := part.GetLeader(), ""
		for _, id := range part.GetDesiredReplicas() {
			if id != old {
				to = id
				break
			}
		}
		var via, outsider *cluster.Node // via holds no replica of p
		for _, n := range nodes {
			if !slices.Contains(part.GetDesiredReplicas(), n.ID()) {
				via, outsider = n, n
			}
		}
		begin := time.Now()
		got, err := via.TransferLeadership(ctx, p, to)
		if err != nil {
			t.Fatalf("TransferLeadership(%d, %s) via %s: %v", p, to, via.ID(), err)
		}
		t.Logf("partition %d: leadership moved from %s to %s in %v", p, old, to, time.Since(begin).Round(time.Millisecond))
		if got.GetLeader() != to {
			t.Errorf("TransferLeadership(%d, %s): got leader %q, want %s", p, to, got.GetLeader(), to)
		}
		clustertest.CheckFor(t, 10*time.Second, 20*time.Millisecond, "every node prefers "+to, func() bool {
			for _, n := range nodes {
				if placedFirst(n, p) != to {
					return false
				}
			}
			return true
		})
		// It stays: the planner leaves the preferred leader there (an
		// election under a loaded machine may move leadership for a moment;
		// the reconciler hands it back to the preferred leader).
		holdFor(t, 2*time.Second, 50*time.Millisecond, fmt.Sprintf("%s preferred for partition %d", to, p), func() bool {
			if pref := placedFirst(nodes[0], p); pref != to {
				t.Logf("partition %d: preferred %q, want %s", p, pref, to)
				return false
			}
			return true
		})
		clustertest.CheckFor(t, 10*time.Second, 20*time.Millisecond, to+" leads partition 1", func() bool {
			return ringVia(t, nodes[0]).GetPartitions()[p].GetLeader() == to
		})

		// Other leaderships moved with it, so balancing has nothing to undo.
		if moves, err := nodes[2].Rebalance(ctx); err != nil || moves != 0 {
			t.Errorf("Rebalance after the transfer: got %d moves, %v; want 0, nil", moves, err)
		}
		_, leaders := replicasPerNode(ringVia(t, nodes[0]))
		t.Logf("leaders per node after the transfer: %v", leaders)

		_, err = nodes[0].TransferLeadership(ctx, p, outsider.ID())
		if !errors.Is(err, storage.ErrFailedPrecondition) {
			t.Errorf("TransferLeadership(%d, %s), which holds no replica: got %v, want failed precondition", p, outsider.ID(), err)
		}
		if _, err := nodes[0].TransferLeadership(ctx, partitions, to); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("TransferLeadership(%d, %s), no such partition: got %v, want not found", partitions, to, err)
		}
	})
}

// generationOf reads the placement generation a node's replica directory
// of partition p was made for ("" if it has none).
func generationOf(t *testing.T, m *clustertest.Node, p uint32) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir, "partitions", fmt.Sprintf("%03d", p), "generation"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestAdminRemoveWarnsOfFewerReplicas removes a dead node from a cluster of
// three with three replicas a partition: the removal goes ahead (it is what
// a dead node needs), and its answer says that partitions keep two
// replicas until another node joins, which is what the ring then shows.
func TestAdminRemoveWarnsOfFewerReplicas(t *testing.T) {
	t.Parallel()
	const partitions = 2
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	c.WaitSettled(30 * time.Second)
	// The dead node is not the metadata leader, so that the removal need
	// not wait for an election.
	metaLeader, _ := c.Node(0).Meta().Leader()
	var dead *clustertest.Node
	var via *cluster.Node
	for _, m := range c.Members() {
		switch {
		case m.ID != metaLeader && dead == nil:
			dead = m
		case via == nil || m.ID == metaLeader:
			via = m.Cluster()
		}
	}
	t.Logf("killing %s, removing it through %s; metadata leader %s", dead.ID, via.ID(), metaLeader)
	dead.Kill()
	resp, err := via.RemoveNode(context.Background(), dead.ID)
	if err != nil {
		t.Fatalf("RemoveNode(%s) via %s: %v", dead.ID, via.ID(), err)
	}
	t.Logf("RemoveNode(%s): state %v, warning %q", dead.ID, resp.GetNode().GetState(), resp.GetWarning())
	if resp.GetNode().GetState() != heraldv1.Node_STATE_REMOVED {
		t.Errorf("RemoveNode(%s): got state %v, want removed", dead.ID, resp.GetNode().GetState())
	}
	for _, want := range []string{"2 active nodes", "2 replicas", "not 3", "until another node joins"} {
		if !strings.Contains(resp.GetWarning(), want) {
			t.Errorf("RemoveNode(%s) leaving 2 active nodes for 3 replicas: warning %q lacks %q", dead.ID, resp.GetWarning(), want)
		}
	}
	replicasEach := func(k int) func() bool {
		return func() bool {
			r := c.Ring()
			if !clustertest.Settled(r) {
				return false
			}
			for _, p := range r.GetPartitions() {
				if len(p.GetReplicas()) != k || slices.Contains(p.GetDesiredReplicas(), dead.ID) {
					return false
				}
			}
			return true
		}
	}
	took := clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, "every partition settled on 2 replicas", replicasEach(2))
	t.Logf("settled on 2 replicas a partition %v after the removal", took.Round(time.Millisecond))
	added := c.AddNode()
	took = clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, "every partition back to 3 replicas", replicasEach(3))
	t.Logf("back to 3 replicas a partition %v after %s joined", took.Round(time.Millisecond), added.ID)
}

// TestAdminRecoverPartition loses the quorum of one partition and
// recovers it from the one replica left. RecoverPartition makes that
// replica a group of one: any write that the lost majority acknowledged but
// the survivor had not received would be lost. Here the survivor has every
// acknowledged write (the replicas' digests are equal before the kill), so
// nothing is lost.
//
// Four nodes, not three: the metadata group (voters n1..n3) must keep its
// quorum to record the recovered placement, so the two nodes killed are
// the metadata non-voter and one voter.
func TestAdminRecoverPartition(t *testing.T) {
	t.Parallel()
	const partitions = 4
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: partitions})
	c.WaitSettled(30 * time.Second)
	voter := metaVoters(t, c.Node(0))
	// Pick a partition with a metadata non-voter among its replicas; kill
	// that one and the replica after it, keeping the third.
	r := settledRing(t, c)
	var p uint32
	var killed []*clustertest.Node
	var survivor, other *clustertest.Node
	for _, part := range r.GetPartitions() {
		reps := part.GetDesiredReplicas()
		i := slices.IndexFunc(reps, func(id string) bool { return !voter[id] })
		if i < 0 {
			continue
		}
		p = part.GetId()
		kill := []string{reps[i], reps[(i+1)%3]}
		for _, m := range c.Members() {
			switch {
			case slices.Contains(kill, m.ID):
				killed = append(killed, m)
			case m.ID == reps[(i+2)%3]:
				survivor = m
			default:
				other = m
			}
		}
		break
	}
	if survivor == nil || len(killed) != 2 || other == nil {
		t.Fatalf("no partition with a metadata non-voter replica in %v (voters %v)", r.GetPartitions(), voter)
	}
	t.Logf("partition %d: killing %s and %s, recovering from %s", p, killed[0].ID, killed[1].ID, survivor.ID)
	s := survivor.Cluster()
	ch := channelIn("rec", p, partitions)
	createChannels(t, s, []string{ch})
	const before = 10
	for k := range before {
		post(t, other.Cluster(), ch, fmt.Sprintf("before-%d", k))
	}
	c.WaitSameDigests(30 * time.Second)

	for _, m := range killed {
		m.Kill()
	}
	lost := clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, fmt.Sprintf("partition %d without quorum", p), func() bool {
		return ringVia(t, s).GetPartitions()[p].GetHealth() == heraldv1.Partition_HEALTH_NO_QUORUM
	})
	t.Logf("ring shows partition %d without quorum %v after the kill", p, lost.Round(time.Millisecond))
	// A survivor that still believes it leads would append the post, which
	// could commit were the others to return: indeterminate. Once its lease
	// has run out it appends nothing.
	clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, s.ID()+" stops leading partition without quorum", func() bool {
		return !s.Replica(p).IsLeader()
	})
	// Through the survivor, whose replica cannot lead and whose peers are
	// down, the write can only be relayed through the other node; through
	// the other node it is forwarded to the survivor. Either way an
	// attempt that the deadline cuts short is reported as indeterminate:
	// it must fail all the same (and, below, be absent after the
	// recovery).
	for _, via := range []*cluster.Node{s, other.Cluster()} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		begin := time.Now()
		_, err := via.Apply(ctx, clustertest.Post(ch, "no quorum", "during-"+via.ID()))
		cancel()
		notApplied := errors.Is(err, cluster.ErrNotApplied) || errors.Is(err, cluster.ErrNoLeader)
		switch {
		case err == nil:
			t.Errorf("post via %s without quorum: acknowledged, want not applied, no leader or indeterminate", via.ID())
		case !notApplied && !errors.Is(err, cluster.ErrIndeterminate):
			t.Errorf("post via %s without quorum: got %v, want not applied, no leader or indeterminate", via.ID(), err)
		}
		t.Logf("post via %s without quorum failed after %v: %v", via.ID(), time.Since(begin).Round(time.Millisecond), err)
	}
	// What the survivor had, read from its state file.
	had := localHistory(t, s, p, ch)

	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	part, err := s.RecoverPartition(ctx, p, survivor.ID)
	cancel()
	if err != nil {
		t.Fatalf("RecoverPartition(%d, %s): %v", p, survivor.ID, err)
	}
	t.Logf("recovered partition %d in %v", p, time.Since(begin).Round(time.Millisecond))
	if part.GetLeader() != survivor.ID {
		t.Errorf("RecoverPartition: got leader %q, want %s", part.GetLeader(), survivor.ID)
	}
	seq := post(t, other.Cluster(), ch, "after-0")
	if want := uint64(len(had) + 1); seq != want {
		t.Errorf("first post after recovery: got seq %d, want %d", seq, want)
	}
	msgs := readAll(t, s, ch)
	if len(msgs) != len(had)+1 {
		t.Errorf("after recovery: got %d messages, want the survivor's %d and one more", len(msgs), len(had))
	}
	for i, m := range had {
		if i >= len(msgs) || msgs[i].GetClientMsgId() != m.GetClientMsgId() || msgs[i].GetSeq() != m.GetSeq() {
			t.Errorf("message %d: got %v, want the survivor's %v", i, msgs[min(i, len(msgs)-1)], m)
		}
	}
	if len(had) != before {
		t.Errorf("survivor had %d messages, want the %d acknowledged", len(had), before)
	}

	// The killed nodes come back: their replicas of p belong to the old
	// generation and are discarded; the placement re-replicates p.
	begin = time.Now()
	for _, m := range killed {
		m.Restart()
	}
	clustertest.CheckFor(t, 60*time.Second, 50*time.Millisecond, fmt.Sprintf("partition %d back to 3 replicas", p), func() bool {
		r := c.Ring()
		return clustertest.Settled(r) && len(r.GetPartitions()[p].GetReplicas()) == 3
	})
	t.Logf("partition %d re-replicated %v after the restarts", p, time.Since(begin).Round(time.Millisecond))
	gen := generationOf(t, survivor, p)
	if gen == "" || gen == "0" {
		t.Errorf("survivor's replica of %d: generation %q, want > 0", p, gen)
	}
	for _, m := range c.Members() {
		if got := generationOf(t, m, p); m.Cluster().Replica(p) != nil && got != gen {
			t.Errorf("%s's replica of partition %d: generation %q, want %q", m.ID, p, got, gen)
		}
	}
	post(t, killed[0].Cluster(), ch, "after-1")
	c.WaitSameDigests(30 * time.Second)
	for _, m := range c.Members() {
		if got := len(readAll(t, m.Cluster(), ch)); got != len(had)+2 {
			t.Errorf("history of %s via %s: got %d messages, want %d", ch, m.ID, got, len(had)+2)
		}
	}
}

// localHistory reads a channel's messages from node n's replica of p
// directly, without Raft.
func localHistory(t *testing.T, n *cluster.Node, p uint32, ch string) []*heraldv1.Message {
	t.Helper()
	r := n.Replica(p)
	if r == nil {
		t.Fatalf("%s holds no replica of partition %d", n.ID(), p)
	}
	var out []*heraldv1.Message
	err := r.DB().View(func(rd *storage.Reader) error {
		h, err := rd.History(clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: ch, OldestFirst: true, Limit: storage.MaxPageSize})
		out = h.GetMessages()
		return err
	})
	if err != nil {
		t.Fatalf("local history of %s on %s: %v", ch, n.ID(), err)
	}
	return out
}

// TestAdminRecoverPartitionNeedsMetadata: with three nodes, losing two
// also loses the metadata group's quorum, so the recovered placement
// cannot be recorded. RecoverPartition must then fail without touching the
// survivor's replica; when the nodes come back the partition carries on
// with everything it had.
func TestAdminRecoverPartitionNeedsMetadata(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	c.WaitSettled(30 * time.Second)
	s := c.Node(0)
	ch := channelIn("recm", 0, 2)
	createChannels(t, s, []string{ch})
	for k := range 5 {
		post(t, s, ch, fmt.Sprintf("m-%d", k))
	}
	c.WaitSameDigests(30 * time.Second)
	killed := c.Members()[1:]
	for _, m := range killed {
		m.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	begin := time.Now()
	_, err := s.RecoverPartition(ctx, 0, s.ID())
	cancel()
	t.Logf("RecoverPartition without a metadata quorum failed after %v: %v", time.Since(begin).Round(time.Millisecond), err)
	if err == nil {
		t.Fatalf("RecoverPartition without a metadata quorum: got nil error, want a failure")
	}
	if gen := generationOf(t, c.Member(0), 0); gen != "0" {
		t.Errorf("survivor's replica after the refused recovery: generation %q, want 0 (untouched)", gen)
	}
	for _, m := range killed {
		m.Restart()
	}
	c.WaitReady(30 * time.Second)
	if seq := post(t, c.Node(1), ch, "m-5"); seq != 6 {
		t.Errorf("post after the restarts: got seq %d, want 6", seq)
	}
	c.WaitSameDigests(30 * time.Second)
	if got := len(readAll(t, c.Node(2), ch)); got != 6 {
		t.Errorf("history of %s: got %d messages, want 6", ch, got)
	}
}

// saveAll saves every partition of the cluster through rotating nodes.
func saveAll(t *testing.T, c *clustertest.Cluster, partitions uint32) [][]byte {
	t.Helper()
	nodes := c.Running()
	out := make([][]byte, partitions)
	for p := range partitions {
		var buf bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		index, err := nodes[int(p)%len(nodes)].SaveSnapshot(ctx, p, &buf)
		cancel()
		if err != nil {
			t.Fatalf("SaveSnapshot(%d): %v", p, err)
		}
		if index == 0 || buf.Len() == 0 {
			t.Fatalf("SaveSnapshot(%d): index %d, %d bytes", p, index, buf.Len())
		}
		out[p] = buf.Bytes()
	}
	return out
}

func TestAdminSnapshotSaveRestore(t *testing.T) {
	t.Parallel()
	const partitions uint32 = 4
	perChannel := 20
	if testing.Short() {
		perChannel = 5
	}
	src := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	dst := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	srcNodes, dstNodes := src.Running(), dst.Running()
	var channels []string
	for i := range 3 {
		channels = append(channels, channelPerPartition(fmt.Sprintf("snap%d", i), partitions)...)
	}
	createChannels(t, srcNodes[0], channels)
	for i, ch := range channels {
		for k := range perChannel {
			post(t, srcNodes[(i+k)%3], ch, fmt.Sprintf("%s-%d", ch, k))
		}
	}
	want := map[string][]*heraldv1.Message{}
	for _, ch := range channels {
		want[ch] = readAll(t, srcNodes[1], ch)
	}
	begin := time.Now()
	saved := saveAll(t, src, partitions)
	t.Logf("saved %d partitions in %v", partitions, time.Since(begin).Round(time.Millisecond))

	ctx := context.Background()
	begin = time.Now()
	for p := range partitions {
		via := dstNodes[int(p+1)%3]
		if _, err := via.RestoreSnapshot(ctx, p, bytes.NewReader(saved[p])); err != nil {
			t.Fatalf("RestoreSnapshot(%d) via %s: %v", p, via.ID(), err)
		}
	}
	t.Logf("restored %d partitions in %v", partitions, time.Since(begin).Round(time.Millisecond))
	checkRestored := func(t *testing.T, extra int) {
		t.Helper()
		dst.WaitSameDigests(30 * time.Second)
		for _, ch := range channels {
			for _, n := range dstNodes {
				got := readAll(t, n, ch)
				if len(got) != len(want[ch])+extra {
					t.Errorf("%s via %s: got %d messages, want %d", ch, n.ID(), len(got), len(want[ch])+extra)
					continue
				}
				for i, m := range want[ch] {
					if g := got[i]; g.GetSeq() != m.GetSeq() || g.GetText() != m.GetText() || g.GetClientMsgId() != m.GetClientMsgId() {
						t.Errorf("%s via %s, message %d: got %d %q %q, want %d %q %q", ch, n.ID(), i,
							g.GetSeq(), g.GetText(), g.GetClientMsgId(), m.GetSeq(), m.GetText(), m.GetClientMsgId())
					}
				}
			}
		}
	}
	checkRestored(t, 0)
	for i, ch := range channels {
		if seq := post(t, dstNodes[i%3], ch, ch+"-new"); seq != uint64(perChannel+1) {
			t.Errorf("post to %s after the restore: got seq %d, want %d", ch, seq, perChannel+1)
		}
	}
	// A retried post from before the snapshot is still recognised.
	res, err := dstNodes[2].Apply(ctx, clustertest.Post(channels[0], "again", channels[0]+"-0"))
	if err != nil || !res.Duplicate || res.Message.GetSeq() != 1 {
		t.Errorf("retry of a saved post: got %v, %v; want the duplicate with seq 1", res, err)
	}
	checkRestored(t, 1)

	t.Run("corrupt snapshot", func(t *testing.T) {
		const p = 0
		beforeDigests := dst.Digests(p)
		bad := bytes.Clone(saved[p])
		bad[len(bad)/2] ^= 0xff
		for name, data := range map[string][]byte{"flipped byte": bad, "truncated": saved[p][:len(saved[p])/2], "empty": nil} {
			_, err := dstNodes[0].RestoreSnapshot(ctx, p, bytes.NewReader(data))
			if !errors.Is(err, storage.ErrInvalidArgument) {
				t.Errorf("RestoreSnapshot(%s): got %v, want invalid argument", name, err)
			}
		}
		if after := dst.Digests(p); !equalDigests(beforeDigests, after) {
			t.Errorf("a refused restore changed partition %d: digests %v, then %v", p, beforeDigests, after)
		}
	})

	t.Run("restore replaces newer state", func(t *testing.T) {
		// RestoreSnapshot replaces whatever the partition holds, also
		// state newer than the snapshot's (the posts made above).
		const p = 1
		if _, err := dstNodes[2].RestoreSnapshot(ctx, p, bytes.NewReader(saved[p])); err != nil {
			t.Fatalf("RestoreSnapshot(%d) again: %v", p, err)
		}
		dst.WaitSameDigests(30 * time.Second)
		for _, ch := range channels {
			if ring.Partition(ch, partitions) != p {
				continue
			}
			if got := readAll(t, dstNodes[0], ch); len(got) != len(want[ch]) {
				t.Errorf("%s after restoring again: got %d messages, want the snapshot's %d", ch, len(got), len(want[ch]))
			}
			if seq := post(t, dstNodes[1], ch, ch+"-newer"); seq != uint64(perChannel+1) {
				t.Errorf("post to %s after restoring again: got seq %d, want %d", ch, seq, perChannel+1)
			}
		}
	})

	if _, err := dstNodes[0].RestoreSnapshot(ctx, partitions, bytes.NewReader(saved[0])); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("RestoreSnapshot(%d), no such partition: got %v, want not found", partitions, err)
	}
}

func equalDigests(a, b map[string]clustertest.Digest) bool {
	if len(a) != len(b) {
		return false
	}
	for id, d := range a {
		if b[id] != d {
			return false
		}
	}
	return true
}

// TestCompactLog: each replica of a partition takes a Raft snapshot on
// request, at least as far as the posts it has applied; asking again with
// nothing new is not an error; a node without a replica says so.
func TestCompactLog(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2})
	c.WaitSettled(30 * time.Second)
	nodes := c.Running()
	const ch = "compacted"
	clustertest.MustCreate(t, nodes[0], ch)
	for i := range 20 {
		clustertest.MustPost(t, nodes[i%3], ch, "hello", fmt.Sprint("c-", i))
	}
	p := nodes[0].PartitionOf(ch)
	c.WaitSameDigests(30 * time.Second)
	for _, n := range nodes {
		applied := n.Replica(p).Status().AppliedIndex
		for range 2 {
			resp, err := nodes[0].CompactLog(t.Context(), p, n.ID())
			if err != nil {
				t.Fatalf("CompactLog(%d, %s): %v", p, n.ID(), err)
			}
			if resp.GetSnapshotIndex() < applied {
				t.Fatalf("CompactLog(%d, %s): snapshot index %d, want at least the applied index %d", p, n.ID(), resp.GetSnapshotIndex(), applied)
			}
		}
	}
	if _, err := nodes[0].CompactLog(t.Context(), 7, nodes[1].ID()); err == nil || !strings.Contains(err.Error(), "no replica of partition 7") {
		t.Fatalf("CompactLog of a partition the node does not hold: got %v, want it to say so", err)
	}
}
