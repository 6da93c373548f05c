package partition

import "github.com/hashicorp/raft"

// SetProposeHook makes Propose call fn after its leadership check and
// before it hands the command to Raft, or stops that with nil. Tests use
// it to hold proposals at that point and force an interleaving that load
// produces only now and then.
func SetProposeHook(p *Partition, fn func()) {
	if fn == nil {
		p.proposeHook.Store(nil)
		return
	}
	p.proposeHook.Store(&fn)
}

// SetApplyHook makes the replica's state machine call fn before it applies
// each batch, or stops that with nil: tests use it to make one replica's
// state machine slow.
func SetApplyHook(p *Partition, fn func()) {
	if fn == nil {
		p.fsm.applyHook.Store(nil)
		return
	}
	p.fsm.applyHook.Store(&fn)
}

// RaftOf returns the replica's Raft instance, for the tests that drive
// Raft directly: an abrupt shutdown, a transfer left running.
func RaftOf(p *Partition) *raft.Raft { return p.raft }

// FirstLogIndex returns the first index the replica's Raft log still
// holds: what a follower that needs an earlier entry cannot get but by a
// snapshot.
func FirstLogIndex(p *Partition) (uint64, error) { return p.stores.Log.FirstIndex() }
