package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/gateway"
)

// nodeOptions is what runNode needs to start a node.
type nodeOptions struct {
	nodeID     string
	dataDir    string
	httpAddr   string
	raftAddr   string
	partitions uint32
	log        *slog.Logger
	// started is called once the node serves HTTP, with the bound
	// addresses; ready once every partition has a leader.
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
	node, err := cluster.New(cluster.Config{
		NodeID:       o.nodeID,
		DataDir:      o.dataDir,
		RaftListener: raftLn,
		Partitions:   o.partitions,
		Logger:       o.log,
	})
	if err != nil {
		_ = raftLn.Close() // best effort: report the start error
		return err
	}
	gw, err := gateway.New(gateway.Config{Logger: o.log, Version: buildVersion()}, node)
	if err != nil {
		return errors.Join(err, node.Close())
	}
	srv := gateway.NewHTTPServer(gw.Handler(), o.log)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(httpLn) }()
	if o.started != nil {
		o.started(httpLn.Addr().String(), raftLn.Addr().String())
	}
	go waitReady(ctx, node, begin, o.ready)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve http: %w", err)
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

// waitReady polls until every partition has a leader, then calls ready.
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
