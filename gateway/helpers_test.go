package gateway_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/gateway"
)

// node is a real one-node Herald for tests: real Raft groups over a real
// TCP transport, real bbolt files in t.TempDir(), and the gateway on a
// real HTTP server on 127.0.0.1.
type node struct {
	t        testing.TB
	Node     *cluster.Node
	Gateway  *gateway.Server
	URL      string // http://127.0.0.1:port
	Addr     string // 127.0.0.1:port
	Channels heraldv1connect.ChannelServiceClient
	Messages heraldv1connect.MessageServiceClient
	srv      *http.Server
}

// nodeOptions tweaks startNode.
type nodeOptions struct {
	dir      string // data dir; "" = a new t.TempDir()
	gateway  gateway.Config
	client   *http.Client // for n.Channels and n.Messages; nil = http.DefaultClient
	logLevel slog.Leveler // nil = warn
	// readHeaderTimeout, if positive, replaces the HTTP server's
	// ReadHeaderTimeout.
	readHeaderTimeout time.Duration
	// wrap, if set, returns what the gateway is given as its cluster
	// instead of the node itself (a pass-through that observes calls).
	wrap func(*cluster.Node) gateway.Cluster
	// partition, if set, adjusts the replicas' configuration.
	partition func(*partition.Config)
	// metrics serves the node's series at /metrics with the gateway's, as
	// herald server does (unless gateway.Metrics is set).
	metrics bool
}

// startNode starts a node with 4 partitions and fast Raft timers, waits
// until it is ready, and stops it at the end of the test.
func startNode(t testing.TB, o nodeOptions) *node {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.logLevel == nil {
		o.logLevel = slog.LevelWarn
	}
	if o.client == nil {
		o.client = http.DefaultClient
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: o.logLevel}))
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := partition.DefaultConfig()
	pc.HeartbeatTimeout = 100 * time.Millisecond
	pc.ElectionTimeout = 100 * time.Millisecond
	pc.LeaderLeaseTimeout = 50 * time.Millisecond
	if o.partition != nil {
		o.partition(&pc)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := cluster.New(cluster.Config{
		NodeID:          "n1",
		DataDir:         o.dir,
		HTTPAddr:        ln.Addr().String(),
		RaftListener:    raftLn,
		BootstrapExpect: 1,
		Partitions:      4,
		Partition:       pc,
		Meta: meta.Config{HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
			LeaderLeaseTimeout: 50 * time.Millisecond},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.gateway.Logger == nil {
		o.gateway.Logger = log
	}
	if o.metrics && o.gateway.Metrics == nil {
		o.gateway.Metrics = prometheus.NewRegistry()
		o.gateway.Metrics.MustRegister(n.Metrics(), collectors.NewGoCollector())
	}
	var cl gateway.Cluster = n
	if o.wrap != nil {
		cl = o.wrap(n)
	}
	gw, err := gateway.New(o.gateway, cl)
	if err != nil {
		t.Fatal(err)
	}
	srv := gateway.NewHTTPServer(gw.Handler(), log)
	if o.readHeaderTimeout > 0 {
		srv.ReadHeaderTimeout = o.readHeaderTimeout
	}
	go func() { _ = srv.Serve(ln) }() // returns ErrServerClosed at cleanup
	tn := &node{t: t, Node: n, Gateway: gw, srv: srv, Addr: ln.Addr().String(),
		URL: "http://" + ln.Addr().String()}
	tn.Channels = heraldv1connect.NewChannelServiceClient(o.client, tn.URL)
	tn.Messages = heraldv1connect.NewMessageServiceClient(o.client, tn.URL)
	t.Cleanup(tn.stop)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() bool { return n.Ready() })
	return tn
}

// stop shuts the node down in production order; it is idempotent.
func (n *node) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = n.srv.Shutdown(ctx); close(done) }()
	_ = n.Gateway.Close()
	<-done
	if err := n.Node.Close(); err != nil {
		n.t.Errorf("close node: %v", err)
	}
}

// checkFor polls fn every step until it returns true, failing the test
// after total.
func checkFor(t testing.TB, total, step time.Duration, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", total)
		}
		time.Sleep(step)
	}
}
