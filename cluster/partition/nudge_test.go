package partition_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/cluster/transport"
)

// farCommitTimeout is a CommitTimeout the tests never reach: an idle
// leader then tells its followers of a commit only with a next entry.
const farCommitTimeout = time.Hour

// TestFollowersApplyTheLastCommitAtOnce posts one message at a time to a
// group whose idle leader would tell its followers of a commit only after
// an hour: the nudge tells them at once, so every follower applies each
// post (and would publish its event) without a next post, and it does so
// without appending anything to the log: each post is the one entry after
// the last.
func TestFollowersApplyTheLastCommitAtOnce(t *testing.T) {
	g := newGroup(t, 3, func(c *partition.Config) { c.CommitTimeout = farCommitTimeout })
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	r := partition.RaftOf(leader.p)
	prev := appliedIndex(t, leader.p)
	for i := range 3 {
		postN(t, leader.p, "general", fmt.Sprintf("alone-%d", i), 1)
		want := appliedIndex(t, leader.p)
		if want != prev+1 {
			t.Fatalf("post %d applied at index %d, want %d: something was appended after the previous post", i, want, prev+1)
		}
		prev = want
		t.Logf("post %d: both followers applied index %d %v after the leader", i, want, waitFollowersApplied(t, g, leader, want))
	}
	time.Sleep(10 * partition.DefaultConfig().CommitNudge)
	if last := r.LastIndex(); last != prev {
		t.Errorf("leader's log ends at index %d after the nudges, want %d (the last post)", last, prev)
	}
}

// waitFollowersApplied waits until every follower of leader has applied
// index want and returns how long that took.
func waitFollowersApplied(t *testing.T, g *testGroup, leader *replica, want uint64) time.Duration {
	t.Helper()
	start := time.Now()
	for _, f := range g.followers(leader) {
		testkit.CheckFor(t, convergeWait, time.Millisecond, func() error {
			if got := appliedIndex(t, f.p); got < want {
				return fmt.Errorf("%s applied %d, want %d as the leader", f.id, got, want)
			}
			return nil
		})
	}
	return time.Since(start).Round(time.Microsecond)
}

// TestWithoutNudgeFollowersWaitForANextEntry is the control: with the
// nudge off, a follower of that group has not applied the last post a
// second later, though the leader has.
func TestWithoutNudgeFollowersWaitForANextEntry(t *testing.T) {
	g := newGroup(t, 3, func(c *partition.Config) {
		c.CommitTimeout = farCommitTimeout
		c.CommitNudge = -1
	})
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	postN(t, leader.p, "general", "alone", 1)
	want := appliedIndex(t, leader.p)
	time.Sleep(time.Second)
	behind := 0
	for _, f := range g.followers(leader) {
		if got := appliedIndex(t, f.p); got < want {
			behind++
		}
	}
	if behind == 0 {
		t.Errorf("every follower applied index %d without the nudge: the test above proves nothing", want)
	}
}

// slowNudges delays the AppendEntries a replica sends that carry no
// entries but a previous entry, the nudges, as a follower busy with its
// disk delays its answers; everything else passes at once.
type slowNudges struct {
	raft.Transport
	delay time.Duration
}

func (s *slowNudges) AppendEntries(id raft.ServerID, target raft.ServerAddress,
	args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if len(args.Entries) == 0 && args.PrevLogEntry > 0 {
		time.Sleep(s.delay)
	}
	return s.Transport.AppendEntries(id, target, args, resp)
}

func (s *slowNudges) RequestPreVote(id raft.ServerID, target raft.ServerAddress,
	args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return s.Transport.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

func (s *slowNudges) Close() error { return s.Transport.(raft.WithClose).Close() }

func (s *slowNudges) GateHeartbeats(allow func(term uint64) bool) {
	s.Transport.(transport.HeartbeatGate).GateHeartbeats(allow)
}

func (s *slowNudges) HoldNudges(last func() uint64) {
	s.Transport.(transport.NudgeHolder).HoldNudges(last)
}

// TestFollowersApplyTheLastOfABurst posts bursts of messages one after
// another, each committed sooner than the nudge before it is answered: a
// nudge on its way is followed by another for the commits it missed, so
// both followers apply each burst's last post at once, without the next
// entry that would come an hour later.
func TestFollowersApplyTheLastOfABurst(t *testing.T) {
	g := newWrappedGroup(t, 3, func(c *partition.Config) { c.CommitTimeout = farCommitTimeout },
		func(_ string, tr raft.Transport) raft.Transport {
			return &slowNudges{Transport: tr, delay: 30 * time.Millisecond}
		})
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	for round := range 3 {
		postN(t, leader.p, "general", fmt.Sprintf("burst-%d", round), 10)
		want := appliedIndex(t, leader.p)
		t.Logf("burst %d: both followers applied index %d %v after the leader", round, want, waitFollowersApplied(t, g, leader, want))
	}
}
