package transport

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Transport is one Raft group's raft.NetworkTransport, built by
// Mux.NewTransport. It is a NetworkTransport in every respect but two: a
// commit nudge can be held until the log has its entry (HoldNudges), and a
// heartbeat takes raft's fast path (handled on the transport's goroutine,
// clear of the main loop's disk writes) only when it can change nothing
// but the leader's last contact, as the gate set by GateHeartbeats says;
// any other heartbeat reaches Raft through the consumer channel and its
// main loop, like every other RPC.
//
// hashicorp/raft (through v1.8.0) handles every heartbeat on the fast
// path. A heartbeat from a newer leader then changes the term and the
// state concurrently with the main loop. A leader resumed after a pause
// (SIGSTOP, a long GC or VM stall) that is appending a client's entry when
// the newer leader's heartbeat arrives stamps that entry with the newer
// term, at an index where the newer leader has an entry of its own with
// the same term. Raft's log matching check cannot tell the two apart, the
// replica applies its own entry, and replicas diverge (hashicorp/raft
// issue 695; partition test TestPausedLeaderResumes reproduces it).
// Handled on the main loop, such a heartbeat ends the leader loop before
// anything else is appended. Heartbeats of the leader a follower already
// follows, in its term, stay on the fast path, so a follower busy writing
// to disk still answers them at once and leaders keep their lease.
//
// Its methods are safe for concurrent use, as NetworkTransport's are.
type Transport struct {
	*raft.NetworkTransport
	layer    *Layer
	consumer chan raft.RPC
	done     chan struct{}
	once     sync.Once
	gate     atomic.Pointer[func(term uint64) bool]
	last     atomic.Pointer[func() uint64] // HoldNudges
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
	_ HeartbeatGate    = (*Transport)(nil)
	_ NudgeHolder      = (*Transport)(nil)
)

func newTransport(nt *raft.NetworkTransport, l *Layer) *Transport {
	t := &Transport{NetworkTransport: nt, layer: l, consumer: make(chan raft.RPC), done: make(chan struct{})}
	go t.forward() // ends at Close
	return t
}

// forward hands the NetworkTransport's RPCs on to Raft.
func (t *Transport) forward() {
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			if prev, ok := t.early(rpc); ok {
				go t.deliverAt(rpc, prev)
				continue
			}
			t.deliver(rpc)
		case <-t.done:
			return
		}
	}
}

func (t *Transport) deliver(rpc raft.RPC) {
	select {
	case t.consumer <- rpc:
	case <-t.done:
		rpc.Respond(nil, raft.ErrTransportShutdown)
	}
}

// nudgeWait bounds how long a nudge waits for the entry it names.
const nudgeWait = 100 * time.Millisecond

// early reports whether rpc is a commit nudge (partition's nudger: an
// AppendEntries without entries whose previous entry is its commit index)
// naming an entry the replica's log does not hold yet, and which.
func (t *Transport) early(rpc raft.RPC) (uint64, bool) {
	last := t.last.Load()
	req, _ := rpc.Command.(*raft.AppendEntriesRequest)
	if last == nil || req == nil || len(req.Entries) > 0 || req.PrevLogEntry == 0 ||
		req.LeaderCommitIndex != req.PrevLogEntry || (*last)() >= req.PrevLogEntry {
		return 0, false
	}
	return req.PrevLogEntry, true
}

// deliverAt hands rpc on once the log holds entry prev, or after
// nudgeWait (raft then refuses it, and the leader asks again later).
func (t *Transport) deliverAt(rpc raft.RPC, prev uint64) {
	last := *t.last.Load()
	deadline := time.Now().Add(nudgeWait)
	poll := time.NewTicker(250 * time.Microsecond)
	defer poll.Stop()
	for last() < prev && time.Now().Before(deadline) {
		select {
		case <-poll.C:
		case <-t.done:
			rpc.Respond(nil, raft.ErrTransportShutdown)
			return
		}
	}
	t.deliver(rpc)
}

// HoldNudges makes commit nudges that name an entry past last() wait, up
// to 100 ms, until last() reaches it, instead of reaching Raft first. A
// leader nudges once a majority has an entry; the rest may still be
// writing it, its AppendEntries queued behind a disk write on another
// connection, and Raft would refuse the nudge, log a warning, and make
// the leader ask again. last is the replica's last log index
// (raft.Raft.LastIndex); until it is set, nudges pass at once.
func (t *Transport) HoldNudges(last func() uint64) { t.last.Store(&last) }

// Refuse, while on, makes the Mux close every connection that arrives for
// the transport's group, as for a group that does not exist: peers cannot
// reach the Raft instance, whatever its configuration says. A replica
// that may not take part in its group yet (a node that has lost its state
// must not vote) starts refused.
func (t *Transport) Refuse(on bool) { t.layer.refusing.Store(on) }

// Stopping tells the transport that its Raft instance is shutting down:
// dials stop waiting for refusing peers (see Layer.dial), so that raft's
// goroutines, which Shutdown waits for before it closes the transport,
// end at once.
func (t *Transport) Stopping() { t.layer.stopRedial() }

// Consumer returns the channel Raft reads its RPCs from.
func (t *Transport) Consumer() <-chan raft.RPC { return t.consumer }

// GateHeartbeats sets which heartbeats take the fast path: those whose
// term allow accepts. The Raft instance's owner sets it once the instance
// exists (GateFollowerHeartbeats); until then, and with allow nil, every
// heartbeat goes through the main loop.
func (t *Transport) GateHeartbeats(allow func(term uint64) bool) {
	if allow == nil {
		t.gate.Store(nil)
		return
	}
	t.gate.Store(&allow)
}

// SetHeartbeatHandler registers raft's fast-path handler behind the gate.
func (t *Transport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		req, _ := rpc.Command.(*raft.AppendEntriesRequest)
		if allow := t.gate.Load(); req != nil && allow != nil && (*allow)(req.Term) {
			cb(rpc)
			return
		}
		t.deliver(rpc)
	})
}

// Close stops forwarding and closes the NetworkTransport.
func (t *Transport) Close() error {
	t.once.Do(func() { close(t.done) })
	return t.NetworkTransport.Close()
}

// Stopper is what a transport offers that wants to know its Raft
// instance is about to shut down; Transport is one.
type Stopper interface{ Stopping() }

// Stopping tells trans, if it is a Stopper, that its Raft instance is about
// to shut down. Call it right before raft.Shutdown.
func Stopping(trans raft.Transport) {
	if s, ok := trans.(Stopper); ok {
		s.Stopping()
	}
}

// HeartbeatGate is what a transport offers that can route heartbeats by
// their term; Transport is one. Wrappers of a Transport pass it on.
type HeartbeatGate interface {
	GateHeartbeats(allow func(term uint64) bool)
}

// NudgeHolder is what a transport offers that can hold commit nudges
// until the log has the entry they name; Transport is one. Wrappers of a
// Transport pass it on.
type NudgeHolder interface {
	HoldNudges(last func() uint64)
}

// HoldNudges makes trans, if it is a NudgeHolder, hold the commit nudges
// that name an entry r's log does not hold yet. Call it right after
// raft.NewRaft(..., trans).
func HoldNudges(trans raft.Transport, r *raft.Raft) {
	if h, ok := trans.(NudgeHolder); ok {
		h.HoldNudges(r.LastIndex)
	}
}

// GateFollowerHeartbeats lets only the heartbeats of the leader r follows,
// in r's term, take trans's fast path, if trans is a HeartbeatGate: any
// other could change r's term or state behind its main loop's back. Call
// it right after raft.NewRaft(..., trans).
func GateFollowerHeartbeats(trans raft.Transport, r *raft.Raft) {
	if g, ok := trans.(HeartbeatGate); ok {
		g.GateHeartbeats(func(term uint64) bool {
			return r.State() == raft.Follower && r.CurrentTerm() == term
		})
	}
}
