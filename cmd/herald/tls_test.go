package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/clustertest"
)

func TestServerTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := clustertest.NewCA(t, "herald test CA")
	files := ca.WriteFiles(t, dir, "127.0.0.1")
	secret := filepath.Join(dir, "cluster.secret")
	if r := runHerald(t, "secret", "new", secret); r.code != 0 {
		t.Fatalf("herald secret new: got status %d, stderr %q", r.code, r.stderr)
	}
	mint := func(args ...string) string {
		t.Helper()
		r := runHerald(t, append([]string{"token", "--secret-file", secret}, args...)...)
		if r.code != 0 {
			t.Fatalf("herald token %v: got status %d, stderr %q", args, r.code, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	userToken, adminToken := mint("--user", "x"), mint("--user", "ops", "--admin")
	tlsArgs := []string{"--tls-cert", files.Cert, "--tls-key", files.Key, "--tls-ca", files.CA}

	t.Run("bad TLS flags", func(t *testing.T) {
		otherHost := clustertest.NewCA(t, "herald test CA").WriteFiles(t, t.TempDir(), "10.9.9.9")
		missing := filepath.Join(dir, "missing.pem")
		for _, tc := range []struct {
			name string
			tls  []string
			want []string // in stderr
		}{
			{"only --tls-cert", []string{"--tls-cert", files.Cert}, []string{"go together", "missing --tls-key and --tls-ca"}},
			{"no --tls-ca", []string{"--tls-cert", files.Cert, "--tls-key", files.Key}, []string{"go together", "missing --tls-ca"}},
			{"missing CA file", []string{"--tls-cert", files.Cert, "--tls-key", files.Key, "--tls-ca", missing}, []string{missing}},
			{"key is not PEM", []string{"--tls-cert", files.Cert, "--tls-key", secret, "--tls-ca", files.CA}, []string{secret}},
			{"certificate from another CA", []string{"--tls-cert", otherHost.Cert, "--tls-key", otherHost.Key, "--tls-ca", files.CA},
				[]string{otherHost.Cert, "unknown authority"}},
			{"certificate for another host", []string{"--tls-cert", otherHost.Cert, "--tls-key", otherHost.Key, "--tls-ca", otherHost.CA},
				[]string{otherHost.Cert, "does not cover 127.0.0.1", "SANs"}},
		} {
			args := append([]string{"server", "--node-id", "n1", "--data-dir", t.TempDir(), "--bootstrap-expect", "1",
				"--http", "127.0.0.1:0", "--raft", "127.0.0.1:0", "--secret-file", secret}, tc.tls...)
			r := runHerald(t, args...)
			lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1
			if r.code != 1 || lines != 1 {
				t.Errorf("herald server with %s: got status %d and %d stderr lines, want 1 and one line; stderr:\n%s", tc.name, r.code, lines, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("herald server with %s: stderr %q lacks %q", tc.name, r.stderr, w)
				}
			}
		}
	})

	p := startServer(t, files.CA, append([]string{"--bootstrap-expect", "1", "--partitions", "2",
		"--secret-file", secret}, tlsArgs...)...)
	if !strings.Contains(p.Stdout(), "serving HTTPS on "+p.HTTPAddr) {
		t.Errorf("herald server stdout: got %q, want it to say it serves HTTPS on %s", p.Stdout(), p.HTTPAddr)
	}

	t.Run("connect over https", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		auth := connect.WithInterceptors(bearer(userToken))
		channels := heraldv1connect.NewChannelServiceClient(p.Client, p.URL, auth)
		messages := heraldv1connect.NewMessageServiceClient(p.Client, p.URL, auth)
		if _, err := channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "secure"}); err != nil {
			t.Fatalf("CreateChannel over https: %v", err)
		}
		if _, err := messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "secure", ClientMsgId: "m1", Text: "hi"}); err != nil {
			t.Fatalf("PostMessage over https: %v", err)
		}
		h, err := messages.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: "secure"})
		if err != nil || len(h.GetMessages()) != 1 || h.GetMessages()[0].GetText() != "hi" {
			t.Fatalf("GetHistory over https: got %v, %v; want one message", h.GetMessages(), err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := p.Client.Do(req)
		if err != nil {
			t.Fatalf("GET %s/healthz: %v", p.URL, err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("GET %s/healthz: got %s, want HTTP/2 (ALPN h2)", p.URL, resp.Proto)
		}
	})

	t.Run("websocket upgrade over TLS", func(t *testing.T) {
		conn, err := tls.Dial("tcp", p.HTTPAddr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("TLS dial %s: %v", p.HTTPAddr, err)
		}
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(rpcTimeout)); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
			"Authorization: Bearer %s\r\n\r\n", p.HTTPAddr, userToken)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("read the upgrade response: %v", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("GET /ws over TLS: got %s, want 101 Switching Protocols", resp.Status)
		}
	})

	t.Run("plain http is refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("GET http://%s/healthz: got 200, want the plaintext request refused", p.HTTPAddr)
			}
		}
	})

	t.Run("admin over https", func(t *testing.T) {
		client := ca.WriteFiles(t, t.TempDir(), "admin.example")
		for _, tc := range []struct {
			name string
			args []string
			ok   bool
			want string // in stdout if ok, else in stderr
		}{
			{"--tls-ca", []string{"--tls-ca", files.CA}, true, "PARTITION"},
			{"a client certificate", []string{"--tls-ca", files.CA, "--tls-cert", client.Cert, "--tls-key", client.Key}, true, "PARTITION"},
			{"an https URL", []string{"--addr", "https://" + p.HTTPAddr, "--tls-ca", files.CA}, true, "PARTITION"},
			{"no --tls-ca", nil, false, "ring"},
			{"--tls-cert without --tls-key", []string{"--tls-ca", files.CA, "--tls-cert", client.Cert}, false, "go together"},
			{"an http URL", []string{"--addr", "http://" + p.HTTPAddr, "--tls-ca", files.CA}, false, "need https"},
		} {
			args := append([]string{"admin", "ring", "--addr", p.HTTPAddr, "--token", adminToken}, tc.args...)
			r := runHerald(t, args...)
			switch {
			case tc.ok && (r.code != 0 || !strings.Contains(r.stdout, tc.want)):
				t.Errorf("herald admin ring with %s: got status %d, stdout %q, stderr %q; want 0 and the ring", tc.name, r.code, r.stdout, r.stderr)
			case !tc.ok && (r.code != 1 || !strings.Contains(r.stderr, tc.want)):
				t.Errorf("herald admin ring with %s: got status %d, stderr %q; want 1 and %q", tc.name, r.code, r.stderr, tc.want)
			}
		}
	})

	if code, took := p.Signal(syscall.SIGTERM); code != 0 {
		t.Errorf("herald server: SIGTERM: got exit status %d after %v, want 0\nstderr:\n%s", code, took, p.Stderr())
	}
}

// bearer is a client interceptor sending a bearer token.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// startServer starts a one-node `herald server` with TLS on free loopback
// ports, with a client that trusts caFile, and waits until it is ready. It
// retries on other ports when a port was taken in between.
func startServer(t *testing.T, caFile string, args ...string) *proc {
	t.Helper()
	tc, err := (&tlsFlags{ca: caFile}).client()
	if err != nil {
		t.Fatal(err)
	}
	const attempts = 5
	for i := 1; ; i++ {
		httpAddr, raftAddr := freeAddr(t), freeAddr(t)
		all := append([]string{"server", "--node-id", "n1", "--data-dir", t.TempDir(),
			"--http", httpAddr, "--raft", raftAddr}, args...)
		p := &proc{
			t:        t,
			name:     fmt.Sprintf("herald#%d", procSerial.Add(1)),
			HTTPAddr: httpAddr,
			RaftAddr: raftAddr,
			URL:      "https://" + httpAddr,
			done:     make(chan struct{}),
		}
		p.stdout = newProcOutput(t.Output(), p.name+" stdout: ")
		p.stderr = newProcOutput(t.Output(), p.name+" stderr: ")
		p.cmd = exec.Command(heraldBin, all...)
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		p.cmd.WaitDelay = 5 * time.Second
		t.Logf("%s: herald %s", p.name, strings.Join(all, " "))
		p.started = time.Now()
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", heraldBin, err)
		}
		go func() {
			p.err = p.cmd.Wait()
			close(p.done)
		}()
		tr := &http.Transport{TLSClientConfig: tc.Clone(), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(true)
		tr.Protocols.SetHTTP2(true)
		p.Client = &http.Client{Transport: tr}
		t.Cleanup(p.Kill)
		clash, err := p.waitReady()
		if err == nil {
			t.Logf("%s ready: start-to-ready %v", p.name, p.StartToReady.Round(time.Millisecond))
			return p
		}
		p.Kill()
		if clash && i < attempts {
			t.Logf("%s: a port was taken (%v); retrying on other ports", p.name, err)
			continue
		}
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", p.name, err, p.Stdout(), p.Stderr())
	}
}
