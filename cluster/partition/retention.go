package partition

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// Event retention. The state machine never trims by itself (DESIGN.md
// "Data model"): the leader proposes TrimEvents commands with an explicit
// cutoff, and every replica applies them at the same point of the log.
// The trimmer hears of every event its replica applies; while the replica
// leads, it reads the channel's head and oldest retained seq once the
// channel may hold slack events more than it keeps (slack is keep/64, at
// least 1, at most maxTrimStep), and then proposes a trim down to exactly
// keep. So a channel holds between keep and keep + slack events, and one
// trim command carries at most maxTrimStep deletions (a channel that just
// got a retention trims in steps). It remembers per channel the seq at
// which to look again, so a channel under its limit costs a map lookup
// per event on the leader, and nothing on followers. Messages and dedup
// entries are never trimmed; a cursor below the oldest retained event
// gets CURSOR_EXPIRED with the oldest seq (storage.ErrCursorExpired).
//
// A trim that fails (leadership lost, a full partition, shutdown) is
// dropped: the next event in the channel asks again, and a new leader's
// trimmer hears of the channel with its next event.
const (
	maxTrimStep = 4096
	trimTimeout = 10 * time.Second
)

// trimmer proposes the trims of one replica's channels while it leads.
type trimmer struct {
	keep  uint64 // events kept per channel; 0: every event
	slack uint64
	p     *Partition
	raft  atomic.Pointer[raft.Raft] // nil until raft has started

	mu   sync.Mutex          // guards due and next
	due  map[string]struct{} // channels to check
	next map[string]uint64   // per channel checked, the seq at which to check again
	wake chan struct{}       // size 1
}

func newTrimmer(p *Partition, retention int) *trimmer {
	t := &trimmer{p: p, due: map[string]struct{}{}, next: map[string]uint64{}, wake: make(chan struct{}, 1)}
	if retention > 0 {
		t.keep = uint64(retention)
		t.slack = max(1, min(t.keep/64, maxTrimStep))
	}
	return t
}

// applied is called by the state machine with the events of each batch it
// applied.
func (t *trimmer) applied(events []*heraldv1.Event) {
	if t.keep == 0 || len(events) == 0 {
		return
	}
	if r := t.raft.Load(); r == nil || r.State() != raft.Leader {
		return
	}
	t.mu.Lock()
	for _, ev := range events {
		if ev.GetSeq() >= max(t.keep+t.slack, t.next[ev.GetChannelId()]) {
			t.due[ev.GetChannelId()] = struct{}{}
		}
	}
	n := len(t.due)
	t.mu.Unlock()
	if n > 0 {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// run proposes the trims that are due until ctx ends.
func (t *trimmer) run(ctx context.Context) {
	if t.keep == 0 {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		}
		t.mu.Lock()
		due := t.due
		t.due = map[string]struct{}{}
		t.mu.Unlock()
		for channel := range due {
			if ctx.Err() != nil {
				return
			}
			if more := t.trim(ctx, channel); more {
				t.mu.Lock()
				t.due[channel] = struct{}{}
				t.mu.Unlock()
				select {
				case t.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// trim proposes one trim of channel if it holds enough events past keep.
// It reports whether the channel still holds more than keep + slack after
// it (a step of maxTrimStep did not reach the cutoff).
func (t *trimmer) trim(ctx context.Context, channel string) (more bool) {
	if !t.p.IsLeader() {
		return false
	}
	var head, oldest uint64
	err := t.p.db.View(func(r *storage.Reader) error {
		var err error
		_, head, oldest, err = r.Events(channel, math.MaxUint64, 0)
		return err
	})
	if err != nil || oldest == 0 || head < oldest {
		return false
	}
	if head-oldest+1 < t.keep+t.slack {
		t.checkAt(channel, oldest+t.keep+t.slack-1)
		return false
	}
	cutoff := min(head-t.keep, oldest+maxTrimStep-1)
	ctx, cancel := context.WithTimeout(ctx, trimTimeout)
	defer cancel()
	cmd := &clusterv1.Command{Op: &clusterv1.Command_TrimEvents{
		TrimEvents: &clusterv1.TrimEvents{ChannelId: channel, Cutoff: cutoff}}}
	if _, err := t.p.Propose(ctx, cmd); err != nil {
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrClosed) {
			t.p.log.Warn("event retention: trim failed; the channel's next event retries it",
				"channel", channel, "cutoff", cutoff, "err", err)
		}
		return false
	}
	t.checkAt(channel, cutoff+t.keep+t.slack)
	return cutoff < head-t.keep
}

// checkAt records that channel needs no check before its event seq.
func (t *trimmer) checkAt(channel string, seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next[channel] = seq
}
