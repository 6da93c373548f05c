package partition_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/partition"
)

// TestReadSeesWhatFollowersPublished makes the leader's state machine slow
// and posts: a follower applies the post and publishes its event while the
// leader has not applied it yet. A client that saw the event through the
// follower and then reads history linearizably through the leader must
// find the post there: the read waits until the leader has applied its
// commit index as of the read (read-index). Before, the leader read its
// state after one Barrier per term and VerifyLeader, and missed it.
func TestReadSeesWhatFollowersPublished(t *testing.T) {
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("c"))
	for round := range 3 {
		g.waitConverged()
		head, err := headSeq(t.Context(), leader.p, "c", false)
		if err != nil {
			t.Fatalf("head: %v", err)
		}
		follower := g.followers(leader)[0]
		watch := follower.p.Feed().Watch("c", head)
		partition.SetApplyHook(leader.p, func() { time.Sleep(time.Second) })

		id := fmt.Sprintf("m%d", round)
		go func() { // returns once the leader has applied the post
			ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
			defer cancel()
			_, _ = leader.p.Propose(ctx, postCmd("c", id, id))
		}()
		evs := collect(t, watch, 1, opTimeout)
		watch.Close()
		seen := time.Now()
		partition.SetApplyHook(leader.p, nil)
		if got := evs[0].GetMessagePosted().GetMessage().GetClientMsgId(); got != id {
			t.Fatalf("round %d: %s published %q, want the post %q", round, follower.id, got, id)
		}
		msgs := history(t, leader.p, "c", false)
		found := false
		for _, m := range msgs {
			found = found || m.GetClientMsgId() == id
		}
		if !found {
			t.Fatalf("round %d: linearizable history on leader %s lacks post %s (seq %d) that %s had published: %d messages",
				round, leader.id, id, evs[0].GetSeq(), follower.id, len(msgs))
		}
		t.Logf("round %d: the read waited %v for the leader to apply what %s had published",
			round, time.Since(seen).Round(time.Millisecond), follower.id)
	}
}
