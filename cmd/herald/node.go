package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/gateway"
)

// nodeOptions is what runNode needs to start a node.
type nodeOptions struct {
	nodeID          string
	dataDir         string
	httpAddr        string // listen
	raftAddr        string // listen
	advertiseHTTP   string // "" = the bound --http address
	advertiseRaft   string // "" = the bound --raft address
	join            []string
	bootstrapExpect int
	partitions      uint32
	metaVoters      int
	region          string
	roles           []string // nil = every role
	secret          []byte   // node-to-node key, and user tokens when auth is on
	userAuth        bool     // verify user bearer tokens (needs secret)
	limits          limitFlags
	space           spaceFlags
	peerMap         map[string]cluster.PeerAddrs
	tls             *cluster.TLSConfigs // nil = plaintext
	defects         defects             // planted bugs, for herald torture --canary only
	log             *slog.Logger
	// started is called once the node serves HTTP, with the bound
	// addresses; ready once the node has the metadata and its replicas.
	started func(httpAddr, raftAddr string)
	ready   func(took time.Duration)
}

// runNode starts a node, serves until ctx ends, then shuts down in order:
// stop accepting and end streams and sockets, then Raft, then storage.
func runNode(ctx context.Context, o nodeOptions) error {
	begin := time.Now()
	httpLn, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on --http %s: %w", o.httpAddr, err)
	}
	defer httpLn.Close()
	raftLn, err := net.Listen("tcp", o.raftAddr)
	if err != nil {
		return fmt.Errorf("listen on --raft %s: %w", o.raftAddr, err)
	}
	advertiseHTTP := o.advertiseHTTP
	if advertiseHTTP == "" {
		advertiseHTTP = httpLn.Addr().String()
	}
	node, err := cluster.New(cluster.Config{
		NodeID:          o.nodeID,
		DataDir:         o.dataDir,
		HTTPAddr:        advertiseHTTP,
		RaftListener:    raftLn,
		AdvertiseRaft:   o.advertiseRaft,
		Join:            o.join,
		BootstrapExpect: o.bootstrapExpect,
		Partitions:      o.partitions,
		MetaVoters:      o.metaVoters,
		Region:          o.region,
		Roles:           o.roles,
		Secret:          o.secret,
		PeerMap:         o.peerMap,
		TLS:             o.tls,
		RequestTimeout:  o.limits.requestTimeout,
		Space:           o.space.config(),
		Partition:       partition.Config{EventRetention: o.space.eventRetention()},
		Defects:         o.defects.cluster,
		Logger:          o.log,
	})
	if err != nil {
		_ = raftLn.Close() // best effort: report the start error
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		node.Metrics())
	gc := gateway.Config{Logger: o.log, Version: buildVersion(),
		MaxPostsPerUser: o.limits.posts, MaxConnsPerUser: o.limits.conns, Pprof: o.limits.pprof,
		Metrics: reg, UnsafeSkipEvent: o.defects.skipEvent, Roles: node.Roles()}
	if o.userAuth {
		gc.Auth = gateway.NewAuthenticator(o.secret)
	}
	gw, err := gateway.New(gc, node)
	if err != nil {
		return errors.Join(err, node.Close())
	}
	serveErr := make(chan error, 2)
	if o.limits.metricsAddr != "" {
		stop, err := serveMetrics(o.limits.metricsAddr, gw, o.log, serveErr)
		if err != nil {
			return errors.Join(err, gw.Close(), node.Close())
		}
		defer stop()
	}
	mux := http.NewServeMux()
	mux.Handle(node.RPCHandler())
	mux.Handle("/", gw.Handler())
	srv := gateway.NewHTTPServer(mux, o.log)
	srv.RegisterOnShutdown(node.EndStreams) // peers' forwarding and watch streams would hold Shutdown
	if o.tls != nil {
		srv.TLSConfig = o.tls.HTTP.Clone() // the server edits its copy
		go func() { serveErr <- srv.ServeTLS(httpLn, "", "") }()
	} else {
		go func() { serveErr <- srv.Serve(httpLn) }()
	}
	if o.started != nil {
		o.started(httpLn.Addr().String(), raftLn.Addr().String())
	}
	go waitReady(ctx, node, begin, o.ready)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve http: %w", err)
	case <-node.Failed():
		err = node.Err()
	}
	o.log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(shutdownCtx) }()
	err = errors.Join(err, gw.Close())
	if serr := <-shut; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, node.Close())
}

// serveMetrics serves /metrics on its own listener at addr, without
// authentication; stop closes it. A serving error goes to errs.
func serveMetrics(addr string, gw *gateway.Server, log *slog.Logger, errs chan<- error) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", gw.MetricsHandler())
	srv := gateway.NewHTTPServer(mux, log)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("serve --metrics-addr: %w", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil // nothing to report at exit
}

// waitReady polls until the node is ready, then calls ready.
func waitReady(ctx context.Context, node *cluster.Node, begin time.Time, ready func(time.Duration)) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !node.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	if ready != nil {
		ready(time.Since(begin))
	}
}
