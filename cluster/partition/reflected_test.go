package partition_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/internal/testkit"
)

// TestIdleReplicasCurrentAfterElections: a partition whose last entries
// are the no-ops of new leaders (elections, no command since) counts as
// applied up to its commit index on every replica, and serves a
// linearizable read. Found by herald torture: after many elections an idle
// partition's followers stayed more than 64 entries "behind" their leader,
// so their node was never ready.
func TestIdleReplicasCurrentAfterElections(t *testing.T) {
	t.Parallel()
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("quiet"))
	postN(t, leader.p, "quiet", "m", 3)
	for i := range 6 { // six new terms, a no-op each, and nothing else
		l := g.waitLeader()
		if err := l.p.TransferLeadership(t.Context(), "", ""); err != nil {
			t.Fatalf("transfer %d from %s: %v", i, l.id, err)
		}
	}
	leader = g.waitLeader()
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		commit := leader.p.Status().CommitIndex
		for _, r := range g.running() {
			if st := r.p.Status(); st.AppliedIndex != st.CommitIndex || st.CommitIndex != commit {
				return fmt.Errorf("%s: applied %d, commit %d; the leader's commit %d", r.id, st.AppliedIndex, st.CommitIndex, commit)
			}
		}
		return nil
	})
	if got := len(history(t, g.waitLeader().p, "quiet", false)); got != 3 {
		t.Fatalf("linearizable history after the elections: got %d messages, want 3", got)
	}
}
