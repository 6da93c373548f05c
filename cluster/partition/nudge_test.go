package partition_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
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
		start := time.Now()
		for _, f := range g.followers(leader) {
			testkit.CheckFor(t, convergeWait, time.Millisecond, func() error {
				if got := appliedIndex(t, f.p); got < want {
					return fmt.Errorf("%s applied %d, want %d as the leader", f.id, got, want)
				}
				return nil
			})
		}
		t.Logf("post %d: both followers applied index %d %v after the leader",
			i, want, time.Since(start).Round(time.Microsecond))
	}
	time.Sleep(10 * partition.DefaultConfig().CommitNudge)
	if last := r.LastIndex(); last != prev {
		t.Errorf("leader's log ends at index %d after the nudges, want %d (the last post)", last, prev)
	}
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
