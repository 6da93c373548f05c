package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDevFlags checks the command line: help, version, and the flag
// errors that must stop herald dev before it starts.
func TestDevFlags(t *testing.T) {
	t.Parallel()
	t.Run("help", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want []string // in stdout
		}{
			{[]string{"--help"}, []string{"Usage:", "herald [command]", "dev", "version", "-h, --help"}},
			{[]string{"help"}, []string{"Usage:", "dev", "version"}},
			{[]string{"dev", "--help"}, []string{"Usage:", "herald dev [flags]", "-h, --help",
				"--data-dir string", `(default "herald-data")`,
				"--http string", `(default "127.0.0.1:7700")`,
				"--raft string", `(default "127.0.0.1:7800")`,
				"--partitions uint32", "(default 16)",
				"--log-level string", "--log-format string",
				"--min-free-disk bytes", "(default 1GiB)", "--state-quota bytes", "(default 8GiB)"}},
			{[]string{"server", "--help"}, []string{"herald server [flags]", "--min-free-disk bytes", "(default 1GiB)",
				"--state-quota bytes", "(default 8GiB)", "refuses writes (resource_exhausted"}},
			{[]string{"dev", "-h"}, []string{"herald dev [flags]", "--data-dir"}},
			{[]string{"version", "--help"}, []string{"Usage:", "herald version [flags]", "-h, --help"}},
		} {
			r := runHerald(t, tc.args...)
			if r.code != 0 {
				t.Errorf("herald %s: got exit status %d, want 0\nstderr:\n%s", strings.Join(tc.args, " "), r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("herald %s: stdout lacks %q; got:\n%s", strings.Join(tc.args, " "), w, r.stdout)
				}
			}
		}
	})

	t.Run("version", func(t *testing.T) {
		r := runHerald(t, "version")
		want := regexp.MustCompile(`^herald \S+ \(go\d\S*, \w+/\w+\)\n$`)
		if r.code != 0 || !want.MatchString(r.stdout) {
			t.Errorf("herald version: got status %d, stdout %q; want 0 and a line matching %s", r.code, r.stdout, want)
		}
		if r.stderr != "" {
			t.Errorf("herald version: got stderr %q, want none", r.stderr)
		}
	})

	t.Run("bad flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string // in stderr
		}{
			{[]string{"dev", "--http", "0.0.0.0:7700"}, "loopback"},
			{[]string{"dev", "--http", ":7700"}, "loopback"},
			{[]string{"dev", "--http", "[::]:7700"}, "loopback"},
			{[]string{"dev", "--http", "192.0.2.1:7700"}, "loopback"},
			{[]string{"dev", "--raft", "0.0.0.0:7800"}, "loopback"},
			{[]string{"dev", "--http", "127.0.0.1"}, "--http"},
			{[]string{"dev", "--bogus"}, "unknown flag: --bogus"},
			{[]string{"dev", "--partitions", "many"}, `invalid argument "many" for "--partitions"`},
			{[]string{"dev", "--log-level", "loud"}, "--log-level"},
			{[]string{"dev", "--log-format", "xml"}, "--log-format"},
			{[]string{"dev", "extra"}, `unknown command "extra"`},
			{[]string{"bogus"}, `unknown command "bogus"`},
			{[]string{"version", "--bogus"}, "unknown flag: --bogus"},
			{[]string{"server", "--insecure", "--node-id", "n1", "--bootstrap-expect", "1", "--data-dir", filepath.Join(t.TempDir(), "data"), "--roles", "edge,gatway"},
				`--roles "edge,gatway": unknown role "gatway": want one or more of edge, admin, channel, gateway`},
			{[]string{"server", "--insecure", "--node-id", "n1", "--bootstrap-expect", "1", "--data-dir", filepath.Join(t.TempDir(), "data"), "--roles", ""},
				`--roles "": no roles: give one or more of edge, admin, channel, gateway`},
		} {
			// A data dir of its own, so a regression that starts the node
			// anyway leaves nothing behind in the package directory.
			args := append(tc.args, "--data-dir", filepath.Join(t.TempDir(), "data"))
			if tc.args[0] != "dev" {
				args = tc.args
			}
			r := runHerald(t, args...)
			t.Logf("herald %s: status %d after %v: %s", strings.Join(tc.args, " "), r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code != 1 {
				t.Errorf("herald %s: got exit status %d, want 1", strings.Join(tc.args, " "), r.code)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("herald %s: got stderr %q, want it to contain %q", strings.Join(tc.args, " "), r.stderr, tc.want)
			}
			if strings.Contains(r.stdout, "Ready in") {
				t.Errorf("herald %s: got a node that started (stdout %q), want none", strings.Join(tc.args, " "), r.stdout)
			}
			if took := r.took; took > 10*time.Second {
				t.Errorf("herald %s: took %v to fail, want it to fail fast", strings.Join(tc.args, " "), took)
			}
		}
	})

	t.Run("server needs a secret", func(t *testing.T) {
		if os.Getenv("HERALD_SECRET_FILE") != "" {
			t.Fatal("HERALD_SECRET_FILE is set: this test needs it unset")
		}
		dir := filepath.Join(t.TempDir(), "data")
		r := runHerald(t, "server", "--node-id", "n1", "--data-dir", dir, "--bootstrap-expect", "1",
			"--http", "127.0.0.1:0", "--raft", "127.0.0.1:0")
		want := `herald: no cluster secret: pass --secret-file FILE (create one with "herald secret new FILE") or --insecure to run without authentication` + "\n"
		if r.code != 1 || r.stderr != want {
			t.Errorf("herald server without a secret: got status %d, stderr %q; want 1 and the one line %q", r.code, r.stderr, want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("herald server without a secret: data dir %s: got %v, want it never created", dir, err)
		}
	})

	t.Run("partitions fixed", func(t *testing.T) {
		dir := t.TempDir()
		p := startDev(t, devOptions{dataDir: dir, args: []string{"--partitions", "4"}})
		if code, _ := p.Signal(os.Interrupt); code != 0 {
			t.Fatalf("exit status after SIGINT: got %d, want 0", code)
		}
		want := []string{"000", "001", "002", "003"}
		if got := partitionDirs(t, dir); !slices.Equal(got, want) {
			t.Fatalf("partition dirs after --partitions 4: got %v, want %v", got, want)
		}

		r := runHerald(t, "dev", "--data-dir", dir, "--http", freeAddr(t), "--raft", freeAddr(t), "--partitions", "8")
		if r.code != 1 || !strings.Contains(r.stderr, "cannot change") || !strings.Contains(r.stderr, "4 partitions") {
			t.Errorf("restart with --partitions 8: got status %d, stderr %q; want 1 and a message that the count (4 partitions) cannot change",
				r.code, r.stderr)
		}

		for _, args := range [][]string{nil, {"--partitions", "4"}} {
			p := startDev(t, devOptions{dataDir: dir, args: args})
			if code, _ := p.Signal(os.Interrupt); code != 0 {
				t.Fatalf("exit status after SIGINT: got %d, want 0", code)
			}
			if got := partitionDirs(t, dir); !slices.Equal(got, want) {
				t.Errorf("partition dirs after a restart with %q: got %v, want %v", args, got, want)
			}
		}
	})
}

// TestDevStartFailures checks that herald dev fails fast, with exit status
// 1 and a message, when its ports or its data directory are taken, and
// that it harms nothing.
func TestDevStartFailures(t *testing.T) {
	t.Parallel()
	t.Run("port in use", func(t *testing.T) {
		for _, flag := range []string{"--http", "--raft"} {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addrs := map[string]string{"--http": freeAddr(t), "--raft": freeAddr(t)}
			addrs[flag] = ln.Addr().String()
			r := runHerald(t, "dev", "--data-dir", t.TempDir(), "--http", addrs["--http"], "--raft", addrs["--raft"])
			_ = ln.Close() // best effort: the test is done with it
			t.Logf("%s %s taken: status %d after %v: %s", flag, addrs[flag], r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code != 1 || !strings.Contains(r.stderr, flag+" "+addrs[flag]) || !strings.Contains(r.stderr, "address already in use") {
				t.Errorf("herald dev with %s %s taken: got status %d, stderr %q; want 1 and a message naming %s and \"address already in use\"",
					flag, addrs[flag], r.code, r.stderr, flag)
			}
		}
	})

	t.Run("data dir in use", func(t *testing.T) {
		dir := t.TempDir()
		p := startDev(t, devOptions{dataDir: dir, args: []string{"--partitions", "4"}})
		createChannel(t, p, "general")
		if _, err := post(p.Messages, "general", "m1", "before"); err != nil {
			t.Fatalf("PostMessage: %v", err)
		}
		r := runHerald(t, "dev", "--data-dir", dir, "--http", freeAddr(t), "--raft", freeAddr(t))
		t.Logf("second herald dev on the same --data-dir: status %d after %v: %s", r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
		if r.code != 1 || !strings.Contains(r.stderr, dir) {
			t.Errorf("second herald dev on the same --data-dir: got status %d, stderr %q; want 1 and a message naming %s", r.code, r.stderr, dir)
		}
		if took := r.took; took > 10*time.Second {
			t.Errorf("second herald dev on the same --data-dir: took %v to fail, want it to fail fast", took)
		}
		// The first one is unharmed.
		if _, err := post(p.Messages, "general", "m2", "after"); err != nil {
			t.Fatalf("PostMessage after the second start failed: %v", err)
		}
		if code, _ := p.Signal(os.Interrupt); code != 0 {
			t.Fatalf("exit status after SIGINT: got %d, want 0", code)
		}
		q := startDev(t, devOptions{dataDir: dir})
		checkHistory(t, "general", history(t, q.Messages, "general"),
			[]ack{{seq: 1, id: "m1", text: "before"}, {seq: 2, id: "m2", text: "after"}}, nil)
	})
}

// partitionDirs lists the data directory's partition directories.
func partitionDirs(t *testing.T, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "partitions"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestBannerCurlExample runs the requests that herald dev's banner tells
// the user to try, as curl would send them.
func TestBannerCurlExample(t *testing.T) {
	t.Parallel()
	p := startDev(t, devOptions{})
	banner := p.Stdout()
	if code, err := p.get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("GET /healthz: got %d, %v; want 200", code, err)
	}

	for _, want := range []string{
		"HTTP       " + p.URL + " ",
		"WebSocket  ws://" + p.HTTPAddr + "/ws",
		"console    " + p.URL + "/",
		"Raft       " + p.RaftAddr,
		"data       " + p.dataDir,
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q; got:\n%s", want, banner)
		}
	}

	// curl -s -H 'Content-Type: application/json' -d '{...}' \
	//   http://host:port/Service/Method
	curlRE := regexp.MustCompile(`curl -s -H '([^']*)' -d '([^']*)' \\\n\s+(\S+)`)
	cmds := curlRE.FindAllStringSubmatch(banner, -1)
	if len(cmds) != 3 {
		t.Fatalf("banner: got %d curl commands, want 3 (create, post, history); banner:\n%s", len(cmds), banner)
	}
	var got []map[string]any
	for _, c := range cmds {
		header, body, rawURL := c[1], c[2], c[3]
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatalf("banner URL %q: %v", rawURL, err)
		}
		if u.Scheme != "http" || u.Host != p.HTTPAddr {
			t.Errorf("banner URL %s: got %s://%s, want http://%s (the bound --http address)", rawURL, u.Scheme, u.Host, p.HTTPAddr)
		}
		name, value, ok := strings.Cut(header, ": ")
		if !ok {
			t.Fatalf("banner header %q: want Name: value", header)
		}
		if !json.Valid([]byte(body)) {
			t.Fatalf("banner body %q for %s: not JSON", body, rawURL)
		}
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, strings.NewReader(body))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		req.Header.Set(name, value)
		resp, err := p.Client.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("POST %s %s: %v", rawURL, body, err)
		}
		var out map[string]any
		derr := json.NewDecoder(resp.Body).Decode(&out)
		_ = resp.Body.Close() // best effort: the body has been read
		cancel()
		if resp.StatusCode != http.StatusOK || derr != nil {
			t.Fatalf("POST %s %s: got status %d, body %v (%v); want 200 and JSON", rawURL, body, resp.StatusCode, out, derr)
		}
		t.Logf("POST %s %s → %v", u.Path, body, out)
		got = append(got, out)
	}

	// Create → the channel; post → seq 1; history → that message.
	if id := dig(got[0], "channel", "id"); id != "general" {
		t.Errorf("CreateChannel: got channel.id %v, want general", id)
	}
	want := map[string]any{"channelId": "general", "seq": "1", "text": "hello", "clientMsgId": "m1", "author": "anonymous"}
	msg, _ := got[1]["message"].(map[string]any)
	for k, v := range want {
		if msg[k] != v {
			t.Errorf("PostMessage: got message.%s %v, want %v (message %v)", k, msg[k], v, msg)
		}
	}
	msgs, _ := got[2]["messages"].([]any)
	if len(msgs) != 1 {
		t.Fatalf("GetHistory: got %d messages, want 1: %v", len(msgs), got[2])
	}
	h, _ := msgs[0].(map[string]any)
	for k, v := range want {
		if h[k] != v {
			t.Errorf("GetHistory: got messages[0].%s %v, want %v", k, h[k], v)
		}
	}
}

// dig returns m[k0][k1]... or nil.
func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// TestDevBannerWithAuth starts herald dev with a secret in a folder whose
// name needs quoting: the banner's token command, run by a shell as
// printed, mints a token the node accepts, and requests without one are
// refused.
func TestDevBannerWithAuth(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "my secrets")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "cluster.secret")
	if r := runHerald(t, "secret", "new", secret); r.code != 0 {
		t.Fatalf("herald secret new: got status %d, stderr %q", r.code, r.stderr)
	}
	p := startDev(t, devOptions{args: []string{"--secret-file", secret}})
	m := regexp.MustCompile(`(?m)^  TOKEN=\$\((.*)\)$`).FindStringSubmatch(p.Stdout())
	if m == nil {
		t.Fatalf("banner: no TOKEN=$(...) line; got:\n%s", p.Stdout())
	}
	sh := exec.Command("sh", "-c", m[1])
	sh.Env = append(os.Environ(), "PATH="+filepath.Dir(heraldBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := sh.Output()
	if err != nil {
		t.Fatalf("banner's token command %q: %v", m[1], err)
	}
	token := strings.TrimSpace(string(out))

	create := func(token string) int {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/herald.v1.ChannelService/CreateChannel",
			strings.NewReader(`{"channel_id":"general"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := p.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := create(""); code != http.StatusUnauthorized {
		t.Errorf("CreateChannel without a token: got %d, want 401", code)
	}
	if code := create(token); code != http.StatusOK {
		t.Errorf("CreateChannel with the banner's token: got %d, want 200", code)
	}
}
