package partition

import (
	"context"
	"sync"
)

// appliedIndex is the highest Raft index the replica's state machine has
// processed, with a way to wait for it to pass a given index. The state
// file records the same index, but only the FSM goroutine knows when it
// moves; raft.AppliedIndex moves earlier, when the main loop hands entries
// to the FSM goroutine, so it cannot tell a reader that the state has
// them. It is mutex-guarded.
type appliedIndex struct {
	mu      sync.Mutex // guards following
	index   uint64
	changed chan struct{} // closed and replaced when index moves
}

func newAppliedIndex(index uint64) *appliedIndex {
	return &appliedIndex{index: index, changed: make(chan struct{})}
}

// advance records that the state machine has processed index.
func (a *appliedIndex) advance(index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if index <= a.index {
		return
	}
	a.index = index
	close(a.changed)
	a.changed = make(chan struct{})
}

// get returns the index and a channel closed when it moves past it.
func (a *appliedIndex) get() (uint64, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index, a.changed
}

// wait waits until the index is at least index, or until done reports,
// for an index that will not move, that the state already reflects index.
// It returns ctx's error if ctx ends first.
func (a *appliedIndex) wait(ctx context.Context, index uint64, done func(applied uint64) bool) error {
	for {
		applied, changed := a.get()
		if applied >= index || done(applied) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
