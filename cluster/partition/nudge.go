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
// (it is no heartbeat: those carry no previous entry).
//
// The nudger keeps, per follower, the commit index it last told it and
// whether a request is on its way. A follower with a request on its way
// is told again when the answer comes, if the commit index has moved on
// meanwhile: a nudge is never dropped, or the last entry of a burst would
// wait for CommitTimeout on that follower. A follower whose log does not
// hold entry c yet (its AppendEntries is queued behind a disk write) has
// its transport hold the nudge until it does, up to 100 ms
// (transport.HoldNudges); one that still refuses, lagging further, is
// asked again after delay, then twice as long each time up to an election
// timeout, so that it does not log a refusal for every nudge; one that
// cannot be reached is waited for the same way.
//
// delay keeps a client that posts one message at a time from paying for a
// nudge after each post, and under load the log always has a next entry,
// so nothing is sent. An entry applied while another was on its way into
// the log is told with the next one; if that one never reaches the state
// machine (a Barrier, a configuration change), the nudger checks again
// every delay while the log has not committed to its end.
type nudger struct {
	delay   time.Duration
	holdOff time.Duration             // longest wait before a follower that refused is asked again
	raft    atomic.Pointer[raft.Raft] // nil until raft has started
	trans   raft.Transport
	logs    raft.LogStore
	self    raft.ServerID
	header  raft.RPCHeader

	mu    sync.Mutex // guards following
	peers map[raft.ServerID]*nudgePeer
	timer *time.Timer // runs fire; nil until first armed
	due   time.Time   // when timer fires; zero once it has
}

// nudgePeer is what the nudger knows of one follower.
type nudgePeer struct {
	told  uint64        // the commit index it accepted last
	busy  bool          // a request is on its way
	until time.Time     // refused or unreachable: not asked again before this
	wait  time.Duration // the next wait after a refusal
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
func (n *nudger) applied(uint64) {
	r := n.raft.Load()
	if n.delay < 0 || r == nil || r.State() != raft.Leader {
		return
	}
	n.arm()
}

func (n *nudger) arm() { n.armAfter(n.delay) }

// armAfter makes fire run within d: the timer fires at the earliest time
// asked for since it last fired.
func (n *nudger) armAfter(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	at := time.Now().Add(d)
	switch {
	case n.timer == nil:
		n.timer = time.AfterFunc(d, n.fire)
	case !n.due.IsZero() && !at.Before(n.due):
		return
	default:
		n.timer.Reset(d)
	}
	n.due = at
}

// fire tells every follower that has not been told the commit index, once
// the log has committed to its end; while entries are still uncommitted
// it checks again after delay.
func (n *nudger) fire() {
	n.mu.Lock()
	n.due = time.Time{}
	n.mu.Unlock()
	r := n.raft.Load()
	if r.State() != raft.Leader {
		return
	}
	term := r.CurrentTerm()
	commit := r.CommitIndex()
	if r.LastIndex() != commit {
		n.arm() // a next entry is on its way; it tells them, or this will
		return
	}
	servers := r.GetConfiguration().Configuration().Servers
	if !n.untold(servers, commit) {
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
	req := raft.AppendEntriesRequest{RPCHeader: n.header, Term: term,
		PrevLogEntry: commit, PrevLogTerm: entry.Term, LeaderCommitIndex: commit}
	for _, s := range servers {
		if s.ID == n.self {
			continue
		}
		if wait := n.send(s, req); wait > 0 {
			n.armAfter(wait)
		}
	}
}

// untold reports whether a follower among servers has not accepted
// commit yet.
func (n *nudger) untold(servers []raft.Server, commit uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range servers {
		if p := n.peers[s.ID]; s.ID != n.self && (p == nil || p.told < commit) {
			return true
		}
	}
	return false
}

// send sends req to s unless s has accepted its commit index, a request
// is on its way to s (its answer checks again), or s is waited for after
// a refusal or failure: then it returns how long until s may be asked.
// req is a copy: the transport may encode it concurrently.
func (n *nudger) send(s raft.Server, req raft.AppendEntriesRequest) time.Duration {
	n.mu.Lock()
	p := n.peers[s.ID]
	if p == nil {
		p = &nudgePeer{}
		n.peers[s.ID] = p
	}
	if wait := time.Until(p.until); wait > 0 && p.told < req.LeaderCommitIndex && !p.busy {
		n.mu.Unlock()
		return wait
	}
	if p.told >= req.LeaderCommitIndex || p.busy {
		n.mu.Unlock()
		return 0
	}
	p.busy = true
	n.mu.Unlock()
	go func() {
		var resp raft.AppendEntriesResponse
		err := n.trans.AppendEntries(s.ID, s.Address, &req, &resp)
		n.mu.Lock()
		p.busy = false
		again := time.Duration(0)
		if err == nil && resp.Success {
			p.told, p.wait = max(p.told, req.LeaderCommitIndex), 0
			again = n.delay // the commit index may have moved on meanwhile
		} else {
			p.wait = min(max(2*p.wait, n.delay), n.holdOff)
			p.until = time.Now().Add(p.wait)
			again = p.wait
		}
		n.mu.Unlock()
		if again > 0 {
			n.armAfter(again)
		}
	}()
	return 0
}
