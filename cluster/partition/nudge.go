package partition

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// nudger tells a leader's followers at once that the last entries of its
// log have committed, so that they apply them (and their subscribers get
// the events) within milliseconds instead of at the next CommitTimeout.
//
// hashicorp/raft sends the commit index only with AppendEntries, which a
// leader sends when its log grows or, idle, every CommitTimeout (500 ms,
// raised from 50 ms to keep idle clusters cheap); its heartbeats carry no
// commit index. So a follower learns that an entry committed with the next
// entry, and the last entry of a burst waits up to twice CommitTimeout.
// The nudger gives it a next entry: when the leader has applied the last
// entry of its log and no other has come within delay, it appends a
// Barrier, whose AppendEntries carries the commit index. Only writes cost
// anything (an idle group appends nothing), and under load the log always
// has a next entry, so it appends no Barrier; delay keeps a client that
// posts one message at a time from paying for one after each post.
type nudger struct {
	delay time.Duration
	raft  atomic.Pointer[raft.Raft] // nil until raft has started
	last  atomic.Uint64             // the last applied index the nudger heard of
	armed atomic.Bool               // a timer is set
}

// applied is called by the state machine after it applied entries up to
// index.
func (n *nudger) applied(index uint64) {
	r := n.raft.Load()
	if n.delay < 0 || r == nil || r.State() != raft.Leader {
		return
	}
	n.last.Store(index)
	if n.armed.CompareAndSwap(false, true) {
		time.AfterFunc(n.delay, n.fire)
	}
}

// fire appends a Barrier if the log ends at the last applied entry. An
// entry applied after armed is cleared sets a timer of its own; one
// appended but not yet applied will, once applied.
func (n *nudger) fire() {
	n.armed.Store(false)
	r := n.raft.Load()
	if r.State() != raft.Leader || r.LastIndex() != n.last.Load() {
		return
	}
	// Not waited for: it commits with the next round of AppendEntries or
	// is lost with a leadership, and nothing depends on it.
	r.Barrier(n.delay + time.Second)
}
