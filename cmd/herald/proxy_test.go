package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

// requireNginxEnv, set by .ci/run (which installs Debian's nginx), makes a
// missing nginx fail TestNginxProxy instead of skipping it.
const requireNginxEnv = "HERALD_TEST_REQUIRE_NGINX"

// startNginx runs testdata/proxy/nginx.conf, with its upstream addresses
// replaced by nodes and its two ports by free ones, and returns the
// HTTP/1.1 and h2c addresses.
func startNginx(t *testing.T, nodes []string) (http1, h2c string) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, serr := os.Stat(bin); serr != nil {
			if os.Getenv(requireNginxEnv) != "" {
				t.Fatalf("nginx not found (%v); .ci/run installs Debian's nginx package", err)
			}
			t.Skipf("nginx not found: apt-get install nginx to run this test (.ci/run does)")
		}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, "testdata", "proxy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ports := []string{freeAddr(t), freeAddr(t)}
	text := string(conf)
	for i, addr := range nodes {
		text = strings.ReplaceAll(text, fmt.Sprintf("server 127.0.0.1:%d ", 7700+i), "server "+addr+" ")
	}
	text = strings.Replace(text, "listen 127.0.0.1:8080;", "listen "+ports[0]+";", 1)
	text = strings.Replace(text, "listen 127.0.0.1:8081 http2;", "listen "+ports[1]+" http2;", 1)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := newProcOutput(t.Output(), "nginx")
	cmd := exec.Command(bin, "-p", dir, "-c", "nginx.conf")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful stop; Wait reaps it
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, p := range ports {
			c, err := net.DialTimeout("tcp", p, time.Second)
			if err != nil {
				return fmt.Errorf("nginx not listening on %s: %v\n%s", p, err, out.String())
			}
			_ = c.Close()
		}
		return nil
	})
	return ports[0], ports[1]
}

// proxyWS is a WebSocket client that hands every frame to frames.
type proxyWS struct {
	frames chan *heraldv1.ServerFrame
	conn   *gws.Conn
	done   chan struct{}
}

func (c *proxyWS) OnOpen(*gws.Conn)                      {}
func (c *proxyWS) OnClose(*gws.Conn, error)              {}
func (c *proxyWS) OnPing(conn *gws.Conn, payload []byte) { _ = conn.WritePong(payload) }
func (c *proxyWS) OnPong(*gws.Conn, []byte)              {}
func (c *proxyWS) OnMessage(_ *gws.Conn, m *gws.Message) {
	f := &heraldv1.ServerFrame{}
	if err := protojson.Unmarshal(m.Bytes(), f); err == nil {
		c.frames <- f
	}
	_ = m.Close()
}

func dialProxyWS(t *testing.T, addr string) *proxyWS {
	t.Helper()
	c := &proxyWS{frames: make(chan *heraldv1.ServerFrame, 1024), done: make(chan struct{})}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + addr + "/ws", HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("WebSocket through nginx: %v", err)
	}
	c.conn = conn
	go func() { defer close(c.done); conn.ReadLoop() }()
	t.Cleanup(func() { _ = conn.WriteClose(1000, nil); <-c.done })
	return c
}

// events reads frames until n events have come, checking that their seqs
// follow after in order.
func (c *proxyWS) events(t *testing.T, after uint64, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for seq := after + 1; seq <= after+uint64(n); {
		select {
		case f := <-c.frames:
			if ev := f.GetEvent(); ev != nil {
				if ev.GetSeq() != seq {
					t.Fatalf("WebSocket through nginx: event %d, want %d", ev.GetSeq(), seq)
				}
				seq++
			} else if f.GetError() != nil || f.GetResyncRequired() != nil {
				t.Fatalf("WebSocket through nginx: %v", f)
			}
		case <-deadline:
			t.Fatalf("WebSocket through nginx: event %d not received within 30s", seq)
		}
	}
}

// TestNginxProxy runs testdata/proxy/nginx.conf in front of three herald
// server processes: Connect unary and server-streaming calls over
// HTTP/1.1, gRPC unary and streaming over h2c, and WebSockets all pass
// through, and go on when a node is SIGKILLed behind the proxy.
func TestNginxProxy(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cl, err := bench.StartCluster(ctx, bench.ClusterOptions{Binary: heraldBin, Nodes: 3, Partitions: 4, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	http1, h2c := startNginx(t, cl.Addrs)

	api := heraldv1connect.NewMessageServiceClient(http.DefaultClient, "http://"+http1)
	channels := heraldv1connect.NewChannelServiceClient(http.DefaultClient, "http://"+http1)
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	defer h2.CloseIdleConnections()
	grpc := heraldv1connect.NewMessageServiceClient(&http.Client{Transport: h2}, "http://"+h2c, connect.WithGRPC())

	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, rpcTimeout) }
	c1, done := call()
	if _, err := channels.CreateChannel(c1, &heraldv1.CreateChannelRequest{ChannelId: "px"}); err != nil {
		t.Fatalf("CreateChannel through nginx: %v", err)
	}
	done()

	// Every path subscribes from the head, then sees the posts that follow.
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	subscribe := func(name string, c heraldv1connect.MessageServiceClient) <-chan uint64 {
		s, err := c.Subscribe(sctx, &heraldv1.SubscribeRequest{ChannelId: "px", AfterSeq: proto.Uint64(0)})
		if err != nil {
			t.Fatalf("%s Subscribe through nginx: %v", name, err)
		}
		seqs := make(chan uint64, 1024)
		go func() {
			defer close(seqs)
			for s.Receive() {
				if ev := s.Msg().GetEvent(); ev != nil {
					seqs <- ev.GetSeq()
				}
			}
		}()
		return seqs
	}
	connectSeqs, grpcSeqs := subscribe("Connect", api), subscribe("gRPC", grpc)

	// post retries through the proxy with the same client_msg_id until the
	// post is acknowledged: while a killed node's partitions elect a new
	// leader, a post may come back unavailable.
	post := func(c heraldv1connect.MessageServiceClient, id string) uint64 {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			pc, done := call()
			resp, err := c.PostMessage(pc, &heraldv1.PostMessageRequest{ChannelId: "px", ClientMsgId: id, Text: id})
			done()
			if err == nil {
				return resp.GetMessage().GetSeq()
			}
			if time.Now().After(deadline) {
				t.Fatalf("post %s through nginx: %v", id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var seqs []uint64
	for i := range 4 {
		seqs = append(seqs, post(api, fmt.Sprintf("connect-%d", i)))
		seqs = append(seqs, post(grpc, fmt.Sprintf("grpc-%d", i)))
	}

	// A node dies behind the proxy; nginx takes the others.
	pids := cl.PIDs()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed n1 (%s) behind nginx", cl.Addrs[0])
	begin := time.Now()
	for i := range 4 {
		seqs = append(seqs, post(api, fmt.Sprintf("after-connect-%d", i)))
		seqs = append(seqs, post(grpc, fmt.Sprintf("after-grpc-%d", i)))
	}
	t.Logf("8 posts through nginx after the kill in %v", time.Since(begin).Round(time.Millisecond))
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("post %d got seq %d, want %d (seqs %v)", i, s, i+1, seqs)
		}
	}

	// A new WebSocket and a new Subscribe stream through the proxy, from
	// the start, get every post once and in order with n1 dead.
	ws := dialProxyWS(t, http1)
	b, _ := protojson.Marshal(&heraldv1.ClientFrame{Id: "s", Kind: &heraldv1.ClientFrame_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{ChannelId: "px", AfterSeq: proto.Uint64(0)}}})
	if err := ws.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		t.Fatal(err)
	}
	ws.events(t, 0, len(seqs))
	after := subscribe("Connect after the kill", api)
	wantSeqs(t, "Connect Subscribe after the kill", after, len(seqs))

	// The streams opened before the kill got a gap-free prefix of the
	// posts; one whose node was n1 ended early, and resumes through the
	// proxy from the last seq it got, as a client does, missing nothing.
	var wg sync.WaitGroup
	for name, c := range map[string]heraldv1connect.MessageServiceClient{"Connect": api, "gRPC": grpc} {
		ch := map[string]<-chan uint64{"Connect": connectSeqs, "gRPC": grpcSeqs}[name]
		wg.Go(func() {
			var got uint64
			timeout := time.After(10 * time.Second)
		read:
			for got < uint64(len(seqs)) {
				select {
				case s, ok := <-ch:
					if !ok {
						break read
					}
					if s != got+1 {
						t.Errorf("%s Subscribe through nginx: event %d after %d", name, s, got)
						return
					}
					got = s
				case <-timeout:
					break read
				}
			}
			if got < uint64(len(seqs)) {
				t.Logf("%s Subscribe through nginx ended after seq %d (its node was killed); resuming", name, got)
				s, err := c.Subscribe(sctx, &heraldv1.SubscribeRequest{ChannelId: "px", AfterSeq: proto.Uint64(got)})
				if err != nil {
					t.Errorf("%s resubscribe through nginx: %v", name, err)
					return
				}
				for got < uint64(len(seqs)) && s.Receive() {
					if ev := s.Msg().GetEvent(); ev != nil {
						if ev.GetSeq() != got+1 {
							t.Errorf("%s resumed through nginx: event %d after %d", name, ev.GetSeq(), got)
							return
						}
						got = ev.GetSeq()
					}
				}
				if got < uint64(len(seqs)) {
					t.Errorf("%s resumed through nginx: ended after seq %d of %d: %v", name, got, len(seqs), s.Err())
				}
			}
		})
	}
	wg.Wait()
}

// wantSeqs reads n seqs from ch and checks they are 1..n.
func wantSeqs(t *testing.T, what string, ch <-chan uint64, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for want := uint64(1); want <= uint64(n); want++ {
		select {
		case s, ok := <-ch:
			if !ok {
				t.Fatalf("%s: stream ended before event %d", what, want)
			}
			if s != want {
				t.Fatalf("%s: event %d, want %d", what, s, want)
			}
		case <-timeout:
			t.Fatalf("%s: event %d not received within 30s", what, want)
		}
	}
}
