package partition_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/cluster/transport"
	"github.com/heraldhq/herald/storage"
)

// group is the transport group every test partition uses.
const group = "p0"

// Liveness bounds. They are generous on purpose: the tests assert that
// things happen, and log how long they took.
const (
	electionWait = 20 * time.Second
	convergeWait = 30 * time.Second
	opTimeout    = 10 * time.Second
	pollStep     = 10 * time.Millisecond
	closeWait    = 30 * time.Second
)

// user is the author of every test command unless a test says otherwise.
const user = "alice"

// msgRestored is what the FSM logs when a snapshot replaced the state file.
const msgRestored = "restored state from snapshot"

// newLogSink returns the log of one replica ("node"); set PARTITION_TEST_LOG to see
// its Debug records.
func newLogSink(t *testing.T, node string) *testkit.LogSink {
	return testkit.NewLogSink(t, node, "PARTITION_TEST_LOG")
}

// replica is one member of a test partition group: its directory, its
// address and, while it runs, its Mux and Partition. The harness's
// goroutine owns it; tests that hand a Partition to another goroutine copy
// the pointer first.
type replica struct {
	t    *testing.T
	id   string
	addr string
	dir  string
	cfg  partition.Config
	logs *testkit.LogSink
	// wrap, if set, wraps the replica's Raft transport at each start.
	wrap func(raft.Transport) raft.Transport
	// redial is its Mux's RedialWindow (0: the default).
	redial time.Duration
	mux    *transport.Mux
	p      *partition.Partition
}

// running reports whether the replica is started.
func (r *replica) running() bool { return r.p != nil }

// start opens the replica from its directory with a new Mux listening on
// its address.
func (r *replica) start() {
	t := r.t
	t.Helper()
	if r.running() {
		t.Fatalf("start %s: already running", r.id)
	}
	var ln net.Listener
	// The port was ours a moment ago; the kernel may take a moment to let
	// go of it.
	testkit.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var err error
		ln, err = net.Listen("tcp", r.addr)
		return err
	})
	mux, err := transport.New(transport.Config{Listener: ln, RedialWindow: r.redial})
	if err != nil {
		_ = ln.Close()
		t.Fatalf("start %s: transport.New: %v", r.id, err)
	}
	trans, err := mux.NewTransport(group, nil)
	if err != nil {
		_ = mux.Close()
		t.Fatalf("start %s: NewTransport: %v", r.id, err)
	}
	var rt raft.Transport = trans
	if r.wrap != nil {
		rt = r.wrap(trans)
	}
	p, err := partition.New(r.cfg, rt)
	if err != nil {
		_ = trans.Close()
		_ = mux.Close()
		t.Fatalf("start %s: partition.New: %v", r.id, err)
	}
	r.mux, r.p = mux, p
}

// stop closes the Partition (a leader first hands leadership over), then
// the Mux, which frees the port.
func (r *replica) stop() {
	r.t.Helper()
	r.halt("stop", func(p *partition.Partition) { closeWithin(r.t, r.id, p, closeWait) })
}

// crash stops the replica as a crash would (Partition.Kill: no handover,
// the state file left unmarked), then the Mux.
func (r *replica) crash() {
	r.t.Helper()
	r.halt("crash", func(p *partition.Partition) {
		if err := p.Kill(); err != nil {
			r.t.Errorf("crash %s: Kill: %v", r.id, err)
		}
	})
}

// halt ends the running replica with end, then closes its Mux.
func (r *replica) halt(what string, end func(*partition.Partition)) {
	t := r.t
	t.Helper()
	if !r.running() {
		t.Fatalf("%s %s: not running", what, r.id)
	}
	p, mux := r.p, r.mux
	r.mux, r.p = nil, nil
	end(p)
	if err := mux.Close(); err != nil {
		t.Errorf("%s %s: Mux.Close: got %v, want nil", what, r.id, err)
	}
}

// closeWithin closes p, failing the test with every goroutine's stack
// if Close has not returned within d. A Close that hangs is left behind:
// the test fails rather than the whole package timing out.
func closeWithin(t *testing.T, id string, p *partition.Partition, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stop %s: Close: got %v, want nil", id, err)
		}
	case <-time.After(d):
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Fatalf("stop %s: Close still running after %v, want it to return; goroutines:\n%s", id, d, b.String())
	}
}

// statePath is the replica's state file.
func (r *replica) statePath() string { return filepath.Join(r.dir, partition.StateFile) }

// testGroup is a test partition group: replicas n1..nN, each with its own Mux
// on 127.0.0.1 and its own directory, all bootstrapped with the same
// server list.
type testGroup struct {
	t        *testing.T
	dir      string // the replicas' directories are in it
	tune     func(*partition.Config)
	wrap     func(id string, tr raft.Transport) raft.Transport
	redial   time.Duration // each Mux's RedialWindow
	replicas []*replica
}

// testConfig returns fast timers for tests; OnFatal fails the test instead
// of exiting.
func testConfig(t *testing.T) partition.Config {
	return partition.Config{
		HeartbeatTimeout:   200 * time.Millisecond,
		ElectionTimeout:    200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		MaxStale:           2 * time.Second,
		OnFatal: func(err error) {
			t.Errorf("OnFatal: %v", err)
		},
	}
}

// newGroup starts n replicas. tune, if not nil, adjusts each replica's
// configuration (its ID, NodeID, Dir, Bootstrap and Logger are set
// already). The group stops when the test ends.
func newGroup(t *testing.T, n int, tune func(*partition.Config)) *testGroup {
	t.Helper()
	return startGroup(t, n, &testGroup{tune: tune})
}

// newWrappedGroup is newGroup with each replica's Raft transport wrapped by
// wrap (nil: not wrapped).
func newWrappedGroup(t *testing.T, n int, tune func(*partition.Config),
	wrap func(id string, tr raft.Transport) raft.Transport) *testGroup {
	t.Helper()
	return startGroup(t, n, &testGroup{tune: tune, wrap: wrap})
}

// startGroup starts n replicas as g's tune, wrap and redial say.
func startGroup(t *testing.T, n int, g *testGroup) *testGroup {
	t.Helper()
	// The directory first: cleanups run last first, so the replicas stop
	// before their files are removed.
	g.t, g.dir = t, t.TempDir()
	t.Cleanup(func() {
		for _, r := range g.replicas {
			if r.running() {
				r.stop()
			}
		}
	})
	var lns []net.Listener
	var servers []raft.Server
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		lns = append(lns, ln)
		servers = append(servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(fmt.Sprintf("n%d", i+1)),
			Address:  raft.ServerAddress(ln.Addr().String()),
		})
	}
	// Free the ports and let each replica listen again, so start is the
	// one way a replica comes up.
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, s := range servers {
		g.replicas = append(g.replicas, g.newReplica(string(s.ID), string(s.Address), servers))
	}
	for _, r := range g.replicas {
		r.start()
	}
	return g
}

// newReplica describes a replica with its own directory; bootstrap is the
// server list it starts with (nil: it waits to be added).
func (g *testGroup) newReplica(id, addr string, bootstrap []raft.Server) *replica {
	t := g.t
	logs := newLogSink(t, id)
	cfg := testConfig(t)
	cfg.NodeID = id
	cfg.Dir = filepath.Join(g.dir, id)
	cfg.Bootstrap = bootstrap
	cfg.Logger = slog.New(logs)
	if g.tune != nil {
		g.tune(&cfg)
	}
	r := &replica{t: t, id: id, addr: addr, dir: cfg.Dir, cfg: cfg, logs: logs, redial: g.redial}
	if g.wrap != nil {
		r.wrap = func(tr raft.Transport) raft.Transport { return g.wrap(id, tr) }
	}
	return r
}

// addReplica starts a replica without Raft state on a new port and adds it
// to the group; it waits to be added to the Raft configuration.
func (g *testGroup) addReplica(id string) *replica {
	t := g.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	r := g.newReplica(id, addr, nil)
	g.replicas = append(g.replicas, r)
	r.start()
	return r
}

// running returns the replicas that are started.
func (g *testGroup) running() []*replica {
	var rs []*replica
	for _, r := range g.replicas {
		if r.running() {
			rs = append(rs, r)
		}
	}
	return rs
}

// byID returns the replica with id.
func (g *testGroup) byID(id string) *replica {
	for _, r := range g.replicas {
		if r.id == id {
			return r
		}
	}
	g.t.Fatalf("no replica %q", id)
	return nil
}

// followers returns the running replicas other than leader.
func (g *testGroup) followers(leader *replica) []*replica {
	return slices.DeleteFunc(g.running(), func(r *replica) bool { return r == leader })
}

// waitLeader waits until exactly one running replica leads and is ready
// for linearizable reads, and every other running replica names it as the
// leader. It logs how long that took.
func (g *testGroup) waitLeader() *replica {
	g.t.Helper()
	start := time.Now()
	leader := g.awaitLeader()
	g.t.Logf("leader %s after %v", leader.id, time.Since(start).Round(time.Millisecond))
	return leader
}

// awaitLeader is waitLeader without the log line, for loops.
// anyLeader returns the first replica seen leading, ready or not,
// polling without a pause.
func (g *testGroup) anyLeader() *replica {
	g.t.Helper()
	deadline := time.Now().Add(electionWait)
	for time.Now().Before(deadline) {
		for _, r := range g.running() {
			if r.p.IsLeader() {
				return r
			}
		}
		runtime.Gosched()
	}
	g.t.Fatalf("no replica leads after %v", electionWait)
	return nil
}

func (g *testGroup) awaitLeader() *replica {
	t := g.t
	t.Helper()
	var leader *replica
	testkit.CheckFor(t, electionWait, pollStep, func() error {
		leader = nil
		for _, r := range g.running() {
			if r.p.IsLeader() {
				if leader != nil {
					return fmt.Errorf("both %s and %s lead", leader.id, r.id)
				}
				leader = r
			}
		}
		if leader == nil {
			return errors.New("no replica leads")
		}
		if !leader.p.Ready() {
			return fmt.Errorf("leader %s is not ready", leader.id)
		}
		for _, r := range g.followers(leader) {
			if got := r.p.Status().LeaderID; got != leader.id {
				return fmt.Errorf("%s names leader %q, want %q", r.id, got, leader.id)
			}
		}
		return nil
	})
	return leader
}

// waitConverged waits until every running replica's state file has the
// same applied index and digest, and returns that index. It logs how long
// that took.
func (g *testGroup) waitConverged() uint64 {
	t := g.t
	t.Helper()
	start := time.Now()
	var index uint64
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		var first *replica
		var sum [32]byte
		for _, r := range g.running() {
			i, s, err := r.p.DB().Digest()
			if err != nil {
				return fmt.Errorf("%s: Digest: %v", r.id, err)
			}
			if first == nil {
				first, index, sum = r, i, s
				continue
			}
			if i != index {
				return fmt.Errorf("%s applied index: got %d, want %d (as %s)", r.id, i, index, first.id)
			}
			if s != sum {
				return fmt.Errorf("%s digest at index %d: got %x, want %x (as %s)", r.id, i, s, sum, first.id)
			}
		}
		return nil
	})
	t.Logf("%d replicas converged at index %d after %v", len(g.running()), index,
		time.Since(start).Round(time.Millisecond))
	return index
}

// Command builders. The proposer's clock is the wall clock, as in
// production; the state machine never reads one.

func command(u string) *clusterv1.Command {
	return &clusterv1.Command{Ts: timestamppb.Now(), User: u}
}

func createCmd(channel string) *clusterv1.Command {
	c := command(user)
	c.Op = &clusterv1.Command_CreateChannel{
		CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: channel}}
	return c
}

func joinCmd(u, channel string) *clusterv1.Command {
	c := command(u)
	c.Op = &clusterv1.Command_JoinChannel{
		JoinChannel: &heraldv1.JoinChannelRequest{ChannelId: channel}}
	return c
}

func postAs(u, channel, text, clientMsgID string) *clusterv1.Command {
	c := command(u)
	c.Op = &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{
		ChannelId: channel, Text: text, ClientMsgId: clientMsgID}}
	return c
}

func postCmd(channel, text, clientMsgID string) *clusterv1.Command {
	return postAs(user, channel, text, clientMsgID)
}

func editCmd(channel string, seq uint64, text string) *clusterv1.Command {
	c := command(user)
	c.Op = &clusterv1.Command_EditMessage{EditMessage: &heraldv1.EditMessageRequest{
		ChannelId: channel, Seq: seq, Text: text}}
	return c
}

func reactCmd(channel string, seq uint64, name string) *clusterv1.Command {
	c := command(user)
	c.Op = &clusterv1.Command_AddReaction{AddReaction: &heraldv1.AddReactionRequest{
		ChannelId: channel, Seq: seq, Name: name}}
	return c
}

func deleteCmd(channel string, seq uint64) *clusterv1.Command {
	c := command(user)
	c.Op = &clusterv1.Command_DeleteMessage{DeleteMessage: &heraldv1.DeleteMessageRequest{
		ChannelId: channel, Seq: seq}}
	return c
}

func trimCmd(channel string, cutoff uint64) *clusterv1.Command {
	c := command(user)
	c.Op = &clusterv1.Command_TrimEvents{TrimEvents: &clusterv1.TrimEvents{
		ChannelId: channel, Cutoff: cutoff}}
	return c
}

// propose proposes cmd with the default deadline and fails the test on
// any error.
func propose(t *testing.T, p *partition.Partition, cmd *clusterv1.Command) *storage.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	res, err := p.Propose(ctx, cmd)
	if err != nil {
		t.Fatalf("Propose %v: got error %v, want nil", cmd.GetOp(), err)
	}
	return res
}

// postN posts n messages to channel through p, texts prefix-1..prefix-n
// and no client_msg_id, and returns their seqs.
func postN(t *testing.T, p *partition.Partition, channel, prefix string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		res := propose(t, p, postCmd(channel, fmt.Sprintf("%s-%d", prefix, i+1), ""))
		seqs = append(seqs, res.Message.GetSeq())
	}
	return seqs
}

// history returns every message of channel, oldest first, read from p
// (linearizable unless stale).
func history(t *testing.T, p *partition.Partition, channel string, stale bool) []*heraldv1.Message {
	t.Helper()
	msgs, err := readHistory(t.Context(), p, channel, stale)
	if err != nil {
		t.Fatalf("history of %q: %v", channel, err)
	}
	return msgs
}

func readHistory(ctx context.Context, p *partition.Partition, channel string, stale bool) ([]*heraldv1.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var msgs []*heraldv1.Message
	err := p.Read(ctx, stale, func(r *storage.Reader) error {
		msgs = nil
		var after uint64
		for {
			resp, err := r.History(storage.Caller{User: user}, &heraldv1.GetHistoryRequest{
				ChannelId: channel, AfterSeq: after, Limit: storage.MaxPageSize, OldestFirst: true})
			if err != nil {
				return err
			}
			msgs = append(msgs, resp.GetMessages()...)
			if !resp.GetHasMore() {
				return nil
			}
			after = msgs[len(msgs)-1].GetSeq()
		}
	})
	return msgs, err
}

// headSeq returns channel's head seq as p sees it.
func headSeq(ctx context.Context, p *partition.Partition, channel string, stale bool) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var head uint64
	err := p.Read(ctx, stale, func(r *storage.Reader) error {
		ch, _, err := r.Channel(storage.Caller{User: user}, channel)
		head = ch.GetHeadSeq()
		return err
	})
	return head, err
}

// digest returns p's applied index and digest.
func digest(t *testing.T, p *partition.Partition) (uint64, [32]byte) {
	t.Helper()
	i, s, err := p.DB().Digest()
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	return i, s
}

// appliedIndex returns the state file's applied index.
func appliedIndex(t *testing.T, p *partition.Partition) uint64 {
	t.Helper()
	i, _, err := p.DB().AppliedIndex()
	if err != nil {
		t.Fatalf("AppliedIndex: %v", err)
	}
	return i
}

// texts returns the texts of msgs, for comparisons and messages.
func texts(msgs []*heraldv1.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.GetText())
	}
	return out
}

// checkNoDuplicates fails the test if two messages share a client_msg_id
// or a seq, or if seqs do not increase.
func checkNoDuplicates(t *testing.T, msgs []*heraldv1.Message) {
	t.Helper()
	ids := make(map[string]uint64)
	var last uint64
	for _, m := range msgs {
		if m.GetSeq() <= last {
			t.Errorf("history: seq %d after %d, want increasing", m.GetSeq(), last)
		}
		last = m.GetSeq()
		if id := m.GetClientMsgId(); id != "" {
			if prev, ok := ids[id]; ok {
				t.Errorf("history: client_msg_id %q at seqs %d and %d, want once", id, prev, m.GetSeq())
			}
			ids[id] = m.GetSeq()
		}
	}
}

// raftStat returns one of Raft's stats as a number.
func raftStat(t *testing.T, p *partition.Partition, key string) uint64 {
	t.Helper()
	v, ok := partition.RaftOf(p).Stats()[key]
	if !ok {
		t.Fatalf("raft stats lack %q", key)
	}
	var n uint64
	if _, err := fmt.Sscan(v, &n); err != nil {
		t.Fatalf("raft stat %s = %q: %v", key, v, err)
	}
	return n
}

// copyFile copies src to dst, syncing dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("read %s: %v", src, err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatalf("write %s: %v", dst, err)
	}
}

// eventSeqs returns the seqs of evs.
func eventSeqs(evs []*heraldv1.Event) []uint64 {
	var out []uint64
	for _, ev := range evs {
		out = append(out, ev.GetSeq())
	}
	return out
}

// checkGapFree fails the test unless evs have seqs first, first+1, ...
func checkGapFree(t *testing.T, evs []*heraldv1.Event, first uint64) {
	t.Helper()
	for i, ev := range evs {
		if want := first + uint64(i); ev.GetSeq() != want {
			t.Fatalf("event %d: got seq %d, want %d (seqs %s)", i, ev.GetSeq(), want, summarize(eventSeqs(evs)))
		}
	}
}

// summarize prints a long seq list compactly around its first break.
func summarize(seqs []uint64) string {
	var b strings.Builder
	for i, s := range seqs {
		if i > 0 && s != seqs[i-1]+1 {
			fmt.Fprintf(&b, "…%d | %d", seqs[i-1], s)
		} else if i == 0 {
			fmt.Fprintf(&b, "%d", s)
		}
	}
	if len(seqs) > 0 {
		fmt.Fprintf(&b, "…%d (%d events)", seqs[len(seqs)-1], len(seqs))
	}
	return b.String()
}

// collect reads from s until it has n events or total passes, and returns
// them.
func collect(t *testing.T, s *partition.Stream, n int, total time.Duration) []*heraldv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), total)
	defer cancel()
	var evs []*heraldv1.Event
	for len(evs) < n {
		got, err := s.Next(ctx, 100)
		if err != nil {
			t.Fatalf("Next after %d of %d events: %v", len(evs), n, err)
		}
		evs = append(evs, got...)
	}
	return evs
}

// configuration returns p's Raft configuration.
func configuration(t *testing.T, p *partition.Partition) partition.Configuration {
	t.Helper()
	c, err := p.Configuration()
	if err != nil {
		t.Fatalf("Configuration: %v", err)
	}
	return c
}
