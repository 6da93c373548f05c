package partition

import (
	"errors"

	"github.com/hashicorp/raft"
)

// maxStatelessScan bounds how many log entries one call of reflected
// reads; what it learns stays in Partition.stateless, so later calls go on
// from there.
const maxStatelessScan = 1024

// reflected returns the index the replica's state is current to: the
// state machine's applied index, and past it every committed entry that
// carries no state and is never given to the state machine — the no-op a
// new leader appends, barriers — and the hole a restored snapshot leaves
// in the log (raft burns an index past the log for it). A partition that
// has seen elections but no command since would otherwise look behind its
// leader's commit index for good: never caught up (so its node never
// ready), and linearizable reads on it would wait for an apply that does
// not come. The scan stops at the first entry that carries state.
func (p *Partition) reflected() uint64 {
	applied, _ := p.fsm.applied.get()
	from := max(applied, p.stateless.Load())
	commit := p.raft.CommitIndex()
	for n := 0; from < commit && n < maxStatelessScan; n++ {
		var l raft.Log
		err := p.stores.Log.GetLog(from+1, &l)
		switch {
		case errors.Is(err, raft.ErrLogNotFound) && p.raft.AppliedIndex() > from:
			// The hole of a restored snapshot: raft has restored it.
		case err != nil, l.Type != raft.LogNoop && l.Type != raft.LogBarrier:
			p.raiseStateless(from)
			return from
		}
		from++
	}
	p.raiseStateless(from)
	return from
}

// raiseStateless moves Partition.stateless up to index.
func (p *Partition) raiseStateless(index uint64) {
	for {
		old := p.stateless.Load()
		if index <= old || p.stateless.CompareAndSwap(old, index) {
			return
		}
	}
}
