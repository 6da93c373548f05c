package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/cmd/herald/internal/loopback"
)

// natsStream is the stream the comparison publishes to: one subject a
// channel, replicated on three nodes, in files.
const natsStream = "HERALDBENCH"

// NATSCluster is a NATS JetStream cluster of nats-server processes on
// loopback, fsyncing every write (sync_interval: always), the durability
// Herald promises.
type NATSCluster struct {
	URLs []string
	cmds []*exec.Cmd
}

// StartNATS starts nodes nats-server processes from binary with their
// stores in dir and waits until JetStream answers.
func StartNATS(ctx context.Context, binary string, nodes int, dir string) (*NATSCluster, error) {
	ports, err := loopback.FreePorts(2 * nodes)
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{}
	var routes []string
	for i := range nodes {
		c.URLs = append(c.URLs, "nats://"+ports[i])
		routes = append(routes, "nats://"+ports[nodes+i])
	}
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf(`server_name: %s
listen: %q
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: bench
  listen: %q
  routes: [%s]
}
`, id, ports[i], filepath.Join(dir, id), ports[nodes+i], strings.Join(quoteAll(routes), ", "))
		path := filepath.Join(dir, id+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			c.Stop()
			return nil, err
		}
		log, err := os.Create(filepath.Join(dir, id+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		cmd := exec.Command(binary, "-c", path)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			log.Close()
			c.Stop()
			return nil, fmt.Errorf("bench: start %s: %w", binary, err)
		}
		go func() { _ = cmd.Wait(); log.Close() }()
		c.cmds = append(c.cmds, cmd)
	}
	if err := c.createStream(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("%w; the nodes' logs are in %s", err, dir)
	}
	return c, nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// PIDs returns the server processes' ids.
func (c *NATSCluster) PIDs() []int {
	pids := make([]int, len(c.cmds))
	for i, cmd := range c.cmds {
		pids[i] = cmd.Process.Pid
	}
	return pids
}

// Stop kills the servers.
func (c *NATSCluster) Stop() {
	for _, cmd := range c.cmds {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, cmd := range c.cmds {
		for syscall.Kill(cmd.Process.Pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
	}
}

// createStream makes the R3 file stream once the cluster has a JetStream
// leader, retrying for up to a minute.
func (c *NATSCluster) createStream(ctx context.Context) error {
	return EnsureNATSStream(ctx, strings.Join(c.URLs, ","), min(3, len(c.URLs)))
}

// EnsureNATSStream creates (or updates) the comparison's stream at url,
// with replicas replicas, retrying for up to a minute while the cluster
// elects.
func EnsureNATSStream(ctx context.Context, url string, replicas int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		last = func() error {
			nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err = js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{Name: natsStream, Subjects: []string{"bench.>"},
				Replicas: replicas, Storage: jetstream.FileStorage})
			return err
		}()
		if last == nil {
			return nil
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return fmt.Errorf("bench: create the NATS stream %s (R%d) at %s: %w", natsStream, replicas, url, last)
}

// RunNATSPost runs the post benchmark's workload against a JetStream
// stream: opts.Targets are NATS URLs; each client has its own connection
// and publishes synchronously, waiting for the stream's acknowledgement,
// to one subject a channel, with a Nats-Msg-Id (JetStream's deduplication)
// as Herald's posts carry a client_msg_id.
func RunNATSPost(ctx context.Context, opts PostOptions) (*PostResult, error) {
	channels, err := opts.channels("bench.")
	if err != nil {
		return nil, err
	}
	// With Pipeline, that many goroutines share each client's connection,
	// each with one publish in flight: Pipeline publishes in flight on it.
	per := max(opts.Pipeline, 1)
	clients := make([]poster, 0, opts.Clients*per)
	for i := range opts.Clients {
		nc, err := nats.Connect(opts.Targets[i%len(opts.Targets)], nats.Timeout(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("bench: connect to NATS at %s: %w", opts.Targets[i%len(opts.Targets)], err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		for range per {
			clients = append(clients, func(ctx context.Context, subject, text, id string) error {
				_, err := js.Publish(ctx, subject, []byte(text), jetstream.WithMsgID(id))
				return err
			})
		}
	}
	setup := "NATS JetStream R3 file stream, sync_interval always; one connection a client, synchronous publish"
	if opts.Pipeline > 0 {
		setup = fmt.Sprintf("NATS JetStream R3 file stream, sync_interval always; one connection a client, %d publishes in flight on each", opts.Pipeline)
	}
	return newRun(opts, setup, channels, clients, natsCode).run(ctx)
}

// natsCode classes a NATS error for errors_by_code.
func natsCode(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return "no_responders"
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return fmt.Sprintf("api_%d", apiErr.ErrorCode)
	}
	return "other"
}
