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
// The nudger gives it a next entry: when the leader has applied an entry
// with state, no other has come within delay, and every entry of its log
// has committed, it appends a Barrier, whose AppendEntries carries that
// commit index. Only writes cost anything (an idle group appends nothing),
// and under load the log always has a next entry, so it appends no
// Barrier; delay keeps a client that posts one message at a time from
// paying for one after each post.
//
// A Barrier tells the followers only of the entries committed when it is
// sent. One appended while a proposal was on its way into the log lands
// after that proposal, before it commits, and says nothing of it; and a
// Barrier never reaches the state machine, so its own commit calls
// applied for nobody. So the nudger remembers up to which index it has
// told the followers (told), and while an entry with state was applied
// past it, checks again every delay: once the log has committed to its
// end, it appends the next Barrier.
type nudger struct {
	delay time.Duration
	raft  atomic.Pointer[raft.Raft] // nil until raft has started
	last  atomic.Uint64             // the last applied index the nudger heard of
	told  atomic.Uint64             // the commit index the last Barrier was appended at
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
	n.arm()
}

func (n *nudger) arm() {
	if n.armed.CompareAndSwap(false, true) {
		time.AfterFunc(n.delay, n.fire)
	}
}

// fire appends a Barrier if an applied entry is past what the followers
// were told and the log has committed to its end; while entries are still
// uncommitted it checks again after delay. An entry applied after armed is
// cleared sets a timer of its own.
func (n *nudger) fire() {
	n.armed.Store(false)
	r := n.raft.Load()
	if r.State() != raft.Leader || n.last.Load() <= n.told.Load() {
		return
	}
	commit := r.CommitIndex()
	if r.LastIndex() != commit {
		n.arm() // a next entry is on its way; it may be the nudger's own Barrier
		return
	}
	n.told.Store(commit)
	// Not waited for: it commits with the next round of AppendEntries or
	// is lost with a leadership, and nothing depends on it.
	r.Barrier(n.delay + time.Second)
}
