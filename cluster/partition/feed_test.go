package partition_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// TestStreamFromStart checks that a watch from 0 gets every kind of event
// in seq order, then live events, and only its own channel's.
func TestStreamFromStart(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	propose(t, p, createCmd("general"))
	propose(t, p, createCmd("random"))
	postN(t, p, "general", "m", 5)                      // seqs 1-5
	propose(t, p, editCmd("general", 2, "edited"))      // 6
	propose(t, p, reactCmd("general", 3, "tada"))       // 7
	propose(t, p, joinCmd("bob", "general"))            // 8
	propose(t, p, postAs("bob", "general", "hi", "b1")) // 9
	propose(t, p, deleteCmd("general", 1))              // 10
	postN(t, p, "random", "other", 3)

	s := p.Feed().Watch("general", 0)
	defer s.Close()
	evs := collect(t, s, 10, opTimeout)
	checkGapFree(t, evs, 1)
	kinds := []string{"posted", "posted", "posted", "posted", "posted", "edited", "reaction", "joined", "posted", "deleted"}
	for i, ev := range evs {
		var kind string
		switch {
		case ev.GetMessagePosted() != nil:
			kind = "posted"
		case ev.GetMessageEdited() != nil:
			kind = "edited"
		case ev.GetReactionAdded() != nil:
			kind = "reaction"
		case ev.GetMemberJoined() != nil:
			kind = "joined"
		case ev.GetMessageDeleted() != nil:
			kind = "deleted"
		}
		if kind != kinds[i] || ev.GetChannelId() != "general" {
			t.Errorf("event %d: got %s in %q, want %s in general", ev.GetSeq(), kind, ev.GetChannelId(), kinds[i])
		}
	}
	// The delete redacted the first post's text in its event.
	if got := evs[0].GetMessagePosted().GetMessage().GetText(); got != "" {
		t.Errorf("event 1 after delete: got text %q, want it redacted", got)
	}

	// Live events follow with no gap; other channels' events do not appear.
	postN(t, p, "random", "other", 2)
	postN(t, p, "general", "live", 3)
	live := collect(t, s, 3, opTimeout)
	checkGapFree(t, live, 11)
	if len(live) != 3 {
		t.Errorf("live events: got %d, want 3", len(live))
	}
}

// TestStreamSplice starts watches at different cursors while a writer keeps
// posting: each gets its backlog, then live events, with no gap or
// duplicate.
func TestStreamSplice(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	propose(t, p, createCmd("general"))
	total := 400
	if testing.Short() {
		total = 200
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	posted := 0 // guarded by mu
	wg.Go(func() {
		for i := range total {
			ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
			_, err := p.Propose(ctx, postCmd("general", fmt.Sprintf("m-%d", i+1), ""))
			cancel()
			if err != nil {
				t.Errorf("post %d: %v", i+1, err)
				return
			}
			mu.Lock()
			posted++
			mu.Unlock()
		}
	})
	defer wg.Wait()

	type watch struct {
		after  uint64
		stream *partition.Stream
	}
	var watches []watch
	for _, at := range []int{0, total / 8, total / 4, total / 2} {
		testkit.CheckFor(t, convergeWait, time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if posted < at {
				return fmt.Errorf("writer: got %d posts, want %d", posted, at)
			}
			return nil
		})
		// Start a little behind the head, so the backlog is not empty.
		head, err := headSeq(t.Context(), p, "general", false)
		if err != nil {
			t.Fatalf("head seq: %v", err)
		}
		after := head - min(head, 5)
		s := p.Feed().Watch("general", after)
		defer s.Close()
		watches = append(watches, watch{after: after, stream: s})
	}
	for _, w := range watches {
		evs := collect(t, w.stream, total-int(w.after), convergeWait)
		checkGapFree(t, evs, w.after+1)
		if got, want := len(evs), total-int(w.after); got != want {
			t.Errorf("watch after %d: got %d events, want %d", w.after, got, want)
		}
	}
}

// TestStreamSlowReader registers a watch and reads nothing while more
// events than a stream buffers arrive; a reader that keeps up runs beside
// it. Both get every event in order.
func TestStreamSlowReader(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	propose(t, p, createCmd("general"))
	total := 3000
	if testing.Short() {
		total = 1200 // still past the stream's 1024-event buffer
	}
	slow := p.Feed().Watch("general", 0)
	defer slow.Close()
	// One Next at the (empty) head, so that the slow stream is caught up
	// and takes live events into its buffer until it overflows.
	hctx, hcancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	if evs, err := slow.Next(hctx, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on an empty channel: got %d events, %v, want context.DeadlineExceeded", len(evs), err)
	}
	hcancel()
	fast := p.Feed().Watch("general", 0)
	defer fast.Close()

	var fastEvs []*heraldv1.Event
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(t.Context(), convergeWait)
		defer cancel()
		for len(fastEvs) < total {
			evs, err := fast.Next(ctx, 100)
			if err != nil {
				t.Errorf("fast reader after %d events: %v", len(fastEvs), err)
				return
			}
			fastEvs = append(fastEvs, evs...)
		}
	})

	// Several posters, so that Raft batches the commands.
	start := time.Now()
	const posters = 8
	for w := range posters {
		wg.Go(func() {
			for i := w; i < total; i += posters {
				ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
				_, err := p.Propose(ctx, postCmd("general", fmt.Sprintf("m-%d", i), ""))
				cancel()
				if err != nil {
					t.Errorf("post %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("posted %d messages in %v", total, time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	checkGapFree(t, fastEvs, 1)

	evs := collect(t, slow, total, convergeWait)
	checkGapFree(t, evs, 1)
	if len(evs) != total {
		t.Errorf("slow reader: got %d events, want %d", len(evs), total)
	}
	// Nothing more arrives.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if more, err := slow.Next(ctx, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next at the head: got %d events, %v, want context.DeadlineExceeded", len(more), err)
	}
}

// TestStreamCloseAndContext checks how Next ends: ErrClosed after Close,
// even when blocked, and the ctx's error when it ends.
func TestStreamCloseAndContext(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	propose(t, p, createCmd("general"))
	postN(t, p, "general", "m", 2)

	t.Run("close unblocks Next", func(t *testing.T) {
		s := p.Feed().Watch("general", 2)
		errc := make(chan error, 1)
		go func() {
			_, err := s.Next(t.Context(), 10)
			errc <- err
		}()
		// Next has nothing to return: it blocks until Close.
		select {
		case err := <-errc:
			t.Fatalf("Next at the head: got %v before Close, want it to block", err)
		case <-time.After(50 * time.Millisecond):
		}
		closed := time.Now()
		s.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, partition.ErrClosed) {
				t.Errorf("blocked Next after Close: got %v, want ErrClosed", err)
			}
			t.Logf("blocked Next returned %v after Close", time.Since(closed).Round(time.Microsecond))
		case <-time.After(opTimeout):
			t.Fatalf("blocked Next: still blocked %v after Close", opTimeout)
		}
		s.Close() // idempotent
		if _, err := s.Next(t.Context(), 10); !errors.Is(err, partition.ErrClosed) {
			t.Errorf("Next after Close: got %v, want ErrClosed", err)
		}
		// A closed stream no longer receives events.
		postN(t, p, "general", "after-close", 1)
		if _, err := s.Next(t.Context(), 10); !errors.Is(err, partition.ErrClosed) {
			t.Errorf("Next after Close and a post: got %v, want ErrClosed", err)
		}
	})

	t.Run("ctx", func(t *testing.T) {
		s := p.Feed().Watch("general", 0)
		defer s.Close()
		collect(t, s, 3, opTimeout) // reach the head
		canceled, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Next(canceled, 100); !errors.Is(err, context.Canceled) {
			t.Errorf("Next at the head with a canceled ctx: got %v, want context.Canceled", err)
		}
		ctx, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel2()
		start := time.Now()
		_, err := s.Next(ctx, 100)
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Next at the head: got %v, want context.DeadlineExceeded", err)
		}
		if took > 5*time.Second {
			t.Errorf("Next at the head: returned after %v, want about its 100ms deadline", took)
		}
		// The stream still works afterwards.
		postN(t, p, "general", "later", 1)
		evs := collect(t, s, 1, opTimeout)
		if evs[0].GetMessagePosted().GetMessage().GetText() != "later-1" {
			t.Errorf("event after timeouts: got %v, want the post later-1", evs[0])
		}
	})
}

// TestStreamErrors checks the storage errors a stream reports: an unknown
// channel and a cursor whose events were trimmed.
func TestStreamErrors(t *testing.T) {
	g := newGroup(t, 1, nil)
	p := g.waitLeader().p
	propose(t, p, createCmd("general"))
	postN(t, p, "general", "m", 10)
	res := propose(t, p, trimCmd("general", 5))
	if got := res.Channel.GetOldestSeq(); got != 6 {
		t.Fatalf("trim: got oldest seq %d, want 6", got)
	}

	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	for _, tc := range []struct {
		name    string
		channel string
		after   uint64
		want    error
	}{
		{"unknown channel", "nowhere", 0, storage.ErrNotFound},
		{"trimmed cursor", "general", 2, storage.ErrCursorExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := p.Feed().Watch(tc.channel, tc.after)
			defer s.Close()
			evs, err := s.Next(ctx, 10)
			if !errors.Is(err, tc.want) {
				t.Errorf("Next: got %d events, %v, want %v", len(evs), err, tc.want)
			}
		})
	}
	// A cursor at the oldest retained event still works.
	s := p.Feed().Watch("general", 5)
	defer s.Close()
	evs := collect(t, s, 5, opTimeout)
	checkGapFree(t, evs, 6)
}

// TestStreamWaitsForItsChannel: a stream of a channel its replica does not
// hold yet (a replica behind the leader that answered the subscribe has
// not applied the creation) waits for it, within the feed's grace of two
// election timeouts, instead of failing with not found.
func TestStreamWaitsForItsChannel(t *testing.T) {
	g := newGroup(t, 1, func(c *partition.Config) { c.ElectionTimeout = 5 * time.Second })
	p := g.waitLeader().p
	s := p.Feed().Watch("later", 0)
	defer s.Close()
	type next struct {
		evs []*heraldv1.Event
		err error
	}
	got := make(chan next, 1)
	go func() {
		evs, err := s.Next(t.Context(), 10)
		got <- next{evs, err}
	}()
	propose(t, p, createCmd("later"))
	postN(t, p, "later", "m", 1)
	r := <-got
	if r.err != nil {
		t.Fatalf("Next: %v, want the channel's events once it exists", r.err)
	}
	checkGapFree(t, r.evs, 1)
}
