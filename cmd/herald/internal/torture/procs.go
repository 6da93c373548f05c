package torture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/check"
	"github.com/heraldhq/herald/cluster/faultnet"
	"github.com/heraldhq/herald/storage/lossyfs"

	"github.com/heraldhq/herald/cmd/herald/internal/loopback"
)

// procs is the cluster under test: `herald server` processes on loopback
// whose node-to-node links all pass through the fault proxies of net.
type procs struct {
	bin   string
	dir   string
	net   *faultnet.Net
	nodes []*proc
	args  []string // for every node, after its own
}

// proc is one node: its addresses, its data directory (on a power-loss
// filesystem of its own, with lossy) and its current process.
type proc struct {
	id, http, raft string
	data           string
	fs             *lossyfs.FS // nil without power loss
	log            *os.File

	mu     sync.Mutex // guards following
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	paused bool
	held   []*loopback.Hold // p's ports while it is killed, released at start
}

// startProcs starts n nodes in dir, every link through a proxy, each data
// directory on a lossyfs mount if lossy.
func startProcs(ctx context.Context, bin, dir string, n int, partitions uint32, lossy bool, extra ...string) (*procs, error) {
	ports, err := loopback.FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &procs{bin: bin, dir: dir, net: faultnet.New()}
	var join []string
	for i := range n {
		p := &proc{id: fmt.Sprintf("n%d", i+1), http: ports[i], raft: ports[n+i]}
		p.data = filepath.Join(dir, p.id)
		c.nodes = append(c.nodes, p)
		join = append(join, p.http)
	}
	c.args = []string{"--join", strings.Join(join, ","), "--bootstrap-expect", strconv.Itoa(n), "--insecure", "--log-level", "warn"}
	if partitions > 0 {
		c.args = append(c.args, "--partitions", strconv.FormatUint(uint64(partitions), 10))
	}
	c.args = append(c.args, extra...)
	for _, p := range c.nodes {
		if err := c.prepare(p, lossy); err != nil {
			c.stop()
			return nil, err
		}
	}
	for _, p := range c.nodes {
		if err := c.start(p); err != nil {
			c.stop()
			return nil, err
		}
	}
	if err := c.waitReady(ctx, 2*time.Minute); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// prepare writes p's peer map (every peer through a proxy of its own) and
// mounts its data directory.
func (c *procs) prepare(p *proc, lossy bool) error {
	peers := map[string]cluster.PeerAddrs{}
	for _, q := range c.nodes {
		if q == p {
			continue
		}
		raft, err := c.net.Proxy(p.id, q.id, q.raft)
		if err != nil {
			return err
		}
		http, err := c.net.Proxy(p.id, q.id, q.http)
		if err != nil {
			return err
		}
		peers[q.id] = cluster.PeerAddrs{Raft: raft, HTTP: http}
	}
	b, err := json.MarshalIndent(peers, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.dir, p.id+".peers.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(p.data, 0o755); err != nil {
		return err
	}
	if lossy {
		backing := filepath.Join(c.dir, p.id+".disk")
		if err := os.MkdirAll(backing, 0o755); err != nil {
			return err
		}
		if p.fs, err = lossyfs.Mount(backing, p.data, lossyfs.Options{}); err != nil {
			return fmt.Errorf("torture: mount the power-loss filesystem for %s on %s: %w", p.id, p.data, err)
		}
	}
	if p.log, err = os.OpenFile(filepath.Join(c.dir, p.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return err
	}
	return nil
}

// start runs p's process (again, after a kill) from its data directory.
func (c *procs) start(p *proc) error {
	p.release()
	args := append([]string{"server", "--node-id", p.id, "--data-dir", filepath.Join(p.data, "data"),
		"--http", p.http, "--raft", p.raft, "--peer-map", filepath.Join(c.dir, p.id+".peers.json")}, c.args...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the torture
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("torture: start %s: %w", c.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited, p.paused = cmd, exited, false
	p.mu.Unlock()
	return nil
}

// running reports whether p's process is up (paused or not).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
	// Keep its ports until it starts again: another process on the machine
	// (another test's node picking "free" ports) could take one meanwhile,
	// and p could then never come back. Connections to them are refused,
	// as to a killed process's.
	for _, addr := range []string{p.http, p.raft} {
		if h, err := loopback.HoldPort(addr); err == nil {
			p.held = append(p.held, h)
		}
	}
}

// release frees the ports kill held.
func (p *proc) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.held {
		h.Release()
	}
	p.held = nil
}

// signal sends SIGSTOP (pause) or SIGCONT.
func (p *proc) signal(pause bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	sig := syscall.SIGCONT
	if pause {
		sig = syscall.SIGSTOP
	}
	if p.cmd.Process.Signal(sig) == nil {
		p.paused = pause
	}
}

// powerLoss kills p and throws away what its filesystem had not synced,
// torn at a random point.
func (p *proc) powerLoss(rng *rand.Rand) (lossyfs.Report, error) {
	p.kill()
	if p.fs == nil {
		return lossyfs.Report{}, errors.New("torture: power loss needs --faults powerloss from the start (the data directory is not on a power-loss filesystem)")
	}
	return p.fs.PowerLoss(rng)
}

// exitedEarly reports a node whose process ended by itself, with the end
// of its log.
func (c *procs) exitedEarly(p *proc) error {
	tail, _ := os.ReadFile(p.log.Name())
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return fmt.Errorf("torture: node %s exited by itself; its log %s ends:\n%s", p.id, p.log.Name(), tail)
}

// waitReady waits until every node answers /readyz. A node that ended by
// itself (say it could not bind its port) fails the wait at once: the
// others could not become ready without it.
func (c *procs) waitReady(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for _, p := range c.nodes {
		for !loopback.Ready(ctx, p.http) {
			for _, q := range c.nodes {
				if !q.running() {
					return c.exitedEarly(q)
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("torture: node %s (%s) not ready within %v; see %s", p.id, p.http, within, p.log.Name())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// stuck describes each node that is not ready: its process state and, as
// far as /proc tells, where its threads wait in the kernel.
func (c *procs) stuck(why error) []check.Violation {
	out := []check.Violation{{What: why.Error()}}
	for _, p := range c.nodes {
		if loopback.Ready(context.Background(), p.http) {
			continue
		}
		p.mu.Lock()
		cmd := p.cmd
		p.mu.Unlock()
		what := fmt.Sprintf("%s (%s) not ready; running %v", p.id, p.http, p.running())
		if cmd != nil && p.running() {
			what += "; its view of the ring: " + ringView(p.http)
			pid := cmd.Process.Pid
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			for _, line := range strings.Split(string(status), "\n") {
				if strings.HasPrefix(line, "State:") {
					what += "; " + strings.TrimSpace(line)
				}
			}
			tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
			waits := map[string]int{}
			for _, t := range tasks {
				if b, err := os.ReadFile(t); err == nil {
					waits[string(b)]++
				}
			}
			what += fmt.Sprintf("; threads waiting in: %v", waits)
			// A Go process dumps every goroutine's stack on SIGQUIT, into
			// its log, and exits.
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-p.exited:
				what += "; goroutines dumped to " + p.log.Name()
			case <-time.After(5 * time.Second):
			}
		}
		out = append(out, check.Violation{What: what})
	}
	return out
}

// ringView is the node at addr's GetRing, a line a partition: leader,
// health, and each replica's state and applied/commit index.
func ringView(addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ring, err := heraldv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+addr, connect.WithProtoJSON()).
		GetRing(ctx, &heraldv1.GetRingRequest{})
	if err != nil {
		return "GetRing failed: " + err.Error()
	}
	var b strings.Builder
	for _, p := range ring.GetPartitions() {
		fmt.Fprintf(&b, "\n  partition %d leader %q %s commit %d:", p.GetId(), p.GetLeader(), p.GetHealth(), p.GetCommitIndex())
		for _, r := range p.GetReplicas() {
			fmt.Fprintf(&b, " %s %s %d/%d voter=%v", r.GetNodeId(), r.GetState(), r.GetAppliedIndex(), r.GetCommitIndex(), r.GetVoter())
		}
	}
	return b.String()
}

// heal ends every fault: links healed, paused nodes continued, stopped
// ones started again.
func (c *procs) heal() error {
	c.net.Heal()
	for _, p := range c.nodes {
		if !p.running() {
			if err := c.start(p); err != nil {
				return err
			}
			continue
		}
		p.signal(false)
	}
	return nil
}

// stop kills every node, unmounts their filesystems and closes the
// proxies.
func (c *procs) stop() {
	for _, p := range c.nodes {
		p.signal(false)
		p.kill()
		p.release()
		if p.fs != nil {
			if err := p.fs.Unmount(); err != nil {
				// Never leave a mount behind: detach it lazily, the kernel
				// drops it once nothing holds it.
				fmt.Fprintf(os.Stderr, "torture: %v; detaching it\n", err)
				_ = syscall.Unmount(p.data, syscall.MNT_DETACH)
			}
		}
		if p.log != nil {
			p.log.Close()
		}
	}
	_ = c.net.Close()
}
