package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/internal/future"
	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/transport"
	"github.com/heraldhq/herald/storage/raftstore"
)

// Group is this node's replica of the metadata group: the Raft instance,
// its stores and the in-memory state. All methods are safe for concurrent
// use. Group starts no goroutine of its own besides Raft's; the helper
// that waits on a Raft future for a caller whose ctx ended exits when Raft
// resolves the future, at the latest at Close. Close is idempotent.
type Group struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	trans  raft.Transport
	stores *raftstore.Stores
	fsm    *fsm

	closed    atomic.Bool // set first thing in Close
	closeOnce sync.Once
	closeErr  error
}

// New opens the replica in cfg.Dir and starts its Raft instance on trans,
// which the Group owns from then on (Raft closes it at Close). The state
// is rebuilt from the latest snapshot and the log after it. New does not
// bootstrap: a founding node calls Bootstrap, any other waits to be added
// by the leader (AddVoter or AddNonvoter). It returns an error for an
// invalid cfg or stores that cannot be opened.
func New(cfg Config, trans raft.Transport) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("group", "meta")
	if cfg.OnFatal == nil {
		cfg.OnFatal = func(err error) {
			log.Error("metadata replica cannot continue; stopping the process", "err", err)
			os.Exit(1)
		}
	}
	stores, err := raftstore.Open(raftstore.Config{Dir: cfg.Dir, Logger: raftlog.New(log), OnFatal: cfg.OnFatal})
	if err != nil {
		return nil, err
	}
	g := &Group{cfg: cfg, log: log, stores: stores, fsm: newFSM(log)}
	if err := g.start(trans); err != nil {
		_ = stores.Close() // best effort: report the start error
		return nil, err
	}
	return g, nil
}

func (g *Group) start(trans raft.Transport) error {
	// Stores that hold the bootstrap's term 1 but no log entry, no snapshot
	// and no vote belong to a founding replica whose bootstrap a crash cut
	// short: it promised nothing, so forgetting the term lets Bootstrap run
	// again. A higher term came from a leader or a candidate and is kept
	// (ResetPartialBootstrap): it is the replica's promise not to follow an
	// older leader.
	reset, err := g.stores.ResetPartialBootstrap()
	if err != nil {
		return fmt.Errorf("meta: read raft state: %w", err)
	}
	if reset {
		g.log.Warn("replica was stopped while bootstrapping; its term was cleared")
	}
	rc := g.cfg.raftConfig()
	rc.Logger = raftlog.New(g.log)
	r, err := raft.NewRaft(rc, g.fsm, g.stores.Log, g.stores.Stable, g.stores.Snapshots, trans)
	if err != nil {
		return fmt.Errorf("meta: start raft: %w", err)
	}
	g.raft, g.trans = r, trans
	transport.GateFollowerHeartbeats(trans, r)
	return nil
}

// HasState reports whether the replica has Raft state: it was bootstrapped
// or has joined the group (possibly before a restart). A node calls
// Bootstrap or asks to be added only when it has none. It returns ErrClosed
// after Close, or the stores' read error.
func (g *Group) HasState() (bool, error) {
	if g.closed.Load() {
		return false, ErrClosed
	}
	has, err := g.stores.HasState()
	if err != nil {
		return false, fmt.Errorf("meta: read raft state: %w", err)
	}
	return has, nil
}

// Bootstrap makes servers the group's first configuration. Every founding
// node calls it with the same servers (the first --meta-voters nodes as
// voters); the group elects a leader once a majority of them has. It
// returns nil if the replica already has exactly that configuration (a
// repeated call, or a restart before membership changed), and
// ErrBootstrapConflict if it has another one. It returns ErrClosed after
// Close.
func (g *Group) Bootstrap(servers []raft.Server) error {
	if g.closed.Load() {
		return ErrClosed
	}
	if len(servers) == 0 {
		return errors.New("meta: bootstrap needs at least one server")
	}
	err := g.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		g.log.Info("bootstrapped metadata group", "servers", len(servers))
		return nil
	case errors.Is(err, raft.ErrCantBootstrap):
		cur, cerr := g.Configuration()
		if cerr != nil {
			return cerr
		}
		if sameServers(cur, servers) {
			return nil
		}
		return fmt.Errorf("%w: have %s, asked for %s", ErrBootstrapConflict, describe(cur), describe(servers))
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	default:
		return fmt.Errorf("meta: bootstrap: %w", err)
	}
}

// sameServers reports whether a and b hold the same servers, in any order.
func sameServers(a, b []raft.Server) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(s raft.Server) string { return fmt.Sprintf("%s\x00%s\x00%d", s.ID, s.Address, s.Suffrage) }
	ka := make([]string, len(a))
	kb := make([]string, len(b))
	for i := range a {
		ka[i], kb[i] = key(a[i]), key(b[i])
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

func describe(servers []raft.Server) string {
	parts := make([]string, len(servers))
	for i, s := range servers {
		parts[i] = fmt.Sprintf("%s@%s/%v", s.ID, s.Address, s.Suffrage)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// State returns the replica's local copy of the metadata: the empty
// MetaState before InitCluster is applied, never nil. The value is shared
// and must not be modified; it never changes once returned (each change
// publishes a new value). It may lag the leader's; it is safe from any
// goroutine, also after Close.
func (g *Group) State() *clusterv1.MetaState { return g.fsm.cur.Load().state }

// Changed returns a channel that is closed when a state newer than the
// current one is published. To watch without missing a change, take the
// channel before reading the state, or use Watch, which returns both from
// the same instant:
//
//	for {
//		s, ch := g.Watch()
//		use(s)
//		select {
//		case <-ch:
//		case <-ctx.Done():
//			return
//		}
//	}
//
// Close does not close the channel; watchers stop on their own ctx.
func (g *Group) Changed() <-chan struct{} { return g.fsm.cur.Load().changed }

// Watch returns the current state (as State) and the channel that is
// closed when a newer state replaces it (as Changed), taken together.
func (g *Group) Watch() (*clusterv1.MetaState, <-chan struct{}) {
	v := g.fsm.cur.Load()
	return v.state, v.changed
}

// Propose replicates cmd and returns the state after this replica has
// applied it; the state is shared and must not be modified. Only the leader
// proposes. The error says whether the command may have been applied:
// *NotLeaderError or ErrNotApplied (it was not), ErrIndeterminate (it may
// have been; read the state), ErrClosed, or the command's domain error, a
// *storage.Error (it was applied and changed nothing; see Apply).
func (g *Group) Propose(ctx context.Context, cmd *clusterv1.MetaCommand) (*clusterv1.MetaState, error) {
	if err := g.precheck(ctx); err != nil {
		return nil, err
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: encode command: %w", ErrNotApplied, err)
	}
	f := g.raft.Apply(data, future.EnqueueTimeout(ctx))
	if err := future.Wait(ctx, f); err != nil {
		return nil, g.classify(err, ErrIndeterminate)
	}
	switch resp := f.Response().(type) {
	case *clusterv1.MetaState:
		return resp, nil
	case error:
		return nil, resp
	default:
		return nil, fmt.Errorf("meta: unexpected apply response %T", resp)
	}
}

// precheck fails fast, before anything is handed to Raft.
func (g *Group) precheck(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	if g.closed.Load() {
		return ErrClosed
	}
	if !g.IsLeader() {
		return g.notLeader()
	}
	return nil
}

// IsLeader reports whether this replica currently believes it leads. It is
// false after Close.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// Leader returns the leader's node id and Raft address as this replica
// knows them; both are empty when no leader is known.
func (g *Group) Leader() (id string, raftAddr string) {
	addr, sid := g.raft.LeaderWithID()
	return string(sid), string(addr)
}

// notLeader builds the error for a replica that does not lead.
func (g *Group) notLeader() error {
	id, addr := g.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// AddVoter adds the node as a voter, or promotes it if it is a non-voter.
// Only the leader changes membership; the error contract is Propose's,
// without domain errors: *NotLeaderError, ErrNotApplied, ErrIndeterminate
// or ErrClosed. It returns once the new configuration is committed.
func (g *Group) AddVoter(ctx context.Context, id, raftAddr string) error {
	if err := g.precheck(ctx); err != nil {
		return err
	}
	f := g.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, future.EnqueueTimeout(ctx))
	return g.membership(ctx, f, "add voter", "node", id)
}

// AddNonvoter adds the node as a non-voter: it receives the log and keeps a
// local copy of the metadata, but does not count towards the quorum. The
// contract is AddVoter's.
func (g *Group) AddNonvoter(ctx context.Context, id, raftAddr string) error {
	if err := g.precheck(ctx); err != nil {
		return err
	}
	f := g.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, future.EnqueueTimeout(ctx))
	return g.membership(ctx, f, "add non-voter", "node", id)
}

// TransferLeadership hands the leadership to voter id at raftAddr and
// waits until the transfer is done or failed. Leader only; the errors are
// AddVoter's.
func (g *Group) TransferLeadership(ctx context.Context, id, raftAddr string) error {
	if err := g.precheck(ctx); err != nil {
		return err
	}
	f := g.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(raftAddr))
	if err := future.Wait(ctx, f); err != nil {
		return g.classify(err, ErrNotApplied)
	}
	g.log.Info("leadership handed over", "to", id)
	return nil
}

// RemoveServer removes the node from the group. A leader that removes
// itself steps down once the change commits. The contract is AddVoter's.
// DemoteVoter makes a voter a non-voter: it keeps receiving the log, so
// its copy of the metadata stays current, but no longer counts towards
// the quorum. Leader only.
func (g *Group) DemoteVoter(ctx context.Context, id string) error {
	if err := g.precheck(ctx); err != nil {
		return err
	}
	return g.membership(ctx, g.raft.DemoteVoter(raft.ServerID(id), 0, future.EnqueueTimeout(ctx)), "demote voter %s", id)
}

func (g *Group) RemoveServer(ctx context.Context, id string) error {
	if err := g.precheck(ctx); err != nil {
		return err
	}
	f := g.raft.RemoveServer(raft.ServerID(id), 0, future.EnqueueTimeout(ctx))
	return g.membership(ctx, f, "remove server", "node", id)
}

func (g *Group) membership(ctx context.Context, f raft.Future, op string, args ...any) error {
	if err := future.Wait(ctx, f); err != nil {
		// An error that is not about leadership, shutdown or the deadline
		// is raft refusing the change before appending it.
		return g.classify(err, ErrNotApplied)
	}
	g.log.Info("membership changed: "+op, args...)
	return nil
}

// Configuration returns the group's latest Raft configuration as this
// replica knows it, which may include a change not yet committed. It
// returns ErrClosed after Close.
func (g *Group) Configuration() ([]raft.Server, error) {
	if g.closed.Load() {
		return nil, ErrClosed
	}
	f := g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("meta: configuration: %w", err)
	}
	return f.Configuration().Servers, nil
}

// Ready reports whether the replica knows a leader (or is it) and has
// applied InitCluster, so its local copy is usable. It is false after
// Close.
func (g *Group) Ready() bool {
	if g.closed.Load() {
		return false
	}
	_, id := g.raft.LeaderWithID()
	return id != "" && g.State().GetClusterId() != ""
}

// classify turns a Raft future's error into ours; unknown is the sentinel
// for errors raft gives that are none of the known ones.
func (g *Group) classify(err, unknown error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return g.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: the metadata group is busy", ErrNotApplied)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", ErrIndeterminate, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown),
		errors.Is(err, raft.ErrAbortedByRestore):
		// The entry may be committed by a later leader.
		return fmt.Errorf("%w: %w", ErrIndeterminate, err)
	default:
		return fmt.Errorf("%w: %w", unknown, err)
	}
}

// Close shuts Raft down (a leader of a group with other voters first tries
// to hand leadership over), which closes the transport, then closes the
// stores. It is idempotent: later calls return the first call's result.
// State, Watch and Changed keep working on the last state.
func (g *Group) Close() error { return g.close(true) }

// Kill closes the replica without handing leadership over, as a crash
// would leave it to its peers. For failover tests; Close after Kill is a
// no-op.
func (g *Group) Kill() error { return g.close(false) }

// close is Close; transfer false skips the leadership transfer, as a crash
// would.
func (g *Group) close(transfer bool) error {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		if transfer && g.IsLeader() && g.otherVoters() {
			if err := g.raft.LeadershipTransfer().Error(); err != nil {
				g.log.Debug("leadership transfer before shutdown failed", "err", err)
			}
		}
		transport.Stopping(g.trans)
		err := g.raft.Shutdown().Error()
		err = errors.Join(err, g.stores.Close())
		if err != nil {
			g.closeErr = fmt.Errorf("close metadata group: %w", err)
		}
	})
	return g.closeErr
}

// otherVoters reports whether the configuration has a voter besides this
// replica, to which leadership can move.
func (g *Group) otherVoters() bool {
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(g.cfg.NodeID) {
			return true
		}
	}
	return false
}

// Status is a point-in-time view of the metadata replica's Raft state.
type Status struct {
	State        string // raft's: Leader, Follower, Candidate, Shutdown
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastContact  time.Time // with a leader; zero on the leader, or never
}

// Status returns the replica's Raft status.
func (g *Group) Status() Status {
	return Status{
		State:        g.raft.State().String(),
		Term:         g.raft.CurrentTerm(),
		CommitIndex:  g.raft.CommitIndex(),
		AppliedIndex: g.raft.AppliedIndex(),
		LastContact:  g.raft.LastContact(),
	}
}
