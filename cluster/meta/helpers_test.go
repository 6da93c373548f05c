package meta_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/transport"
)

// group is the transport group of the metadata replicas.
const group = "meta"

// Liveness bounds: generous on purpose; the tests log what they measured.
const (
	electionWait = 20 * time.Second
	convergeWait = 20 * time.Second
	opTimeout    = 10 * time.Second
	pollStep     = 10 * time.Millisecond
	closeWait    = 30 * time.Second
)

// msgRestored is what the FSM logs when it loads a snapshot.
const msgRestored = "restored metadata from snapshot"

// msgReset is what New logs when it undoes a partial bootstrap.
const msgReset = "replica was stopped while bootstrapping; its term was cleared"

// newLogSink returns the log of one replica ("node"); set META_TEST_LOG to see
// its Debug records.
func newLogSink(t *testing.T, node string) *testkit.LogSink {
	return testkit.NewLogSink(t, node, "META_TEST_LOG")
}

// replica is one node's metadata replica in a test cluster: its directory,
// its address and, while it runs, its Mux and Group. The test goroutine
// owns it.
type replica struct {
	t    *testing.T
	id   string
	addr string
	cfg  meta.Config
	logs *testkit.LogSink
	mux  *transport.Mux
	g    *meta.Group
}

func (r *replica) running() bool { return r.g != nil }

// start opens the replica from its directory with a new Mux on its
// address. It does not bootstrap.
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
	mux, err := transport.New(transport.Config{Listener: ln})
	if err != nil {
		_ = ln.Close()
		t.Fatalf("start %s: transport.New: %v", r.id, err)
	}
	trans, err := mux.NewTransport(group, nil)
	if err != nil {
		_ = mux.Close()
		t.Fatalf("start %s: NewTransport: %v", r.id, err)
	}
	g, err := meta.New(r.cfg, trans)
	if err != nil {
		_ = trans.Close()
		_ = mux.Close()
		t.Fatalf("start %s: meta.New: %v", r.id, err)
	}
	r.mux, r.g = mux, g
}

// stop closes the Group (a leader first hands leadership over), then the
// Mux, which frees the port.
func (r *replica) stop() {
	t := r.t
	t.Helper()
	if !r.running() {
		t.Fatalf("stop %s: not running", r.id)
	}
	g, mux := r.g, r.mux
	r.g, r.mux = nil, nil
	done := make(chan error, 1)
	go func() { done <- g.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stop %s: Close: got %v, want nil", r.id, err)
		}
	case <-time.After(closeWait):
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Fatalf("stop %s: Close still running after %v; goroutines:\n%s", r.id, closeWait, b.String())
	}
	if err := mux.Close(); err != nil {
		t.Errorf("stop %s: Mux.Close: got %v, want nil", r.id, err)
	}
}

// cluster is a test metadata group: replicas n1..nN, each with its own Mux
// on 127.0.0.1 and its own directory.
type cluster struct {
	t        *testing.T
	dir      string // the replicas' directories are in it
	replicas []*replica
	servers  []raft.Server // the founding configuration
}

// testConfig returns fast timers for tests.
func testConfig() meta.Config {
	return meta.Config{
		HeartbeatTimeout:   200 * time.Millisecond,
		ElectionTimeout:    200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
	}
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// newCluster starts n voters and bootstraps each with the same server
// list. The cluster stops when the test ends.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	// The directory first: cleanups run last first, so the replicas stop
	// before their files are removed.
	c := &cluster{t: t, dir: t.TempDir()}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			if r.running() {
				r.stop()
			}
		}
	})
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		r := c.newReplica(id)
		c.servers = append(c.servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(r.addr)})
	}
	for _, r := range c.replicas {
		r.start()
		if err := r.g.Bootstrap(c.servers); err != nil {
			t.Fatalf("%s: Bootstrap: got %v, want nil", r.id, err)
		}
	}
	return c
}

// newReplica describes a replica with its own directory and address, not
// started.
func (c *cluster) newReplica(id string) *replica {
	logs := newLogSink(c.t, id)
	cfg := testConfig()
	cfg.NodeID = id
	cfg.Dir = filepath.Join(c.dir, id)
	cfg.Logger = slog.New(logs)
	r := &replica{t: c.t, id: id, addr: freeAddr(c.t), cfg: cfg, logs: logs}
	c.replicas = append(c.replicas, r)
	return r
}

// addReplica starts a replica without Raft state; it waits to be added.
func (c *cluster) addReplica(id string) *replica {
	r := c.newReplica(id)
	r.start()
	return r
}

func (c *cluster) running() []*replica {
	var rs []*replica
	for _, r := range c.replicas {
		if r.running() {
			rs = append(rs, r)
		}
	}
	return rs
}

// followers returns the running replicas other than leader.
func (c *cluster) followers(leader *replica) []*replica {
	var rs []*replica
	for _, r := range c.running() {
		if r != leader {
			rs = append(rs, r)
		}
	}
	return rs
}

// waitLeader waits until exactly one running replica leads and every other
// names it, and logs how long that took.
func (c *cluster) waitLeader() *replica {
	t := c.t
	t.Helper()
	start := time.Now()
	var leader *replica
	testkit.CheckFor(t, electionWait, pollStep, func() error {
		leader = nil
		for _, r := range c.running() {
			if r.g.IsLeader() {
				if leader != nil {
					return fmt.Errorf("both %s and %s lead", leader.id, r.id)
				}
				leader = r
			}
		}
		if leader == nil {
			return errors.New("no replica leads")
		}
		for _, r := range c.followers(leader) {
			if id, _ := r.g.Leader(); id != leader.id {
				return fmt.Errorf("%s names leader %q, want %q", r.id, id, leader.id)
			}
		}
		return nil
	})
	t.Logf("leader %s after %v", leader.id, time.Since(start).Round(time.Millisecond))
	return leader
}

// waitSame waits until every running replica's state equals want, and logs
// how long that took.
func (c *cluster) waitSame(want *clusterv1.MetaState) {
	t := c.t
	t.Helper()
	start := time.Now()
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		for _, r := range c.running() {
			if got := r.g.State(); !proto.Equal(got, want) {
				return fmt.Errorf("%s state at epoch %d: got %v, want %v", r.id, got.GetEpoch(), got, want)
			}
		}
		return nil
	})
	t.Logf("%d replicas at epoch %d after %v", len(c.running()), want.GetEpoch(), time.Since(start).Round(time.Millisecond))
}

// propose proposes cmd on g with the default deadline and fails the test
// on any error.
func propose(t *testing.T, g *meta.Group, cmd *clusterv1.MetaCommand) *clusterv1.MetaState {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	s, err := g.Propose(ctx, cmd)
	if err != nil {
		t.Fatalf("Propose %v: got error %v, want nil", cmd.GetOp(), err)
	}
	return s
}

// tryPropose proposes cmd on g with the default deadline.
func tryPropose(t *testing.T, g *meta.Group, cmd *clusterv1.MetaCommand) (*clusterv1.MetaState, error) {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	return g.Propose(ctx, cmd)
}

// ids returns the ids of rs.
func ids(rs []*replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.id)
	}
	return out
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
