package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
)

// faultRequestTimeout is the request timeout of the fault tests' nodes.
//
// A request that meets a connection that stopped answering spends up to
// two seconds finding out (an HTTP/2 ping and its timeout) before it goes
// another way; the request timeout must leave room for that.
const faultRequestTimeout = 3 * time.Second

// faultWindow is how long the fault tests keep a fault in place.
func faultWindow() time.Duration {
	if testing.Short() {
		return 2 * faultRequestTimeout
	}
	return 5 * faultRequestTimeout
}

// slack is what a request may take past the request timeout: the answer's
// way back, and a loaded test machine.
const slack = 3 * time.Second

// attemptLog records single post attempts, each with a generous deadline
// of its own as a client would set it, and what they answered.
type attemptLog struct {
	mu       sync.Mutex // guards following
	ok, fail int
	slowest  time.Duration
	slow     []string // attempts slower than the request timeout allows
	firstOK  time.Time
}

// post makes one attempt through n with a 30 s client deadline.
func (l *attemptLog) post(n *cluster.Node, ch, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := n.Apply(ctx, clustertest.Post(ch, "text "+id, id))
	took := time.Since(begin)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowest = max(l.slowest, took)
	if took > faultRequestTimeout+slack {
		l.slow = append(l.slow, fmt.Sprintf("%s via %s: %v after %v", id, n.ID(), err, took.Round(time.Millisecond)))
	}
	if err == nil {
		l.ok++
		if l.firstOK.IsZero() {
			l.firstOK = time.Now()
		}
	} else {
		l.fail++
	}
	return err
}

func (l *attemptLog) check(t *testing.T, what string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%s: %d attempts succeeded, %d failed; slowest %v", what, l.ok, l.fail, l.slowest.Round(time.Millisecond))
	for _, s := range l.slow {
		t.Errorf("%s: attempt %s, want an answer within the request timeout %v (+%v)", what, s, faultRequestTimeout, slack)
	}
}

// leaderOf returns the node leading partition p and the other running
// nodes.
func leaderAndOthers(t *testing.T, c *clustertest.Cluster, p uint32) (*clustertest.Node, []*clustertest.Node) {
	t.Helper()
	var leader *clustertest.Node
	var others []*clustertest.Node
	for _, m := range c.Members() {
		if n := m.Cluster(); n != nil && n.Replica(p) != nil && n.Replica(p).IsLeader() {
			leader = m
		} else if n != nil {
			others = append(others, m)
		}
	}
	if leader == nil {
		t.Fatalf("partition %d has no leader", p)
	}
	return leader, others
}

// faultCluster starts 3 nodes with one partition and proxies on every link,
// creates channel ch, and returns the cluster, ch, the partition's leader
// and the other nodes.
func faultCluster(t *testing.T, ch string) (*clustertest.Cluster, string, *clustertest.Node, []*clustertest.Node) {
	t.Helper()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 1, Faults: true,
		RequestTimeout: faultRequestTimeout})
	c.WaitSettled(30 * time.Second)
	createAll(t, c, []string{ch})
	leader, others := leaderAndOthers(t, c, 0)
	return c, ch, leader, others
}

// TestIsolatedLeaderFailsFast cuts a partition's leader off from every
// other node while clients post through every node with 30 s deadlines of
// their own. Every attempt comes back within the request timeout (plus the
// way back), succeeded or not: before, a post to a broken path answered
// nothing until the client's own timeout. Posts through the other nodes
// succeed again once they have elected a leader.
func TestIsolatedLeaderFailsFast(t *testing.T) {
	c, ch, leader, others := faultCluster(t, "fast-1")
	for _, o := range others {
		c.Net.Partition(leader.ID, o.ID)
	}
	cut := time.Now()
	t.Logf("cut %s off: %s", leader.ID, c.Net)
	var viaOthers, viaLeader attemptLog
	var wg sync.WaitGroup
	for _, m := range c.Members() {
		log := &viaOthers
		if m == leader {
			log = &viaLeader
		}
		wg.Go(func() {
			for i := 0; time.Since(cut) < faultWindow(); i++ {
				_ = log.post(m.Cluster(), ch, fmt.Sprintf("%s-%d", m.ID, i))
			}
		})
	}
	wg.Wait()
	c.Net.Heal()
	viaOthers.check(t, "through the nodes that can elect a leader")
	viaLeader.check(t, "through the isolated leader")
	if viaOthers.ok == 0 {
		t.Errorf("no post succeeded through %s and %s while %s was cut off", others[0].ID, others[1].ID, leader.ID)
	} else {
		t.Logf("first post through the majority acknowledged %v after the cut", viaOthers.firstOK.Sub(cut).Round(time.Millisecond))
	}
	if viaLeader.ok != 0 {
		t.Errorf("%d posts succeeded through the isolated leader %s, want none", viaLeader.ok, leader.ID)
	}
}

// TestRelayAroundACutLink cuts the link between one node and its
// partition's leader, both ways, while both can still reach the third
// node: posts through the cut-off node reach the leader through the
// third, with no election (the leader keeps its quorum). Before, the node
// skipped the leader it could not reach, the third node named that same
// leader, and the post failed after the deadline.
func TestRelayAroundACutLink(t *testing.T) {
	c, ch, leader, others := faultCluster(t, "relay-1")
	edge := others[0]
	c.Net.Partition(edge.ID, leader.ID)
	t.Logf("%s", c.Net)
	var log attemptLog
	const posts = 10
	for i := range posts {
		if err := log.post(edge.Cluster(), ch, fmt.Sprintf("relayed-%d", i)); err != nil {
			t.Errorf("post %d through %s, cut off from the leader %s: %v", i, edge.ID, leader.ID, err)
		}
	}
	log.check(t, "through "+edge.ID)
	if l, _ := leaderAndOthers(t, c, 0); l != leader {
		t.Logf("the leadership moved to %s meanwhile", l.ID)
	}
	c.Net.Heal()
	got := readHistory(t, leader.Cluster(), ch, false)
	if len(got) != posts {
		t.Errorf("history: got %d messages, want the %d relayed posts", len(got), posts)
	}
}

// TestOneWayCutFromLeader cuts every link from the followers to their
// partition's leader while the leader's own links to them keep working:
// Raft, whose connections the leader opens, goes on as if nothing
// happened, but no follower can forward a request to the leader. Posts
// through the followers must succeed again within a bounded time, the
// leadership having moved to a node the others can reach.
func TestOneWayCutFromLeader(t *testing.T) {
	c, ch, leader, others := faultCluster(t, "oneway-1")
	for _, o := range others {
		c.Net.Cut(o.ID, leader.ID)
	}
	cut := time.Now()
	t.Logf("%s", c.Net)
	var log attemptLog
	for i := 0; ; i++ {
		err := log.post(others[i%2].Cluster(), ch, fmt.Sprintf("oneway-%d", i))
		if err == nil && time.Since(cut) > faultRequestTimeout {
			break
		}
		if time.Since(cut) > 30*time.Second {
			t.Fatalf("no post through %s or %s succeeded within 30s of the cut; last error: %v",
				others[0].ID, others[1].ID, err)
		}
	}
	log.check(t, "through the followers")
	now, _ := leaderAndOthers(t, c, 0)
	t.Logf("posts through the followers succeed again %v after the cut; %s leads", since(cut), now.ID)
	for i := range 5 {
		if err := log.post(others[i%2].Cluster(), ch, fmt.Sprintf("after-%d", i)); err != nil {
			t.Errorf("post %d through %s after the handover: %v", i, others[i%2].ID, err)
		}
	}
	if now == leader {
		t.Errorf("%s still leads, although no other node can reach it", leader.ID)
	}
}

// TestAdvertisesOwnAddresses asks nodes that dial their peers through
// proxies (--peer-map) where a partition's leader and the metadata leader
// are: the answer names the addresses those leaders advertise, never the
// proxy the answering node itself dials, which is its own view of the
// network and means nothing to the asker. Before, a NotLeader answer
// carried the answering node's peer-map address.
func TestAdvertisesOwnAddresses(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 1, Faults: true})
	c.WaitSettled(30 * time.Second)
	leader, others := leaderAndOthers(t, c, 0)
	ask := others[0]
	// Until ask's replica has heard from the leader (an election or a
	// handover can follow the settling), its answer names no leader.
	var nl *clusterv1.NotLeader
	clustertest.CheckFor(t, 10*time.Second, 20*time.Millisecond, ask.ID+" names a leader", func() bool {
		resp, err := rawClient(ask.HTTP, staticHeader("")).Apply(t.Context(), &clusterv1.ApplyRequest{
			Partition: 0, Command: clustertest.Create("advertise-1")})
		if err != nil {
			t.Fatalf("Apply on %s, which does not lead: %v", ask.ID, err)
		}
		nl = resp.GetNotLeader()
		return nl.GetLeaderId() != ""
	})
	// The leader found at first, or the one it handed over to since.
	named := leader
	for _, m := range c.Members() {
		if m.ID == nl.GetLeaderId() {
			named = m
		}
	}
	if nl.GetLeaderId() != named.ID || nl.GetLeaderHttp() != named.HTTP {
		t.Errorf("NotLeader from %s: got leader %q at %q, want %s at its own address %s",
			ask.ID, nl.GetLeaderId(), nl.GetLeaderHttp(), named.ID, named.HTTP)
	}
	metaLeader, _ := ask.Cluster().Meta().Leader()
	var metaHTTP string
	for _, m := range c.Members() {
		if m.ID == metaLeader {
			metaHTTP = m.HTTP
		}
	}
	for _, m := range c.Members() {
		if m.ID == metaLeader {
			continue
		}
		jr, err := rawClient(m.HTTP, staticHeader("")).Join(t.Context(), &clusterv1.JoinRequest{
			Node: &heraldv1.Node{Id: "n9", RaftAddr: "127.0.0.1:1"}})
		if err != nil {
			t.Fatalf("Join on %s: %v", m.ID, err)
		}
		if got := jr.GetNotLeader().GetLeaderHttp(); got != metaHTTP {
			t.Errorf("Join's NotLeader from %s: got %q, want the metadata leader %s's own %s", m.ID, got, metaLeader, metaHTTP)
		}
	}
}
