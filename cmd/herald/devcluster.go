package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runDevCluster runs n nodes in this process, founding one cluster: node
// i (n1, n2, ...) serves HTTP on the base port + i-1 and Raft on the base
// port + 100 + i-1, with its data in dataDir/n<i>.
func runDevCluster(ctx context.Context, out io.Writer, n int, dataDir, httpAddr string, partitions uint32, sec devSecurity, log *slog.Logger) error {
	host, portStr, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return fmt.Errorf("--http %q: %w", httpAddr, err)
	}
	base, err := strconv.Atoi(portStr)
	if err != nil || base <= 0 || base+100+n > 65535 {
		return fmt.Errorf("--http %q: with --nodes a port from 1 to %d is needed", httpAddr, 65535-100-n)
	}
	addr := func(port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	join := make([]string, n)
	for i := range n {
		join[i] = addr(base + i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		readies int
		begin   = time.Now()
	)
	fmt.Fprintf(out, "Herald %s: %d nodes in one process, every role, loopback only; auth %s\n", buildVersion(), n, authLine(sec.secret != nil))
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		limits := sec.limits
		if limits.metricsAddr != "" {
			// Like HTTP: node i on --metrics-addr's port + i-1.
			if limits.metricsAddr, err = shiftPort(limits.metricsAddr, i); err != nil {
				return err
			}
		}
		o := nodeOptions{
			nodeID:          id,
			dataDir:         filepath.Join(dataDir, id),
			httpAddr:        addr(base + i),
			raftAddr:        addr(base + 100 + i),
			join:            join,
			bootstrapExpect: n,
			partitions:      partitions,
			secret:          sec.secret,
			userAuth:        sec.secret != nil,
			limits:          limits,
			space:           sec.space,
			log:             log.With("dev_node", id),
			started: func(h, r string) {
				fmt.Fprintf(out, "  %s  HTTP http://%s  WebSocket ws://%s/ws  console http://%s/  Raft %s  data %s\n", id, h, h, h, r, filepath.Join(dataDir, id))
			},
			ready: func(time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				if readies++; readies == n {
					fmt.Fprintf(out, "\nAll %d nodes ready in %v; any node serves any request. Try:\n"+
						"  curl -s -H 'Content-Type: application/json' -d '{}' http://%s/herald.v1.AdminService/GetRing\n"+
						"Press Ctrl-C to stop.\n", n, time.Since(begin).Round(time.Millisecond), join[0])
				}
			},
		}
		var wasReady atomic.Bool
		ready := o.ready
		o.ready = func(took time.Duration) {
			wasReady.Store(true)
			ready(took)
		}
		wg.Go(func() {
			err := runNode(ctx, o)
			switch {
			case err == nil:
			case wasReady.Load() && ctx.Err() == nil:
				// A node of a running cluster that stops (one removed
				// with herald admin remove) stops alone.
				mu.Lock()
				fmt.Fprintf(out, "%s stopped: %v\n", id, err)
				mu.Unlock()
			default:
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				mu.Unlock()
				cancel() // one node failing to start stops the others
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// shiftPort returns HOST:PORT+i for addr HOST:PORT.
func shiftPort(addr string, i int) (string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port <= 0 || port+i > 65535 {
		return "", fmt.Errorf("--metrics-addr %q: want HOST:PORT with room for a port per node", addr)
	}
	return net.JoinHostPort(host, strconv.Itoa(port+i)), nil
}
