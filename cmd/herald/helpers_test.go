package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"

	"github.com/heraldhq/herald/cmd/herald/internal/loopback"
)

// heraldBin is the herald binary TestMain builds once for every test.
var heraldBin string

// Generous liveness bounds: the strict figures come from herald torture.
const (
	readyTimeout = 30 * time.Second // start → "Ready in" and /readyz 200
	exitTimeout  = 30 * time.Second // signal → process exit
	cmdTimeout   = 30 * time.Second // a short command such as --help
	rpcTimeout   = 10 * time.Second // one request
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(buildAndRun(m))
}

// buildAndRun builds cmd/herald into a temporary directory, runs the tests
// and removes the binary. A failed build fails the whole package.
func buildAndRun(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmd/herald tests: find the module root:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmd/herald tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	heraldBin = filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-o", heraldBin, "./cmd/herald")
	build.Dir = root
	begin := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "cmd/herald tests: go build ./cmd/herald in %s: %v\n%s", root, err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Printf("built %s in %v\n", heraldBin, time.Since(begin).Round(time.Millisecond))
	}
	return m.Run()
}

// moduleRoot returns the directory holding go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// procSerial numbers the herald processes a test run starts, to tell
// their output apart.
var procSerial atomic.Int64

// proc is one running `herald dev` process.
type proc struct {
	t        *testing.T
	name     string // "herald#3", in the output prefix
	dataDir  string
	HTTPAddr string // 127.0.0.1:port
	RaftAddr string
	URL      string // http://127.0.0.1:port
	Client   *http.Client
	Channels heraldv1connect.ChannelServiceClient
	Messages heraldv1connect.MessageServiceClient
	// StartToReady is the time from exec to "Ready in" on stdout;
	// ReadyLine is that line.
	StartToReady time.Duration
	ReadyLine    string

	cmd     *exec.Cmd
	started time.Time // just before exec
	stdout  *procOutput
	stderr  *procOutput
	done    chan struct{} // closed when the process has exited
	err     error         // cmd.Wait's result; read after done
}

// devOptions tweaks startDev.
type devOptions struct {
	dataDir  string   // "" = a new t.TempDir()
	httpAddr string   // "" = a free port on 127.0.0.1
	raftAddr string   // "" = a free port on 127.0.0.1
	args     []string // more flags, e.g. --partitions 4
}

// startDev starts `herald dev` on free loopback ports, waits until it has
// printed "Ready in" and /readyz answers 200, and kills it at cleanup. It
// retries with other ports when a port was taken in between.
func startDev(t *testing.T, o devOptions) *proc {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	const attempts = 5
	for i := 1; ; i++ {
		opts := o
		if opts.httpAddr == "" || i > 1 {
			opts.httpAddr = freeAddr(t)
		}
		if opts.raftAddr == "" || i > 1 {
			opts.raftAddr = freeAddr(t)
		}
		p := launchDev(t, opts)
		clash, err := p.waitReady()
		if err == nil {
			t.Logf("%s ready: start-to-ready %v (it printed %q)", p.name, p.StartToReady.Round(time.Millisecond), p.ReadyLine)
			return p
		}
		if clash && i < attempts {
			t.Logf("%s: a port was taken (%v); retrying on other ports", p.name, err)
			continue
		}
		p.Kill()
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", p.name, err, p.Stdout(), p.Stderr())
	}
}

// launchDev execs `herald dev` without waiting for it to be ready.
func launchDev(t *testing.T, o devOptions) *proc {
	t.Helper()
	args := append([]string{"dev", "--data-dir", o.dataDir, "--http", o.httpAddr, "--raft", o.raftAddr}, o.args...)
	p := &proc{
		t:        t,
		name:     fmt.Sprintf("herald#%d", procSerial.Add(1)),
		dataDir:  o.dataDir,
		HTTPAddr: o.httpAddr,
		RaftAddr: o.raftAddr,
		URL:      "http://" + o.httpAddr,
		done:     make(chan struct{}),
	}
	p.stdout = newProcOutput(t.Output(), p.name+" stdout: ")
	p.stderr = newProcOutput(t.Output(), p.name+" stderr: ")
	p.cmd = exec.Command(heraldBin, args...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	t.Logf("%s: herald %s", p.name, strings.Join(args, " "))
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", heraldBin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	p.Client = &http.Client{Transport: tr}
	p.Channels = heraldv1connect.NewChannelServiceClient(p.Client, p.URL)
	p.Messages = heraldv1connect.NewMessageServiceClient(p.Client, p.URL)
	t.Cleanup(func() {
		p.Kill()
		tr.CloseIdleConnections()
	})
	return p
}

// waitReadyLine waits until stdout has a line with marker, within
// readyTimeout of the start, and records it and when it came. clash
// reports that the process exited because a port was taken.
func (p *proc) waitReadyLine(marker string) (clash bool, err error) {
	deadline := p.started.Add(readyTimeout)
	for {
		if line, ok := p.stdout.lineWith(marker); ok {
			p.StartToReady = time.Since(p.started)
			p.ReadyLine = line
			return false, nil
		}
		select {
		case <-p.done:
			clash = strings.Contains(p.Stderr(), "address already in use")
			return clash, fmt.Errorf("exited before it was ready: %v", p.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("no %q on stdout within %v", marker, readyTimeout)
		}
	}
}

// waitReady waits for "Ready in" on stdout and then for /readyz to answer
// 200. clash reports that the process exited because a port was taken.
func (p *proc) waitReady() (clash bool, err error) {
	if clash, err := p.waitReadyLine("Ready in "); err != nil {
		return clash, err
	}
	deadline := p.started.Add(readyTimeout)
	for {
		code, err := p.get("/readyz")
		if err == nil && code == http.StatusOK {
			return false, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("GET /readyz: got %d, %v; want 200 within %v", code, err, readyTimeout)
		}
		select {
		case <-p.done:
			return false, fmt.Errorf("exited while waiting for /readyz: %v", p.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// get returns the status code of GET path.
func (p *proc) get(path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body) // best effort: only the status matters
	_ = resp.Body.Close()                 // best effort, as above
	return resp.StatusCode, nil
}

// Kill sends SIGKILL, without warning, and waits for the process to be
// gone. It is idempotent.
func (p *proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill() // fails only if it has exited already
	<-p.done
	p.Client.Transport.(*http.Transport).CloseIdleConnections()
}

// Signal sends sig and waits up to exitTimeout for the process to exit,
// returning its exit code and how long it took.
func (p *proc) Signal(sig os.Signal) (code int, took time.Duration) {
	p.t.Helper()
	begin := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: send %v: %v", p.name, sig, err)
	}
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		p.t.Fatalf("%s: still running %v after %v; want it to exit", p.name, exitTimeout, sig)
	}
	p.Client.Transport.(*http.Transport).CloseIdleConnections()
	return p.cmd.ProcessState.ExitCode(), time.Since(begin)
}

// Stdout and Stderr return everything the process has written so far.
func (p *proc) Stdout() string { return p.stdout.String() }
func (p *proc) Stderr() string { return p.stderr.String() }

// procOutput keeps what a process writes and copies it, line by line and
// prefixed, to the test's output.
type procOutput struct {
	mu      sync.Mutex // guards following
	all     bytes.Buffer
	partial []byte // the unfinished last line, not yet forwarded
	w       io.Writer
	prefix  string
}

func newProcOutput(w io.Writer, prefix string) *procOutput {
	return &procOutput{w: w, prefix: prefix}
}

func (o *procOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all.Write(b)
	o.partial = append(o.partial, b...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(o.w, "%s%s\n", o.prefix, o.partial[:i])
		o.partial = o.partial[i+1:]
	}
	return len(b), nil
}

func (o *procOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all.String()
}

// lineWith returns the first complete line containing s.
func (o *procOutput) lineWith(s string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for line := range strings.Lines(o.all.String()) {
		if strings.HasSuffix(line, "\n") && strings.Contains(line, s) {
			return strings.TrimSuffix(line, "\n"), true
		}
	}
	return "", false
}

// freeAddr returns 127.0.0.1:port for a port that was free a moment ago,
// below the ephemeral range (see loopback.FreePorts).
func freeAddr(t *testing.T) string {
	t.Helper()
	addrs, err := loopback.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}

// result is how a short herald command ended.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// runHerald runs a herald command that should end by itself and returns
// its output and exit code; it fails the test if it runs past cmdTimeout.
func runHerald(t *testing.T, args ...string) result {
	t.Helper()
	return runHeraldWithin(t, cmdTimeout, args...)
}

// runHeraldWithin is runHerald for a command that may run up to limit.
func runHeraldWithin(t *testing.T, limit time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	begin := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(begin)}
	if ctx.Err() != nil {
		t.Fatalf("herald %s: still running after %v; want it to exit\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), limit, r.stdout, r.stderr)
	}
	if exitErr, ok := errors.AsType[*exec.ExitError](err); ok {
		r.code = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("herald %s: killed by %v\nstderr:\n%s", strings.Join(args, " "), ws.Signal(), r.stderr)
		}
	} else if err != nil {
		t.Fatalf("herald %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// history reads a channel's whole history, oldest first, page by page.
func history(t *testing.T, c heraldv1connect.MessageServiceClient, channel string) []*heraldv1.Message {
	t.Helper()
	var all []*heraldv1.Message
	var after uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		resp, err := c.GetHistory(ctx, &heraldv1.GetHistoryRequest{
			ChannelId: channel, AfterSeq: after, Limit: 1000, OldestFirst: true,
		})
		cancel()
		if err != nil {
			t.Fatalf("GetHistory %s after %d: %v", channel, after, err)
		}
		msgs := resp.GetMessages()
		all = append(all, msgs...)
		if !resp.GetHasMore() {
			return all
		}
		if len(msgs) == 0 || msgs[len(msgs)-1].GetSeq() <= after {
			t.Fatalf("GetHistory %s after %d: has_more with no progress (%d messages)", channel, after, len(msgs))
		}
		after = msgs[len(msgs)-1].GetSeq()
	}
}

// createChannel creates a channel, failing the test on error.
func createChannel(t *testing.T, p *proc, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if _, err := p.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: id}); err != nil {
		t.Fatalf("CreateChannel %s: %v", id, err)
	}
}

// post posts one message under rpcTimeout.
func post(c heraldv1connect.MessageServiceClient, channel, id, text string) (*heraldv1.PostMessageResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	return c.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: channel, ClientMsgId: id, Text: text})
}
