package partition

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/future"
	"github.com/heraldhq/herald/storage"
)

// restoreSlack is how far past the end of the log a restored snapshot is
// placed. hashicorp/raft gives a user snapshot the index max(last log
// index, the index it is handed) + 1, and the state inside must record
// that same index. Proposals are held off during a restore, but the log
// can still grow by a membership change between the moment the index is
// chosen and raft's restore; up to restoreSlack such entries leave raft's
// choice equal to the one written. A larger hole in the log costs nothing:
// followers are sent the snapshot either way.
const restoreSlack = 64

// writeGate holds proposals off while a snapshot is restored. It is
// mutex-guarded: a proposal enqueues under the read lock, so once a
// restore has set holding, every proposal is either in the log already or
// refused.
type writeGate struct {
	mu      sync.RWMutex // guards following
	holding bool
}

// apply hands data to raft unless a restore holds proposals off, which is
// ErrNotApplied: the router retries until the restore is over.
func (p *Partition) apply(ctx context.Context, data []byte) (raft.ApplyFuture, error) {
	p.gate.mu.RLock()
	defer p.gate.mu.RUnlock()
	if p.gate.holding {
		return nil, fmt.Errorf("%w: partition %d is restoring a snapshot", ErrNotApplied, p.cfg.ID)
	}
	return p.raft.Apply(data, future.EnqueueTimeout(ctx)), nil
}

// hold starts holding proposals off; false if a restore already does.
func (g *writeGate) hold() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holding {
		return false
	}
	g.holding = true
	return true
}

func (g *writeGate) release() {
	g.mu.Lock()
	g.holding = false
	g.mu.Unlock()
}

// RestoreUserSnapshot replaces the state of every replica of the
// partition with snap, a snapshot storage.Snapshot wrote (the caller has
// verified it), through this replica, which must lead. While it runs, the
// replica refuses proposals (ErrNotApplied). It waits for the proposals
// already in the log to apply (a Barrier), rebases snap to the index raft
// will give it, so that the leader and every follower replace their state
// and apply the entries that follow, and has raft install it here and on
// every follower. Then, still refusing proposals, it calls confirm with
// that index and the group's servers; confirm checks that every replica
// got there. It returns the index.
//
// Errors: *NotLeaderError or ErrNotApplied when a retry (through the
// leader) is safe: nothing was restored, or leadership was lost after the
// snapshot replaced this replica's state, which the next restore replaces
// again; a *storage.Error with kind ErrInvalidArgument for a bad snapshot;
// ErrIndeterminate when the snapshot replaced this replica's state and
// raft failed otherwise; confirm's error; or another error saying the
// restore did not take effect as it should, to be restored again.
func (p *Partition) RestoreUserSnapshot(ctx context.Context, snap io.Reader,
	confirm func(ctx context.Context, index uint64, servers []string) error) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	if p.closed.Load() {
		return 0, ErrClosed
	}
	if !p.IsLeader() {
		return 0, p.notLeader()
	}
	if !p.gate.hold() {
		return 0, fmt.Errorf("%w: partition %d is already restoring a snapshot", ErrNotApplied, p.cfg.ID)
	}
	defer p.gate.release()
	if err := future.Wait(ctx, p.raft.Barrier(future.EnqueueTimeout(ctx))); err != nil {
		if isLeadershipLoss(err) {
			return 0, p.notLeader()
		}
		return 0, fmt.Errorf("%w: partition %d: barrier before restore: %w", ErrNotApplied, p.cfg.ID, err)
	}
	index := p.raft.LastIndex() + 1 + restoreSlack
	rebased, err := os.CreateTemp(p.cfg.Dir, "restore-*.snap")
	if err != nil {
		return 0, fmt.Errorf("%w: partition %d: %w", ErrNotApplied, p.cfg.ID, err)
	}
	defer os.Remove(rebased.Name())
	defer rebased.Close()
	term, err := storage.RebaseSnapshot(snap, rebased, index)
	if errors.Is(err, storage.ErrBadSnapshot) {
		return 0, &storage.Error{Kind: storage.ErrInvalidArgument, Msg: err.Error()}
	}
	if err != nil {
		return 0, fmt.Errorf("%w: partition %d: rebase snapshot: %w", ErrNotApplied, p.cfg.ID, err)
	}
	size, err := rebased.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = rebased.Seek(0, io.SeekStart)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: partition %d: %w", ErrNotApplied, p.cfg.ID, err)
	}

	timeout := 5 * time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	p.fsm.restored.Store(0)
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index - 1, Term: term, Size: size}
	err = p.raft.Restore(meta, rebased, timeout)
	got := p.fsm.restored.Load()
	switch {
	case err != nil && got == 0:
		return 0, p.classifyRestore(err)
	case err != nil && isLeadershipLoss(err):
		// Installed here, perhaps nowhere else. Restoring again through the
		// next leader is safe: its log has every committed entry this
		// attempt started from plus its own election's, so it places the
		// snapshot past the index this replica now records, this replica
		// replaces its state once more, and the restore still reports
		// success only once confirm has checked every replica.
		p.log.Warn("lost leadership while restoring a saved snapshot; it must be restored again",
			"index", got, "err", err)
		return 0, p.notLeader()
	case err != nil:
		return 0, fmt.Errorf("%w: partition %d: the snapshot replaced this replica's state at index %d, "+
			"but may not have reached the others: %w", ErrIndeterminate, p.cfg.ID, got, err)
	case got != index:
		// More than restoreSlack entries reached the log meanwhile, or the
		// state was already past index: raft placed the snapshot elsewhere
		// than the state inside says, and replicas may disagree.
		return 0, fmt.Errorf("partition %d: the snapshot was to replace the state at index %d, but the "+
			"leader's state records %d; restore it again", p.cfg.ID, index, got)
	}
	p.log.Info("restored a saved snapshot on the group", "index", index)
	cfg, err := p.Configuration()
	if err != nil {
		return 0, err
	}
	var servers []string
	for _, m := range cfg.Members {
		servers = append(servers, m.ID)
	}
	if err := confirm(ctx, index, servers); err != nil {
		return 0, err
	}
	return index, nil
}

func isLeadershipLoss(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// classifyRestore turns the error of a raft restore that did not reach
// the state machine into ours: nothing was restored (raft refuses, for
// instance, while a membership change is uncommitted), so a retry is safe.
func (p *Partition) classifyRestore(err error) error {
	switch {
	case isLeadershipLoss(err):
		return p.notLeader()
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return fmt.Errorf("%w: partition %d: restore: %w", ErrNotApplied, p.cfg.ID, err)
}
