// Package clustertest starts real Herald clusters inside a test process:
// N nodes, each with its own data directory, a real Raft transport on
// 127.0.0.1 and a real HTTP server for the internal ClusterService, with
// fast Raft timers. Nodes can be killed, restarted from their directories
// on the same ports, and added; with Options.TLS (certificates from NewCA)
// both ports serve TLS. With Options.Faults, RunSchedule runs a seeded
// fault schedule (package schedule) against clients that post and read,
// and checks what they saw (package check). It is for tests only.
//
// Helpers take a testing.TB, fail the test on error, and stop every node
// at the end of the test. Waits poll; none sleeps for a fixed time.
package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/faultnet"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/partition"
)

// Test timers: fast, so that failovers take a second or less, yet slow
// enough that a two-core machine running every package's tests under the
// race detector at once does not lose leaders to starvation (at 200 ms
// heartbeats and 100 ms leases it did, over and over; at 200 ms leases,
// now and then). The lease is as long as raft allows: a leader steps down
// no sooner than its followers start an election.
const (
	HeartbeatTimeout   = 400 * time.Millisecond
	ElectionTimeout    = 400 * time.Millisecond
	LeaderLeaseTimeout = 400 * time.Millisecond
	CommitTimeout      = 20 * time.Millisecond
)

// FastPartition returns c with the test timers.
func FastPartition(c partition.Config) partition.Config {
	c.HeartbeatTimeout, c.ElectionTimeout = HeartbeatTimeout, ElectionTimeout
	c.LeaderLeaseTimeout, c.CommitTimeout = LeaderLeaseTimeout, CommitTimeout
	return c
}

// FastMeta returns a metadata group configuration with the test timers.
func FastMeta() meta.Config {
	return meta.Config{HeartbeatTimeout: HeartbeatTimeout, ElectionTimeout: ElectionTimeout,
		LeaderLeaseTimeout: LeaderLeaseTimeout, CommitTimeout: CommitTimeout}
}

// Options shape a test cluster. Zero values mean the defaults.
type Options struct {
	// Nodes is how many nodes found the cluster; 0 means 3.
	Nodes int
	// Partitions is the partition count; 0 means 4.
	Partitions uint32
	// Secret authenticates node-to-node traffic; nil means none.
	Secret []byte
	// TLS, if non-nil, is every node's TLS setup (see NewCA): Raft and
	// HTTP ports serve TLS, mutual between nodes. Nil means plaintext.
	TLS *cluster.TLSConfigs
	// Partition tunes every replica (timers, snapshot thresholds); zero
	// timers mean fast test timers.
	Partition partition.Config
	// LogLevel for the nodes' logs, which go to the test's output; 0 means
	// warn.
	LogLevel slog.Level
	// Faults, if true, makes every node dial its peers (Raft and internal
	// RPC) through proxies of Cluster.Net, so that the test can cut, stall
	// and slow the links between nodes. Nodes added later with AddNode
	// are dialed directly by the nodes started before them.
	Faults bool
	// RequestTimeout is every node's cluster.Config.RequestTimeout; 0
	// means 10 s.
	RequestTimeout time.Duration
	// Space is every node's space limits; zero fields mean cluster's
	// defaults.
	Space cluster.SpaceConfig
	// WrapHTTP, if non-nil, wraps each node's HTTP handler, for example to
	// record the internal RPCs its peers send it; id is the node's.
	WrapHTTP func(id string, h http.Handler) http.Handler
	// Roles gives founding nodes, by id, the roles they serve; a node not
	// in it serves every role.
	Roles map[string][]string
	// Dir holds the nodes' data directories, Dir/n1, Dir/n2, ...; "" means
	// a new t.TempDir(). A test can mount a filesystem on a node's
	// directory before New.
	Dir string
}

// Cluster is a running test cluster.
type Cluster struct {
	t    testing.TB
	opts Options
	dir  string
	// Net holds the proxies between nodes with Options.Faults, else nil.
	Net *faultnet.Net

	mu    sync.Mutex // guards following
	nodes []*Node
}

// Node is one node of a test cluster.
type Node struct {
	ID   string
	Dir  string
	HTTP string // host:port of its HTTP server
	Raft string // host:port of its Raft port

	c       *Cluster
	peerMap map[string]cluster.PeerAddrs // with Options.Faults: the proxies to its peers
	mu      sync.Mutex                   // guards following
	roles   []string                     // cluster.Config.Roles at the next start; nil = all
	n       *cluster.Node
	srv     *http.Server
	// listeners reserved by newNode, so no other test takes the ports
	// before the first start; nil afterwards.
	httpLn, raftLn net.Listener
	shutdownErr    error // the HTTP server's Shutdown at the last Stop
}

// New starts a cluster of opts.Nodes nodes that found it together, and
// waits until every node is ready.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Partitions == 0 {
		opts.Partitions = 4
	}
	if opts.LogLevel == 0 {
		opts.LogLevel = slog.LevelWarn
	}
	if opts.Partition.HeartbeatTimeout == 0 {
		opts.Partition = FastPartition(opts.Partition)
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	c := &Cluster{t: t, opts: opts, dir: opts.Dir}
	if opts.Faults {
		// Registered before c.Close, so it runs after: cleanups run last
		// first, and the nodes must stop before their links go.
		c.Net = faultnet.New()
		t.Cleanup(func() { _ = c.Net.Close() })
	}
	t.Cleanup(c.Close)
	for i := range opts.Nodes {
		c.nodes = append(c.nodes, c.newNode(fmt.Sprintf("n%d", i+1)))
	}
	if opts.Faults {
		for _, from := range c.nodes {
			from.peerMap = map[string]cluster.PeerAddrs{}
			for _, to := range c.nodes {
				if from == to {
					continue
				}
				raftAddr, err := c.Net.Proxy(from.ID, to.ID, to.Raft)
				if err != nil {
					t.Fatal(err)
				}
				httpAddr, err := c.Net.Proxy(from.ID, to.ID, to.HTTP)
				if err != nil {
					t.Fatal(err)
				}
				from.peerMap[to.ID] = cluster.PeerAddrs{Raft: raftAddr, HTTP: httpAddr}
			}
		}
	}
	join := c.joinList()
	begin := time.Now()
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { n.start(join, opts.Nodes) })
	}
	wg.Wait()
	c.WaitReady(30 * time.Second)
	t.Logf("clustertest: %d nodes × %d partitions ready in %v", opts.Nodes, opts.Partitions,
		time.Since(begin).Round(time.Millisecond))
	return c
}

// newNode reserves ports (by listening on them) and a directory for a
// node.
func (c *Cluster) newNode(id string) *Node {
	n := &Node{ID: id, Dir: filepath.Join(c.dir, id), c: c, roles: c.opts.Roles[id]}
	n.httpLn, n.HTTP = reserve(c.t)
	n.raftLn, n.Raft = reserve(c.t)
	return n
}

func reserve(t testing.TB) (net.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, ln.Addr().String()
}

func (c *Cluster) joinList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var join []string
	for _, n := range c.nodes {
		join = append(join, n.HTTP)
	}
	return join
}

// start opens the node on its ports and directory.
func (n *Node) start(join []string, expect int) {
	t := n.c.t
	t.Helper()
	n.mu.Lock()
	httpLn, raftLn := n.httpLn, n.raftLn
	n.httpLn, n.raftLn = nil, nil
	roles := n.roles
	n.mu.Unlock()
	var err error
	if httpLn == nil {
		if httpLn, err = listen(n.HTTP); err != nil {
			t.Errorf("%s: listen http: %v", n.ID, err)
			return
		}
	}
	if raftLn == nil {
		if raftLn, err = listen(n.Raft); err != nil {
			httpLn.Close()
			t.Errorf("%s: listen raft: %v", n.ID, err)
			return
		}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: n.c.opts.LogLevel})).With("test_node", n.ID)
	mc := FastMeta()
	node, err := cluster.New(cluster.Config{
		NodeID:            n.ID,
		DataDir:           n.Dir,
		HTTPAddr:          n.HTTP,
		RaftListener:      raftLn,
		Join:              join,
		BootstrapExpect:   expect,
		Partitions:        n.c.opts.Partitions,
		Secret:            n.c.opts.Secret,
		TLS:               n.c.opts.TLS,
		PeerMap:           n.peerMap,
		ReconcileInterval: 100 * time.Millisecond,
		RequestTimeout:    n.c.opts.RequestTimeout,
		Partition:         n.c.opts.Partition,
		Meta:              mc,
		Space:             n.c.opts.Space,
		Roles:             roles,
		Logger:            log,
	})
	if err != nil {
		httpLn.Close()
		raftLn.Close()
		t.Errorf("%s: start: %v", n.ID, err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle(node.RPCHandler())
	var h http.Handler = mux
	if wrap := n.c.opts.WrapHTTP; wrap != nil {
		h = wrap(n.ID, mux)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(node.EndStreams)
	if tc := n.c.opts.TLS; tc != nil {
		// The server edits its TLS config: give it a copy.
		srv.TLSConfig = tc.HTTP.Clone()
		go func() { _ = srv.ServeTLS(httpLn, "", "") }() // returns when the node stops
	} else {
		go func() { _ = srv.Serve(httpLn) }() // returns when the node stops
	}
	n.mu.Lock()
	n.n, n.srv = node, srv
	n.mu.Unlock()
}

// listen listens on addr, retrying briefly: a port just released by a
// stopped node may take a moment to be free.
func listen(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// Node returns the running cluster.Node of the i-th node (0-based), or
// nil if it is stopped.
func (c *Cluster) Node(i int) *cluster.Node {
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	return n.Cluster()
}

// Member returns the i-th node (0-based).
func (c *Cluster) Member(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Members returns every node, running or not.
func (c *Cluster) Members() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Running returns the running nodes' cluster.Nodes.
func (c *Cluster) Running() []*cluster.Node {
	var out []*cluster.Node
	for _, m := range c.Members() {
		if n := m.Cluster(); n != nil {
			out = append(out, n)
		}
	}
	return out
}

// Cluster returns the node's cluster.Node, or nil if it is stopped.
func (n *Node) Cluster() *cluster.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.n
}

// Stop closes the node gracefully (leaders hand over first).
func (n *Node) Stop() { n.stop(true) }

// ShutdownErr is what the node's HTTP server's Shutdown returned at its
// last Stop: nil if every request had ended within 5 s.
func (n *Node) ShutdownErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.shutdownErr
}

// Kill stops the node as a crash would look to its peers.
func (n *Node) Kill() { n.stop(false) }

func (n *Node) stop(graceful bool) {
	n.mu.Lock()
	node, srv := n.n, n.srv
	n.n, n.srv = nil, nil
	for _, ln := range []net.Listener{n.httpLn, n.raftLn} {
		if ln != nil {
			ln.Close() // never started: release the reserved ports
		}
	}
	n.httpLn, n.raftLn = nil, nil
	n.mu.Unlock()
	if node == nil {
		return
	}
	var err error
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		serr := srv.Shutdown(ctx) // best effort: streams end with the node
		if serr != nil {
			n.c.t.Logf("clustertest: stop %s: HTTP server shutdown: %v", n.ID, serr)
		}
		n.mu.Lock()
		n.shutdownErr = serr
		n.mu.Unlock()
		err = node.Close()
	} else {
		// A crash: connections drop at once, replicas stop without
		// handing anything over.
		_ = srv.Close() // best effort: the node is going anyway
		err = node.Kill()
	}
	if err != nil {
		n.c.t.Logf("clustertest: stop %s: %v", n.ID, err)
	}
}

// Restart starts a stopped node again from its directory, on its ports.
func (n *Node) Restart() {
	n.c.t.Helper()
	n.start(n.c.joinList(), 0)
}

// SetRoles sets the roles the node serves from its next start (Restart);
// nil means every role.
func (n *Node) SetRoles(roles ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.roles = roles
}

// AddNode starts a new node that joins the cluster, serving roles (none
// given: every role).
func (c *Cluster) AddNode(roles ...string) *Node {
	c.t.Helper()
	c.mu.Lock()
	n := c.newNode(fmt.Sprintf("n%d", len(c.nodes)+1))
	n.roles = roles
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	n.start(c.joinList(), 0)
	return n
}

// Close stops every node; it is idempotent.
func (c *Cluster) Close() {
	if c.Net != nil {
		c.Net.Heal() // stalled links would hold graceful stops up
	}
	var wg sync.WaitGroup
	for _, n := range c.Members() {
		wg.Go(n.Stop)
	}
	wg.Wait()
}

// CheckFor polls fn every step until it returns true, failing the test
// after total.
func CheckFor(t testing.TB, total, step time.Duration, what string, fn func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !fn() {
		if time.Since(begin) > total {
			t.Fatalf("%s: not within %v", what, total)
		}
		time.Sleep(step)
	}
	return time.Since(begin)
}

// WaitReady waits until every running node is ready.
func (c *Cluster) WaitReady(total time.Duration) time.Duration {
	c.t.Helper()
	return CheckFor(c.t, total, 20*time.Millisecond, "every node ready", func() bool {
		for _, n := range c.Running() {
			if !n.Ready() {
				return false
			}
		}
		return true
	})
}

// Ring returns the ring as the first running node sees it.
func (c *Cluster) Ring() *heraldv1.GetRingResponse {
	c.t.Helper()
	nodes := c.Running()
	if len(nodes) == 0 {
		c.t.Fatal("clustertest: no node running")
	}
	r, err := nodes[0].GetRing(context.Background())
	if err != nil {
		c.t.Fatalf("clustertest: ring: %v", err)
	}
	return r
}

// Settled reports whether every partition has a leader, healthy replicas,
// and a configuration equal to its placement.
func Settled(r *heraldv1.GetRingResponse) bool {
	for _, p := range r.GetPartitions() {
		if p.GetHealth() != heraldv1.Partition_HEALTH_OK || p.GetLeader() == "" {
			return false
		}
		var got []string
		for _, rep := range p.GetReplicas() {
			got = append(got, rep.GetNodeId())
		}
		want := append([]string(nil), p.GetDesiredReplicas()...)
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return false
		}
	}
	return len(r.GetPartitions()) > 0
}

// WaitSettled waits until the ring is settled.
func (c *Cluster) WaitSettled(total time.Duration) time.Duration {
	c.t.Helper()
	return CheckFor(c.t, total, 50*time.Millisecond, "ring settled", func() bool { return Settled(c.Ring()) })
}

// Digests returns each running replica's (applied index, digest) of
// partition p, by node id.
func (c *Cluster) Digests(p uint32) map[string]Digest {
	out := map[string]Digest{}
	for _, m := range c.Members() {
		n := m.Cluster()
		if n == nil {
			continue
		}
		r := n.Replica(p)
		if r == nil {
			continue
		}
		index, sum, err := r.DB().Digest()
		if err != nil {
			continue
		}
		out[m.ID] = Digest{Index: index, Sum: sum}
	}
	return out
}

// Digest is one replica's applied index and state digest.
type Digest struct {
	Index uint64
	Sum   [32]byte
}

// WaitSameDigests waits until every replica of every partition has the
// same applied index and digest as the others.
func (c *Cluster) WaitSameDigests(total time.Duration) time.Duration {
	c.t.Helper()
	return CheckFor(c.t, total, 50*time.Millisecond, "replica digests equal", func() bool {
		for p := range c.Running()[0].Partitions() {
			var first *Digest
			for _, d := range c.Digests(p) {
				if first == nil {
					first = &d
				} else if d != *first {
					return false
				}
			}
		}
		return true
	})
}

// Command helpers for tests.

// Create returns a command creating a channel as user alice.
func Create(channel string) *clusterv1.Command {
	return &clusterv1.Command{User: "alice", Op: &clusterv1.Command_CreateChannel{
		CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: channel}}}
}

// Post returns a command posting text with a client_msg_id as alice.
func Post(channel, text, clientMsgID string) *clusterv1.Command {
	return &clusterv1.Command{User: "alice", Op: &clusterv1.Command_PostMessage{
		PostMessage: &heraldv1.PostMessageRequest{ChannelId: channel, Text: text, ClientMsgId: clientMsgID}}}
}

// Alice is the caller the command helpers use.
var Alice = cluster.Caller{User: "alice"}
