package transport

import "github.com/hashicorp/raft"

// Transport is one Raft group's raft.NetworkTransport, built by
// Mux.NewTransport. It is a NetworkTransport in every respect but one: it
// takes no heartbeat handler, so heartbeats reach Raft through the
// consumer channel and its main loop, like every other RPC.
//
// hashicorp/raft (through v1.8.0) handles heartbeats on the transport's
// goroutine when the transport accepts a handler, to keep them clear of
// disk I/O. A heartbeat from a newer leader then changes the term and the
// state concurrently with the main loop. A leader resumed after a pause
// (SIGSTOP, a long GC or VM stall) that is appending a client's entry when
// the newer leader's heartbeat arrives stamps that entry with the newer
// term, at an index where the newer leader has an entry of its own with
// the same term. Raft's log matching check cannot tell the two apart, the
// replica applies its own entry, and replicas diverge (hashicorp/raft
// issue 695; partition test TestPausedLeaderResumes reproduces it).
// Handled on the main loop, the heartbeat ends the leader loop before
// anything else is appended. The cost is that a follower answers a
// heartbeat only once its main loop is free, which can take one disk
// write; the election timeout is far longer.
//
// Its methods are safe for concurrent use, as NetworkTransport's are.
type Transport struct {
	*raft.NetworkTransport
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
)

// SetHeartbeatHandler ignores the handler, as raft.Transport allows:
// heartbeats then arrive on the consumer channel.
func (t *Transport) SetHeartbeatHandler(func(raft.RPC)) {}
