package partition

import (
	"sync"
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
// The nudger sends that AppendEntries itself: when the leader has applied
// an entry with state, no other has come within delay, and every entry of
// its log has committed at index c, it sends each follower an
// AppendEntries of its term with no entries, previous entry c (with c's
// term from the leader's log) and commit index c, the request raft's own
// replication sends an idle follower. A follower whose log holds entry c
// with that term holds the leader's log up to c (Raft's log matching), so
// it commits c and applies up to it; one that does not refuses the request
// and changes nothing, and raft's replication brings it up to date.
// Because the previous entry is the commit index itself, a follower never
// commits past what it has checked against the leader's log. Nothing is
// appended to the log and nothing is fsynced: the earlier version appended
// a Barrier instead, which doubled the entries, fsyncs and AppendEntries of
// every post to a partition that was idle before it (most posts, with
// traffic spread over partitions).
//
// The request changes nothing raft's own could not: it is the leader's,
// of its term, checked like any AppendEntries on the follower's main loop
// (it is no heartbeat: those carry no previous entry). The answer is
// only used to hold off a follower that refused, for an election timeout,
// so that a follower that lags does not log a refusal for every nudge.
//
// delay keeps a client that posts one message at a time from paying for a
// nudge after each post, and under load the log always has a next entry,
// so nothing is sent. An entry applied while another was on its way into
// the log is told with the next one; if that one never reaches the state
// machine (a Barrier, a configuration change), the nudger checks again
// every delay while an applied entry is past what it told (told), until
// the log has committed to its end.
type nudger struct {
	delay   time.Duration
	holdOff time.Duration             // how long a follower that refused is left alone
	raft    atomic.Pointer[raft.Raft] // nil until raft has started
	trans   raft.Transport
	logs    raft.LogStore
	self    raft.ServerID
	header  raft.RPCHeader
	last    atomic.Uint64 // the last applied index the nudger heard of
	told    atomic.Uint64 // the commit index the followers were last told
	armed   atomic.Bool   // a timer is set

	mu    sync.Mutex
	peers map[raft.ServerID]*nudgePeer
}

// nudgePeer is what the nudger knows of one follower.
type nudgePeer struct {
	busy  bool      // a request is on its way
	until time.Time // refused: not asked again before this
}

// start gives the nudger the started Raft instance and what it sends with.
func (n *nudger) start(r *raft.Raft, rc *raft.Config, trans raft.Transport, logs raft.LogStore) {
	n.trans, n.logs, n.self = trans, logs, rc.LocalID
	n.header = raft.RPCHeader{
		ProtocolVersion: rc.ProtocolVersion,
		ID:              []byte(rc.LocalID),
		Addr:            trans.EncodePeer(rc.LocalID, trans.LocalAddr()),
	}
	n.holdOff = rc.ElectionTimeout
	n.peers = make(map[raft.ServerID]*nudgePeer)
	n.raft.Store(r)
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

// fire tells the followers of the commit index if an applied entry is
// past what they were told and the log has committed to its end; while
// entries are still uncommitted it checks again after delay. An entry
// applied after armed is cleared sets a timer of its own.
func (n *nudger) fire() {
	n.armed.Store(false)
	r := n.raft.Load()
	if r.State() != raft.Leader || n.last.Load() <= n.told.Load() {
		return
	}
	term := r.CurrentTerm()
	commit := r.CommitIndex()
	if r.LastIndex() != commit {
		n.arm() // a next entry is on its way; it tells them, or this will
		return
	}
	var entry raft.Log
	if err := n.logs.GetLog(commit, &entry); err != nil {
		return // compacted into a snapshot: the followers have it already
	}
	// Read after the commit index: still the leader of the term it read,
	// so the request is one that leader may send.
	if r.State() != raft.Leader || r.CurrentTerm() != term {
		return
	}
	n.told.Store(commit)
	req := raft.AppendEntriesRequest{RPCHeader: n.header, Term: term,
		PrevLogEntry: commit, PrevLogTerm: entry.Term, LeaderCommitIndex: commit}
	for _, s := range r.GetConfiguration().Configuration().Servers {
		if s.ID != n.self {
			n.send(s, req)
		}
	}
}

// send sends req to s unless a request to it is on its way or it refused
// one lately. req is a copy: the transport may encode it concurrently.
func (n *nudger) send(s raft.Server, req raft.AppendEntriesRequest) {
	n.mu.Lock()
	p := n.peers[s.ID]
	if p == nil {
		p = &nudgePeer{}
		n.peers[s.ID] = p
	}
	if p.busy || time.Now().Before(p.until) {
		n.mu.Unlock()
		return
	}
	p.busy = true
	n.mu.Unlock()
	go func() {
		var resp raft.AppendEntriesResponse
		err := n.trans.AppendEntries(s.ID, s.Address, &req, &resp)
		n.mu.Lock()
		p.busy = false
		if err != nil || !resp.Success {
			p.until = time.Now().Add(n.holdOff)
		}
		n.mu.Unlock()
	}()
}
