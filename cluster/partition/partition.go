package partition

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/internal/future"
	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/transport"
	"github.com/heraldhq/herald/storage"
	"github.com/heraldhq/herald/storage/raftstore"
)

// StateFile is the name of the state file inside a replica directory.
const StateFile = "state.db"

// Partition is one replica of a partition's Raft group: the Raft instance,
// its stores, the state file and the event feed. All methods are safe for
// concurrent use. Close is idempotent.
type Partition struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	trans  raft.Transport
	stores *raftstore.Stores
	db     *storage.DB
	feed   *Feed
	fsm    *fsm
	gate   writeGate // holds proposals off while a snapshot is restored
	nudge  nudger    // tells followers of the last commit at once
	trim   *trimmer  // proposes the trims of event retention while leading

	// readyTerm is the term in which this replica, as leader, completed a
	// Barrier: every entry of earlier terms is applied, so linearizable
	// reads may be served from its state.
	readyTerm atomic.Uint64
	barrier   chan struct{} // size 1: a lock on the Barrier that sets readyTerm, usable with ctx
	// stateless is the highest index up to which the state is known to
	// be current although the state machine has not applied that far:
	// the entries after its applied index carry no state (see reflected).
	stateless atomic.Uint64

	// proposeHook, if set (tests only, see export_test.go), runs in
	// Propose between the leadership check and the hand-off to Raft.
	proposeHook atomic.Pointer[func()]

	closed    atomic.Bool        // set first thing in Close
	stop      context.CancelFunc // ends watchLeadership
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New opens the replica in cfg.Dir and starts its Raft instance on trans.
// A replica without Raft state is bootstrapped with cfg.Bootstrap, if set.
func New(cfg Config, trans raft.Transport) (*Partition, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("partition", cfg.ID)
	if cfg.OnFatal == nil {
		cfg.OnFatal = func(err error) {
			log.Error("replica cannot continue; stopping the process", "err", err)
			os.Exit(1)
		}
	}
	stores, err := raftstore.Open(raftstore.Config{Dir: cfg.Dir, Shared: cfg.SharedLog, Logger: raftlog.New(log), OnFatal: cfg.OnFatal})
	if err != nil {
		return nil, err
	}
	db, err := openState(cfg, log)
	if err != nil {
		_ = stores.Close() // best effort: report the open error
		return nil, err
	}
	p := &Partition{cfg: cfg, log: log, stores: stores, db: db, feed: newFeed(db, 2*cfg.ElectionTimeout),
		barrier: make(chan struct{}, 1)}
	p.nudge.delay = cfg.CommitNudge
	if err := p.start(trans); err != nil {
		_ = db.Close()     // best effort: report the start error
		_ = stores.Close() // best effort: report the start error
		return nil, err
	}
	return p, nil
}

// openState opens the replica's state file. Its commits are not fsynced
// (storage.Options.DeferSync) unless cfg.SyncStateFile: what is durable is
// the Raft log and the last snapshot, and a state file that was not closed
// cleanly is discarded, so that raft restores the snapshot into an empty
// one at start and applies the log after it again. Until then the replica
// is behind, and serves nothing it has not applied (DESIGN.md).
func openState(cfg Config, log *slog.Logger) (*storage.DB, error) {
	path := filepath.Join(cfg.Dir, StateFile)
	opts := cfg.Storage
	opts.DeferSync = !cfg.SyncStateFile
	opts.NoRoom = func(err error) {
		if err != nil {
			log.Error(logNoRoom, "err", err)
		} else {
			log.Info(logRoomAgain)
		}
	}
	db, err := storage.Open(path, opts)
	if !errors.Is(err, storage.ErrUnclean) {
		return db, err
	}
	log.Warn("state file was not closed cleanly; rebuilding it from the last snapshot and the Raft log", "file", path)
	if err := storage.Remove(path); err != nil {
		return nil, fmt.Errorf("discard the state file: %w", err)
	}
	return storage.Open(path, opts)
}

func (p *Partition) start(trans raft.Transport) error {
	rc := p.cfg.raftConfig()
	rc.Logger = raftlog.New(p.log)
	reset := false
	if len(p.cfg.Bootstrap) > 0 {
		var err error
		if reset, err = p.stores.ResetPartialBootstrap(); err != nil {
			return fmt.Errorf("partition %d: read raft state: %w", p.cfg.ID, err)
		}
		if reset {
			p.log.Warn("replica was stopped while bootstrapping; bootstrapping it again")
		}
	}
	has, err := p.stores.HasState()
	if err != nil {
		return fmt.Errorf("partition %d: read raft state: %w", p.cfg.ID, err)
	}
	// A bootstrap cut short promised nothing: starting over is not amnesia.
	if !has && !reset && p.cfg.RequireState {
		return fmt.Errorf("%w: partition %d in %s", ErrStateLost, p.cfg.ID, p.cfg.Dir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f, err := newFSM(p.db, p.feed, p.log, p.cfg.OnFatal, ctx.Done())
	if err != nil {
		cancel()
		return fmt.Errorf("partition %d: %w", p.cfg.ID, err)
	}
	p.fsm = f
	f.onApplied = p.nudge.applied
	f.obs = p.cfg.Observe
	p.trim = newTrimmer(p, p.cfg.EventRetention)
	f.onEvents = p.trim.applied
	r, err := raft.NewRaft(rc, f, p.stores.Log, p.stores.Stable, p.stores.Snapshots, trans)
	if err != nil {
		cancel()
		return fmt.Errorf("partition %d: start raft: %w", p.cfg.ID, err)
	}
	p.raft, p.trans = r, trans
	p.nudge.start(r, rc, trans, p.stores.Log)
	p.trim.raft.Store(r)
	transport.GateFollowerHeartbeats(trans, r)
	transport.HoldNudges(trans, r)
	p.stop = cancel
	p.wg.Go(func() { p.watchLeadership(ctx) })
	p.wg.Go(func() { p.trim.run(ctx) })
	if c := p.cfg.Observe.LeaderChange; c != nil {
		p.wg.Go(func() { p.countLeaderChanges(ctx, c) })
	}
	if !has && len(p.cfg.Bootstrap) > 0 {
		err := r.BootstrapCluster(raft.Configuration{Servers: p.cfg.Bootstrap}).Error()
		if err != nil {
			_ = r.Shutdown().Error() // best effort: report the bootstrap error
			return fmt.Errorf("partition %d: bootstrap: %w", p.cfg.ID, err)
		}
		p.log.Info("bootstrapped replica group", "servers", len(p.cfg.Bootstrap))
	}
	return nil
}

// HasState reports whether the replica has Raft state: it was
// bootstrapped, or a leader has sent it its term or entries.
func (p *Partition) HasState() bool {
	has, err := p.stores.HasState()
	return err == nil && has
}

// ID returns the partition number.
func (p *Partition) ID() uint32 { return p.cfg.ID }

// Feed returns the replica's event feed.
func (p *Partition) Feed() *Feed { return p.feed }

// DB returns the state file, for digests and tests.
func (p *Partition) DB() *storage.DB { return p.db }

// IsLeader reports whether this replica currently believes it leads.
func (p *Partition) IsLeader() bool { return p.raft.State() == raft.Leader }

// notLeader builds the error for a replica that does not lead.
func (p *Partition) notLeader() error {
	addr, id := p.raft.LeaderWithID()
	return &NotLeaderError{Partition: p.cfg.ID, LeaderID: string(id), LeaderAddr: string(addr)}
}

// Propose replicates cmd and returns its result once a majority has it in
// its fsynced log and this replica has applied it. The error says whether
// the command may have been applied: ErrNotLeader or ErrNotApplied (it was
// not), ErrIndeterminate (it may have been; retry only with the same
// client_msg_id), or the command's domain error (*storage.Error; it was
// applied and changed nothing).
func (p *Partition) Propose(ctx context.Context, cmd *clusterv1.Command) (*storage.Result, error) {
	pd, err := p.Submit(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return pd.Wait(ctx)
}

// Submit proposes cmd and returns without waiting for it to commit:
// commands submitted one after another enter the log in that order while
// this replica leads. The error is ErrNotLeader, ErrNotApplied or
// ErrClosed (nothing was proposed); Wait gives the outcome.
func (p *Partition) Submit(ctx context.Context, cmd *clusterv1.Command) (*Pending, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	if p.closed.Load() {
		return nil, ErrClosed
	}
	if !p.IsLeader() {
		return nil, p.notLeader()
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: encode command: %w", ErrNotApplied, err)
	}
	if hook := p.proposeHook.Load(); hook != nil {
		(*hook)()
	}
	f, err := p.apply(ctx, data)
	if err != nil {
		return nil, err
	}
	return &Pending{p: p, f: f}, nil
}

// Pending is a submitted command on its way through the log.
type Pending struct {
	p *Partition
	f raft.ApplyFuture
}

// Wait returns the command's result once a majority has it in its fsynced
// log and this replica has applied it, with Propose's errors.
func (pd *Pending) Wait(ctx context.Context) (*storage.Result, error) {
	if err := future.Wait(ctx, pd.f); err != nil {
		return nil, pd.p.classify(err)
	}
	switch resp := pd.f.Response().(type) {
	case *storage.Result:
		return resp, nil
	case error:
		return nil, resp
	default:
		return nil, fmt.Errorf("partition %d: unexpected apply response %T", pd.p.cfg.ID, resp)
	}
}

// classify turns a raft future's error into ours.
func (p *Partition) classify(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return p.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: partition %d is busy", ErrNotApplied, p.cfg.ID)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", ErrIndeterminate, err)
	default:
		// ErrLeadershipLost, ErrRaftShutdown, ErrAbortedByRestore: the
		// entry may be committed by a later leader.
		return fmt.Errorf("%w: partition %d: %w", ErrIndeterminate, p.cfg.ID, err)
	}
}

// Read runs fn against the replica's state. A linearizable read (stale
// false) is served only by the leader, by read-index: once it has applied
// every entry of earlier terms (one Barrier per term), it records its
// commit index, confirms with a quorum that it still leads, waits until
// its state machine has applied that index, and then runs fn. So fn sees
// every write acknowledged before Read was called, and everything a
// follower may already have applied and published. Read returns a
// *NotLeaderError on a follower. A stale read runs fn on any replica that
// has heard from a leader within MaxStale (ErrTooStale if not).
func (p *Partition) Read(ctx context.Context, stale bool, fn func(*storage.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.closed.Load() {
		return ErrClosed
	}
	if p.cfg.UnsafeReadLocal {
		return p.db.View(fn)
	}
	if stale {
		if !p.IsLeader() && time.Since(p.raft.LastContact()) > p.cfg.MaxStale {
			return fmt.Errorf("%w: partition %d last heard from a leader %v ago",
				ErrTooStale, p.cfg.ID, time.Since(p.raft.LastContact()).Round(time.Millisecond))
		}
		// A stale read may lag, so a state file without room for what it
		// holds still serves what it committed.
		return p.db.ViewCommitted(fn)
	}
	if !p.IsLeader() {
		return p.notLeader()
	}
	term, err := p.awaitReady(ctx)
	if err != nil {
		return err
	}
	index := p.raft.CommitIndex()
	if err := future.Wait(ctx, p.raft.VerifyLeader()); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return p.notLeader()
		}
		return fmt.Errorf("partition %d: verify leader: %w", p.cfg.ID, err)
	}
	// VerifyLeader may have succeeded in a later term, after this replica
	// lost leadership and won it back, and a leader in between may have
	// acknowledged writes after index. Still in the barrier's term, the
	// replica led throughout, and index was its commit index.
	if p.raft.CurrentTerm() != term {
		return p.notLeader()
	}
	if err := p.waitApplied(ctx, index); err != nil {
		return err
	}
	return p.db.View(fn)
}

// waitApplied waits until the state machine reflects every committed
// entry up to index. Entries the state machine never sees (no-ops and
// barriers) change no state, so a state machine whose applied index is
// below index already reflects it when only such entries lie between, or
// the index a restored snapshot burnt.
func (p *Partition) waitApplied(ctx context.Context, index uint64) error {
	return p.fsm.applied.wait(ctx, index, func(uint64) bool { return p.reflected() >= index })
}

// awaitReady makes sure a Barrier has completed in the current term, and
// returns that term.
func (p *Partition) awaitReady(ctx context.Context) (uint64, error) {
	term := p.raft.CurrentTerm()
	if p.readyTerm.Load() == term {
		return term, nil
	}
	select {
	case p.barrier <- struct{}{}:
		defer func() { <-p.barrier }()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if p.readyTerm.Load() == term {
		return term, nil
	}
	if err := future.Wait(ctx, p.raft.Barrier(future.EnqueueTimeout(ctx))); err != nil {
		// A leader handing over refuses barriers: it is about to stop leading,
		// and the reader should look for the next one.
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return 0, p.notLeader()
		}
		return 0, fmt.Errorf("partition %d: barrier: %w", p.cfg.ID, err)
	}
	// The barrier committed while this replica led, so it led throughout
	// term: a leader that loses leadership fails its pending futures.
	p.readyTerm.Store(term)
	return term, nil
}

// watchLeadership runs the Barrier of each new leadership at once, so the
// replica is ready for reads before the first one arrives. It exits when
// ctx ends (Close).
func (p *Partition) watchLeadership(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-p.raft.LeaderCh():
			p.log.Info("leadership changed", "leader", leader, "term", p.raft.CurrentTerm())
			if leader {
				p.becomeReady(ctx)
			}
		}
	}
}

// becomeReady runs the barrier of a new leadership, again after a pause
// while it fails and the replica still leads: a leader refuses barriers
// while it hands over, and a handover that fails leaves it leading, and
// not Ready until a read would run the barrier. raft keeps the latest
// leadership change for LeaderCh meanwhile.
func (p *Partition) becomeReady(ctx context.Context) {
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, time.Second) {
		_, err := p.awaitReady(ctx)
		if err == nil || !p.IsLeader() {
			return
		}
		p.log.Debug("barrier after election failed", "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Ready reports whether the replica is the leader and has applied every
// earlier term's entries, or is a follower in contact with a leader.
func (p *Partition) Ready() bool {
	if p.IsLeader() {
		return p.readyTerm.Load() == p.raft.CurrentTerm()
	}
	_, id := p.raft.LeaderWithID()
	return id != "" && time.Since(p.raft.LastContact()) <= p.cfg.MaxStale
}

// Status is a point-in-time view of the replica.
type Status struct {
	State       string
	Term        uint64
	LeaderID    string
	CommitIndex uint64
	// AppliedIndex is the last index the replica's state reflects: what
	// the state machine has applied, and the entries after it that carry
	// no state (raft's own applied index moves earlier, when entries are
	// handed to the state machine).
	AppliedIndex uint64
	LastIndex    uint64 // of the log, or of the latest snapshot if later
	LastContact  time.Time
}

// appliedIndex is the state machine's applied index.
func (p *Partition) appliedIndex() uint64 { return p.reflected() }

// Status returns the replica's Raft status.
func (p *Partition) Status() Status {
	_, id := p.raft.LeaderWithID()
	return Status{
		State:        p.raft.State().String(),
		Term:         p.raft.CurrentTerm(),
		LeaderID:     string(id),
		CommitIndex:  p.raft.CommitIndex(),
		AppliedIndex: p.appliedIndex(),
		LastIndex:    p.raft.LastIndex(),
		LastContact:  p.raft.LastContact(),
	}
}

// Close shuts Raft down (a leader first tries to hand leadership over),
// then closes the stores and the state file. It is idempotent.
func (p *Partition) Close() error { return p.close(true) }

// Kill stops the replica the way a crash would, as far as the others can
// tell: no leadership transfer, and the state file is left unmarked, so
// that the next start rebuilds it as after a crash (the files themselves
// are closed). For tests of failover; idempotent, and Close after Kill is
// a no-op.
func (p *Partition) Kill() error { return p.close(false) }

func (p *Partition) close(handOver bool) error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		// First, so that an FSM waiting for room in the state file gives
		// up and raft's loop, which may wait on it, can hand over.
		p.stop()
		p.feed.close()
		if handOver && p.IsLeader() && len(p.raft.GetConfiguration().Configuration().Servers) > 1 {
			if err := p.raft.LeadershipTransfer().Error(); err != nil {
				p.log.Debug("leadership transfer before shutdown failed", "err", err)
			}
		}
		transport.Stopping(p.trans)
		err := p.raft.Shutdown().Error()
		p.wg.Wait()
		closeDB := p.db.Close
		if !handOver {
			closeDB = p.db.Abandon
		}
		err = errors.Join(err, p.stores.Close(), closeDB())
		if err != nil {
			p.closeErr = fmt.Errorf("close partition %d: %w", p.cfg.ID, err)
		}
	})
	return p.closeErr
}
