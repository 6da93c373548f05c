package bench

import "sync"

// Violations counts what a subscriber saw that the delivery contract
// (DESIGN.md "Guarantees") rules out.
type Violations struct {
	// Gaps counts events whose seq was above the next one expected: the
	// seqs in between were skipped when it arrived.
	Gaps int64 `json:"gaps"`
	// Duplicates counts events whose seq had already arrived.
	Duplicates int64 `json:"duplicates"`
	// Reorders counts events whose seq was below the next one expected
	// and had not arrived before (it came after a later one), and events
	// that came before the subscription's subscribed frame.
	Reorders int64 `json:"reorders"`
	// Lost counts acknowledged posts not delivered to a subscriber of
	// their channel by the end of the drain.
	Lost int64 `json:"lost"`
	// Misrouted counts events of a channel the subscriber had not
	// subscribed to.
	Misrouted int64 `json:"misrouted"`
}

// Total is the number of violations of every kind.
func (v Violations) Total() int64 { return v.Gaps + v.Duplicates + v.Reorders + v.Lost + v.Misrouted }

func (v *Violations) add(o Violations) {
	v.Gaps += o.Gaps
	v.Duplicates += o.Duplicates
	v.Reorders += o.Reorders
	v.Lost += o.Lost
	v.Misrouted += o.Misrouted
}

// orderCheck checks one subscription's events as they arrive: from the
// head_seq of its subscribed frame on, seqs must come strictly increasing
// and without a gap. It remembers every seq that arrived, so that at the
// end it can say which acknowledged posts never did. A resync_required
// stops the check at its last_sent_seq: what follows was not owed to the
// subscription. It is safe for concurrent use.
type orderCheck struct {
	mu         sync.Mutex // guards following
	started    bool
	start      uint64   // head_seq at subscribe
	next       uint64   // the seq expected next
	seen       []uint64 // bit i: seq start+1+i arrived
	v          Violations
	resynced   bool
	resyncedAt uint64 // last_sent_seq of the resync_required
}

// maxTracked bounds how far past its start a check remembers seqs (a
// bit each).
const maxTracked = 1 << 32

// subscribed starts the check after head. A later subscribed frame, of a
// subscription renewed from last(), changes nothing: its events must go on
// where the first one's stopped.
func (c *orderCheck) subscribed(head uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		c.started, c.start, c.next = true, head, head+1
	}
}

// last returns the seq before the next one expected: where a renewed
// subscription must resume.
func (c *orderCheck) last() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next - 1
}

// event checks one event's seq and returns whether it violated the order.
func (c *orderCheck) event(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.started || seq <= c.start:
		c.v.Reorders++ // before subscribed, or from before the head
		return true
	case c.has(seq):
		c.v.Duplicates++
		return true
	}
	if seq-c.start > maxTracked {
		c.v.Gaps++ // absurdly far ahead: count it, do not track it
		c.next = seq + 1
		return true
	}
	c.mark(seq)
	switch {
	case seq == c.next:
		c.next++
		return false
	case seq > c.next:
		c.v.Gaps++
		c.next = seq + 1
	default:
		c.v.Reorders++
	}
	return true
}

// resync records a resync_required that said the subscription was sent
// every event up to lastSent.
func (c *orderCheck) resync(lastSent uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.resynced {
		c.resynced, c.resyncedAt = true, lastSent
	}
}

// missing counts the acknowledged seqs that have not arrived, leaving out
// those after a resync_required.
func (c *orderCheck) missing(acked []uint64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, seq := range acked {
		if !c.has(seq) && !(c.resynced && seq > c.resyncedAt) {
			n++
		}
	}
	return n
}

// complete reports whether every acknowledged seq up to upTo has arrived
// or is not owed after a resync_required.
func (c *orderCheck) complete(upTo uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resynced {
		upTo = min(upTo, c.resyncedAt)
	}
	return c.next > upTo
}

// violations returns what the check has counted so far; Lost is left to
// missing.
func (c *orderCheck) violations() Violations {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v
}

// has reports whether seq arrived; c.mu must be held.
func (c *orderCheck) has(seq uint64) bool {
	if !c.started || seq <= c.start {
		return false
	}
	i := seq - c.start - 1
	return i/64 < uint64(len(c.seen)) && c.seen[i/64]&(1<<(i%64)) != 0
}

// mark records that seq arrived; c.mu must be held.
func (c *orderCheck) mark(seq uint64) {
	i := seq - c.start - 1
	for uint64(len(c.seen)) <= i/64 {
		c.seen = append(c.seen, 0)
	}
	c.seen[i/64] |= 1 << (i % 64)
}
