// Package bench measures a Herald cluster the way its users load it: real
// `herald server` processes, real clients over loopback, acknowledged posts
// counted only once fsynced on a majority, and the server's own CPU and
// fsyncs counted beside them.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/cmd/herald/internal/loopback"
)

// ClusterOptions shape a cluster the bench starts for itself.
type ClusterOptions struct {
	// Binary is the herald executable to run.
	Binary string
	// Nodes is the node count; each node holds a replica of every
	// partition when Nodes is 3.
	Nodes int
	// Partitions is the cluster's partition count; 0 means the server's
	// default.
	Partitions uint32
	// Dir holds every node's data directory and log.
	Dir string
	// Ready bounds the wait for every node's /readyz.
	Ready time.Duration
}

// LocalCluster is a cluster of `herald server` processes on loopback.
type LocalCluster struct {
	Addrs []string // HTTP addresses, one a node
	cmds  []*exec.Cmd
	logs  []*os.File
	dir   string
}

// StartCluster starts opts.Nodes `herald server` processes on free
// loopback ports, founding one cluster without authentication, and waits
// until every node is ready.
func StartCluster(ctx context.Context, opts ClusterOptions) (*LocalCluster, error) {
	if opts.Nodes < 1 {
		return nil, errors.New("bench: a cluster needs at least one node")
	}
	ports, err := loopback.FreePorts(2 * opts.Nodes)
	if err != nil {
		return nil, err
	}
	c := &LocalCluster{dir: opts.Dir}
	raft := make([]string, opts.Nodes)
	for i := range opts.Nodes {
		c.Addrs = append(c.Addrs, ports[i])
		raft[i] = ports[opts.Nodes+i]
	}
	for i := range opts.Nodes {
		id := fmt.Sprintf("n%d", i+1)
		args := []string{"server", "--node-id", id, "--data-dir", filepath.Join(opts.Dir, id),
			"--http", c.Addrs[i], "--raft", raft[i], "--join", strings.Join(c.Addrs, ","),
			"--bootstrap-expect", strconv.Itoa(opts.Nodes), "--insecure", "--log-level", "warn"}
		if opts.Partitions > 0 {
			args = append(args, "--partitions", strconv.FormatUint(uint64(opts.Partitions), 10))
		}
		log, err := os.Create(filepath.Join(opts.Dir, id+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		cmd := exec.Command(opts.Binary, args...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
		if err := cmd.Start(); err != nil {
			log.Close()
			c.Stop()
			return nil, fmt.Errorf("bench: start %s: %w", opts.Binary, err)
		}
		c.cmds = append(c.cmds, cmd)
		c.logs = append(c.logs, log)
	}
	if err := c.waitReady(ctx, opts.Ready); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// PIDs returns the server processes' ids.
func (c *LocalCluster) PIDs() []int {
	pids := make([]int, len(c.cmds))
	for i, cmd := range c.cmds {
		pids[i] = cmd.Process.Pid
	}
	return pids
}

// Dir is where the nodes keep their data.
func (c *LocalCluster) Dir() string { return c.dir }

// Stop stops every node (SIGTERM, then SIGKILL after 10 s) and waits.
func (c *LocalCluster) Stop() {
	for _, cmd := range c.cmds {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range c.cmds {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	for _, l := range c.logs {
		l.Close()
	}
	c.cmds, c.logs = nil, nil
}

// waitReady waits until every node answers /readyz; a node that ended by
// itself fails the wait at once.
func (c *LocalCluster) waitReady(ctx context.Context, within time.Duration) error {
	if within <= 0 {
		within = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for i, addr := range c.Addrs {
		for !loopback.Ready(ctx, addr) {
			for j := range c.cmds { // the others cannot be ready without it
				if err := c.exited(j); err != nil {
					return err
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("bench: node n%d (%s) not ready within %v; see %s",
					i+1, addr, within, filepath.Join(c.dir, fmt.Sprintf("n%d.log", i+1)))
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// exited returns an error naming node i's log if its process has ended.
func (c *LocalCluster) exited(i int) error {
	var ws syscall.WaitStatus
	pid, err := syscall.Wait4(c.cmds[i].Process.Pid, &ws, syscall.WNOHANG, nil)
	if err != nil || pid == 0 {
		return nil
	}
	log := filepath.Join(c.dir, fmt.Sprintf("n%d.log", i+1))
	tail, _ := os.ReadFile(log)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return fmt.Errorf("bench: node n%d exited (%v) before it was ready; its log %s ends:\n%s", i+1, ws, log, tail)
}
