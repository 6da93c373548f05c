package partition

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// streamBuffer bounds the events a Stream holds in memory. A stream that
// falls further behind is not dropped: it re-reads from the state file.
const streamBuffer = 1024

// Feed publishes a replica's applied events to the Streams watching their
// channels. It is mutex-guarded; publish runs on the FSM goroutine after
// each batch commits and never blocks on a reader.
type Feed struct {
	db *storage.DB
	// missingGrace is how long a stream waits for its channel to appear
	// before it reports it missing: a replica that is behind may not have
	// applied the channel's creation yet.
	missingGrace time.Duration

	mu       sync.Mutex // guards following
	watchers map[string]map[*Stream]struct{}
	closed   bool
}

func newFeed(db *storage.DB, missingGrace time.Duration) *Feed {
	return &Feed{db: db, missingGrace: missingGrace, watchers: make(map[string]map[*Stream]struct{})}
}

// missingPoll is how often a stream whose channel its replica does not
// hold yet looks again: a channel's creation publishes no event.
const missingPoll = 20 * time.Millisecond

// Watch starts a stream of a channel's events with seq > after. The stream
// is registered before it reads anything, so no event is missed between its
// backlog and live events. The caller must Close it.
func (f *Feed) Watch(channel string, after uint64) *Stream {
	s := &Stream{feed: f, channel: channel, next: after + 1, dirty: true,
		notify: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		s.closed = true
		return s
	}
	set := f.watchers[channel]
	if set == nil {
		set = make(map[*Stream]struct{})
		f.watchers[channel] = set
	}
	set[s] = struct{}{}
	return s
}

func (f *Feed) publish(events []*heraldv1.Event) {
	if len(events) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range events {
		for s := range f.watchers[ev.GetChannelId()] {
			s.offer(ev)
		}
	}
}

// heads returns the head seq of every channel a stream watches (0 for a
// channel that does not exist), read before a restore for reset.
func (f *Feed) heads() map[string]uint64 {
	f.mu.Lock()
	channels := make([]string, 0, len(f.watchers))
	for ch := range f.watchers {
		channels = append(channels, ch)
	}
	f.mu.Unlock()
	return f.headsOf(channels)
}

// headsOf reads the head seqs of channels; nil if the state cannot be read.
func (f *Feed) headsOf(channels []string) map[string]uint64 {
	heads := make(map[string]uint64, len(channels))
	err := f.db.View(func(r *storage.Reader) error {
		for _, ch := range channels {
			_, head, _, err := r.Events(ch, math.MaxUint64, 0)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			heads[ch] = head
		}
		return nil
	})
	if err != nil {
		return nil
	}
	return heads
}

// reset runs after a restore replaced the state; before holds the heads
// of the watched channels as they were (heads). A stream whose channel's
// head went back (is below before) and is now below the stream's cursor
// ends with ErrCursorAhead: the seqs it delivered are reused by other
// events. Every other stream re-reads from its cursor in the state file;
// one still ahead of the head keeps waiting (the replica may be behind).
func (f *Feed) reset(before map[string]uint64) {
	channels := make([]string, 0, len(before))
	for ch := range before {
		channels = append(channels, ch)
	}
	after := f.headsOf(channels)
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch, set := range f.watchers {
		old, known := before[ch]
		head, read := after[ch]
		back := known && read && head < old
		for s := range set {
			if !back || !s.endIfAhead(head) {
				s.markDirty()
			}
		}
	}
}

// close ends every stream: a blocked Next returns ErrClosed, and so does
// every stream watched afterwards. The replica is shutting down.
func (f *Feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, set := range f.watchers {
		for s := range set {
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
			s.wake()
		}
	}
	f.watchers = make(map[string]map[*Stream]struct{})
}

func (f *Feed) remove(s *Stream) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if set := f.watchers[s.channel]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(f.watchers, s.channel)
		}
	}
}

// Stream delivers one channel's events in seq order without gaps or
// duplicates: from memory while it keeps up, from the state file when it
// falls behind or after a restore; it ends (ErrCursorAhead) when a restore
// takes its channel's head back below its cursor. One goroutine calls Next; Close may be
// called from any goroutine. Lock order: Feed.mu before Stream.mu.
type Stream struct {
	feed    *Feed
	channel string
	notify  chan struct{} // size 1: a wake-up, coalesced

	mu      sync.Mutex // guards following
	next    uint64     // seq of the next event to deliver
	pending []*heraldv1.Event
	dirty   bool  // events exist that pending lacks: read the state file
	err     error // set when the stream cannot go on; Next returns it
	closed  bool
}

// offer is called by the feed with each new event of the channel.
func (s *Stream) offer(ev *heraldv1.Event) {
	s.mu.Lock()
	n := len(s.pending)
	switch {
	case ev.GetSeq() < s.next || s.dirty:
	case n == 0 && ev.GetSeq() == s.next,
		n > 0 && n < streamBuffer && ev.GetSeq() == s.pending[n-1].GetSeq()+1:
		s.pending = append(s.pending, ev)
	default:
		s.dirty = true
		s.pending = nil
	}
	s.mu.Unlock()
	s.wake()
}

// endIfAhead ends the stream with ErrCursorAhead if its cursor is past
// head, and reports whether it did.
func (s *Stream) endIfAhead(head uint64) bool {
	s.mu.Lock()
	cursor := s.next - 1
	if cursor <= head {
		s.mu.Unlock()
		return false
	}
	s.err = &storage.Error{Kind: storage.ErrCursorAhead, Msg: fmt.Sprintf(
		"channel %q was restored from a snapshot and now ends at seq %d, before the last event delivered (%d); "+
			"subscribe again from the channel's head", s.channel, head, cursor)}
	s.pending = nil
	s.mu.Unlock()
	s.wake()
	return true
}

func (s *Stream) markDirty() {
	s.mu.Lock()
	s.dirty = true
	s.pending = nil
	s.mu.Unlock()
	s.wake()
}

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Next returns the next events, at most max, waiting until there is at
// least one or ctx ends. It returns a storage error if the events after its
// cursor were trimmed (storage.ErrCursorExpired), a restored snapshot took
// the channel's head back below its cursor (storage.ErrCursorAhead, for
// good) or the channel does not exist (storage.ErrNotFound, once it has
// been missing for the feed's grace: a replica that is behind gets that
// long to apply its creation), and ErrClosed after Close.
func (s *Stream) Next(ctx context.Context, max int) ([]*heraldv1.Event, error) {
	var missing time.Time // when the replica was first found without the channel
	for {
		evs, read, err := s.take(max)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		var poll <-chan time.Time
		if read {
			evs, err = s.readState(max)
			if errors.Is(err, storage.ErrNotFound) {
				if missing.IsZero() {
					missing = time.Now()
				}
				if time.Since(missing) < s.feed.missingGrace {
					// Not applied here yet, maybe: read again soon.
					s.mu.Lock()
					s.dirty = true
					s.mu.Unlock()
					poll, err = time.After(missingPoll), nil
				}
			}
			if err != nil || len(evs) > 0 {
				return evs, err
			}
		}
		select {
		case <-s.notify:
		case <-poll:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// take returns buffered events, or says that the state file must be read.
func (s *Stream) take(max int) (evs []*heraldv1.Event, read bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	if s.err != nil {
		return nil, false, s.err
	}
	for len(s.pending) > 0 && s.pending[0].GetSeq() < s.next {
		s.pending = s.pending[1:]
	}
	if len(s.pending) > 0 && s.pending[0].GetSeq() == s.next {
		n := min(max, len(s.pending))
		evs = s.pending[:n:n]
		s.pending = s.pending[n:]
		s.next += uint64(n)
		return evs, false, nil
	}
	read = s.dirty || len(s.pending) > 0
	s.dirty = false
	s.pending = nil
	return nil, read, nil
}

func (s *Stream) readState(max int) ([]*heraldv1.Event, error) {
	s.mu.Lock()
	after := s.next - 1
	s.mu.Unlock()
	var evs []*heraldv1.Event
	err := s.feed.db.View(func(r *storage.Reader) error {
		var err error
		evs, _, _, err = r.Events(s.channel, after, max)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = evs[len(evs)-1].GetSeq() + 1
	if len(evs) == max {
		// More may follow in the state file.
		s.dirty = true
	}
	return evs, nil
}

// Close unregisters the stream; a blocked Next returns ErrClosed once
// woken. It is idempotent.
func (s *Stream) Close() {
	s.feed.remove(s)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wake()
}
