package partition_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// TestEventRetention: with EventRetention 10, the leader trims each
// channel's events down to the last 10 once it holds one more; every
// replica applies the same trims (their digests agree), history keeps
// every message, a cursor below the oldest retained event gets
// ErrCursorExpired and one at it still streams. A channel below the
// limit and a group that keeps every event are left alone.
func TestEventRetention(t *testing.T) {
	const keep = 10
	g := newGroup(t, 3, func(c *partition.Config) { c.EventRetention = keep })
	leader := g.waitLeader().p
	propose(t, leader, createCmd("busy"))
	propose(t, leader, createCmd("quiet"))
	postN(t, leader, "busy", "m", 45)
	postN(t, leader, "quiet", "q", keep)

	// Each post past the 10th is followed by a trim back to 10 (slack 1).
	var oldest uint64
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		head, old := eventRange(t, leader, "busy")
		if head != 45 || head-old+1 != keep {
			return fmt.Errorf("busy holds events %d-%d, want %d-45", old, head, 45-keep+1)
		}
		oldest = old
		return nil
	})
	g.waitConverged()
	for _, r := range g.running() {
		if head, old := eventRange(t, r.p, "busy"); old != oldest || head != 45 {
			t.Errorf("%s: busy holds events %d-%d, want %d-45", r.id, old, head, oldest)
		}
		if head, old := eventRange(t, r.p, "quiet"); old != 1 || head != keep {
			t.Errorf("%s: quiet holds events %d-%d, want 1-%d (not over the limit)", r.id, old, head, keep)
		}
	}
	if msgs := history(t, leader, "busy", false); len(msgs) != 45 {
		t.Errorf("history of busy: got %d messages, want all 45 (messages are never trimmed)", len(msgs))
	}

	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	s := leader.Feed().Watch("busy", oldest-2)
	_, err := s.Next(ctx, 10)
	s.Close()
	var se *storage.Error
	if !errors.As(err, &se) || se.Kind != storage.ErrCursorExpired {
		t.Errorf("cursor %d below the oldest event %d: got %v, want ErrCursorExpired", oldest-2, oldest, err)
	}
	s = leader.Feed().Watch("busy", oldest-1)
	defer s.Close()
	checkGapFree(t, collect(t, s, keep, opTimeout), oldest)

	t.Run("keep every event", func(t *testing.T) {
		g := newGroup(t, 1, func(c *partition.Config) { c.EventRetention = -1 })
		p := g.waitLeader().p
		propose(t, p, createCmd("all"))
		postN(t, p, "all", "m", 30)
		g.waitConverged()
		if head, old := eventRange(t, p, "all"); old != 1 || head != 30 {
			t.Errorf("all holds events %d-%d, want 1-30", old, head)
		}
	})
}

// eventRange returns the head and the oldest retained seq of channel, read
// from p's state without waiting.
func eventRange(t *testing.T, p *partition.Partition, channel string) (head, oldest uint64) {
	t.Helper()
	err := p.DB().View(func(r *storage.Reader) error {
		var err error
		_, head, oldest, err = r.Events(channel, math.MaxUint64, 0)
		return err
	})
	if err != nil {
		t.Fatalf("read the events of %s: %v", channel, err)
	}
	return head, oldest
}
