package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/ring"
)

// fixedRing is a ring of three partitions: one healthy, one moving a
// replica (a non-voter, a desired placement that differs), one without a
// leader.
func fixedRing() *heraldv1.GetRingResponse {
	voter := func(id string) *heraldv1.Replica { return &heraldv1.Replica{NodeId: id, Voter: true} }
	first1, last1 := ring.Range(1, 3)
	return &heraldv1.GetRingResponse{
		PartitionCount: 3,
		PlacementEpoch: 42,
		Partitions: []*heraldv1.Partition{
			{Id: 0, FirstToken: 0, LastToken: first1 - 1, Leader: "n1",
				Replicas:        []*heraldv1.Replica{voter("n1"), voter("n2"), voter("n3")},
				DesiredReplicas: []string{"n1", "n3", "n2"}, // same set, other order
				CommitIndex:     4521, AppliedIndex: 4520, Health: heraldv1.Partition_HEALTH_OK},
			{Id: 1, FirstToken: first1, LastToken: last1, Leader: "n2",
				Replicas:        []*heraldv1.Replica{voter("n2"), voter("n3"), voter("n1"), {NodeId: "n4"}},
				DesiredReplicas: []string{"n2", "n3", "n4"},
				CommitIndex:     77, AppliedIndex: 77, Health: heraldv1.Partition_HEALTH_DEGRADED},
			{Id: 2, FirstToken: last1 + 1, LastToken: ^uint64(0),
				DesiredReplicas: []string{"n3", "n1", "n2"}, Health: heraldv1.Partition_HEALTH_NO_QUORUM},
		},
	}
}

// TestAdminFormat checks the tables herald admin prints, from fixed
// responses.
func TestAdminFormat(t *testing.T) {
	t.Parallel()
	t.Run("ring", func(t *testing.T) {
		var b bytes.Buffer
		if err := writeRing(&b, fixedRing()); err != nil {
			t.Fatal(err)
		}
		want := `PARTITION  TOKENS              LEADER  REPLICAS      DESIRED   COMMIT  APPLIED  HEALTH
0          00000000..55555555  n1      n1 n2 n3      -         4521    4520     ok
1          55555555..aaaaaaaa  n2      n2 n3 n1 n4*  n2 n3 n4  77      77       degraded
2          aaaaaaaa..ffffffff  -       -             n3 n1 n2  0       0        no-quorum

3 partitions (1 ok, 1 degraded, 1 no-quorum), placement epoch 42
`
		if got := b.String(); got != want {
			t.Errorf("writeRing: got\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("nodes", func(t *testing.T) {
		resp := &heraldv1.ListNodesResponse{MetaLeader: "n2", Nodes: []*heraldv1.Node{
			{Id: "n1", HttpAddr: "10.0.0.1:7700", RaftAddr: "10.0.0.1:7800", State: heraldv1.Node_STATE_ACTIVE,
				MetaVoter: true, Replicas: 16, Leaders: 6, Reachable: true, Roles: []string{"edge", "admin", "channel", "gateway"}},
			{Id: "n2", HttpAddr: "10.0.0.2:7700", RaftAddr: "10.0.0.2:7800", State: heraldv1.Node_STATE_DRAINING,
				MetaVoter: true, Replicas: 3, Leaders: 0, Reachable: true, Roles: []string{"edge", "gateway"}},
			{Id: "n10", HttpAddr: "10.0.0.10:7700", State: heraldv1.Node_STATE_REMOVED},
		}}
		var b bytes.Buffer
		if err := writeNodes(&b, resp); err != nil {
			t.Fatal(err)
		}
		want := `ID   HTTP            RAFT           STATE     ROLES                       META    REPLICAS  LEADERS  REACHABLE
n1   10.0.0.1:7700   10.0.0.1:7800  active    edge,admin,channel,gateway  voter   16        6        yes
n2   10.0.0.2:7700   10.0.0.2:7800  draining  edge,gateway                leader  3         0        yes
n10  10.0.0.10:7700  -              removed   -                           -       0         0        no

3 nodes, metadata leader n2
`
		if got := b.String(); got != want {
			t.Errorf("writeNodes: got\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("lookup", func(t *testing.T) {
		r := fixedRing()
		var b bytes.Buffer
		resp := &heraldv1.LookupChannelResponse{ChannelId: "general", Token: 0x8d0606d02950d07b, Partition: r.GetPartitions()[1]}
		if err := writeLookup(&b, resp); err != nil {
			t.Fatal(err)
		}
		want := `channel    general
token      8d0606d02950d07b
partition  1

PARTITION  TOKENS              LEADER  REPLICAS      DESIRED   COMMIT  APPLIED  HEALTH
1          55555555..aaaaaaaa  n2      n2 n3 n1 n4*  n2 n3 n4  77      77       degraded
`
		if got := b.String(); got != want {
			t.Errorf("writeLookup: got\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("digest", func(t *testing.T) {
		sumA := sha256.Sum256([]byte("a"))
		sumB := sha256.Sum256([]byte("b"))
		d := func(node string, index uint64, sum [32]byte) digestResult {
			return digestResult{node: node, resp: &heraldv1.GetReplicaDigestResponse{NodeId: node, AppliedIndex: index, Sha256: sum[:]}}
		}
		failed := digestResult{node: "n3", err: errors.New("digest: node n3: unavailable")}
		for _, tc := range []struct {
			name    string
			results []digestResult
			agree   bool
			line    string // a regexp
		}{
			{"equal", []digestResult{d("n1", 9, sumA), d("n2", 9, sumA), d("n3", 9, sumA)}, true,
				`^all 3 replicas are at applied index 9 and have equal digests$`},
			{"differ", []digestResult{d("n1", 9, sumA), d("n2", 9, sumB), d("n3", 9, sumA)}, false,
				`^DIGESTS DIFFER at applied index 9: n1, n3 ` + hex.EncodeToString(sumA[:8]) + ` vs n2 ` + hex.EncodeToString(sumB[:8]) + `$`},
			{"lagging follower", []digestResult{d("n1", 9, sumA), d("n2", 9, sumA), d("n3", 8, sumB)}, true,
				`^replicas at equal applied index have equal digests \(n1, n2 at 9; n3 at 8\)$`},
			{"all apart", []digestResult{d("n1", 9, sumA), d("n2", 8, sumB)}, true,
				`^replicas are at different applied indexes \(n1 at 9; n2 at 8\): nothing to compare`},
			{"one failed", []digestResult{d("n1", 9, sumA), d("n2", 9, sumA), failed}, true,
				`^all 2 replicas are at applied index 9 and have equal digests; 1 replica\(s\) did not answer$`},
			{"none answered", []digestResult{failed}, true, `^no replica answered$`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				line, agree := digestVerdict(tc.results)
				if agree != tc.agree || !regexp.MustCompile(tc.line).MatchString(line) {
					t.Errorf("digestVerdict: got %v, %q; want %v and a line matching %s", agree, line, tc.agree, tc.line)
				}
			})
		}
		var b bytes.Buffer
		if err := writeDigests(&b, []digestResult{d("n1", 9, sumA), failed}); err != nil {
			t.Fatal(err)
		}
		want := "NODE  APPLIED  SHA256\nn1    9        " + hex.EncodeToString(sumA[:8]) +
			"\nn3    -        error: digest: node n3: unavailable\n\nonly n1 answered: nothing to compare; 1 replica(s) did not answer\n"
		if got := b.String(); got != want {
			t.Errorf("writeDigests: got\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("sizes", func(t *testing.T) {
		for _, tc := range []struct {
			n    int64
			want string
		}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1258291, "1.2 MiB"}, {5 << 30, "5.0 GiB"}, {3 << 40, "3072.0 GiB"}} {
			if got := humanBytes(tc.n); got != tc.want {
				t.Errorf("humanBytes(%d): got %q, want %q", tc.n, got, tc.want)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		var b bytes.Buffer
		if err := writeProto(&b, fixedRing()); err != nil {
			t.Fatal(err)
		}
		var got heraldv1.GetRingResponse
		if err := protojson.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("writeProto output does not parse: %v\n%s", err, b.String())
		}
		if !proto.Equal(&got, fixedRing()) {
			t.Errorf("writeProto round trip: got %v, want %v", &got, fixedRing())
		}
		// protojson varies the space after a colon on purpose; match the
		// indentation and names only.
		if !regexp.MustCompile(`\n  "partitionCount":\s+3,\n`).MatchString(b.String()) {
			t.Errorf("writeProto: want indented protojson with lowerCamel names; got\n%s", b.String())
		}
	})
}

// TestAdminCommandLine checks help, argument errors and connection errors,
// with no cluster.
func TestAdminCommandLine(t *testing.T) {
	t.Parallel()
	common := []string{"--addr string", `(default "127.0.0.1:7700")`, "--token string", tokenEnv,
		"-o, --output string", `(default "table")`, "--timeout duration", "(default 30s)"}
	t.Run("help", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want []string // in stdout, besides the common flags
		}{
			{[]string{"admin", "--help"}, []string{"herald admin [command]", "ring", "nodes", "lookup", "drain", "remove",
				"rebalance", "transfer", "digest", "recover-partition", "snapshot"}},
			{[]string{"admin"}, []string{"herald admin [command]"}},
			{[]string{"admin", "ring", "--help"}, []string{"herald admin ring [flags]", "no-quorum"}},
			{[]string{"admin", "nodes", "--help"}, []string{"herald admin nodes [flags]"}},
			{[]string{"admin", "lookup", "--help"}, []string{"herald admin lookup CHANNEL [flags]"}},
			{[]string{"admin", "drain", "--help"}, []string{"herald admin drain NODE [flags]", "herald admin nodes"}},
			{[]string{"admin", "remove", "--help"}, []string{"herald admin remove NODE [flags]"}},
			{[]string{"admin", "rebalance", "--help"}, []string{"herald admin rebalance [flags]"}},
			{[]string{"admin", "transfer", "--help"}, []string{"herald admin transfer PARTITION NODE [flags]"}},
			{[]string{"admin", "digest", "--help"}, []string{"herald admin digest PARTITION [flags]", `"agree"`}},
			{[]string{"admin", "recover-partition", "--help"}, []string{"--from string", "LOSE ACKNOWLEDGED WRITES"}},
			{[]string{"admin", "snapshot", "--help"}, []string{"save", "restore"}},
			{[]string{"admin", "snapshot", "save", "--help"}, []string{"herald admin snapshot save DIR [flags]", "--force", "manifest.json"}},
			{[]string{"admin", "snapshot", "restore", "--help"}, []string{"herald admin snapshot restore DIR [flags]",
				"FRESH cluster", "SAME partition count", "every node up", "REPLACES"}},
		} {
			r := runHerald(t, tc.args...)
			if r.code != 0 {
				t.Errorf("herald %s: got exit status %d, want 0\nstderr:\n%s", strings.Join(tc.args, " "), r.code, r.stderr)
			}
			for _, w := range append(tc.want, common...) {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("herald %s: stdout lacks %q; got:\n%s", strings.Join(tc.args, " "), w, r.stdout)
				}
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		closed := freeAddr(t) // nothing listens there
		for _, tc := range []struct {
			args []string
			want string // in stderr
		}{
			{[]string{"admin", "ring", "--addr", closed}, "cannot connect to " + closed},
			{[]string{"admin", "snapshot", "save", t.TempDir(), "--addr", closed}, closed},
			{[]string{"admin", "ring", "--addr", "nohost"}, `--addr "nohost": want HOST:PORT`},
			{[]string{"admin", "ring", "--addr", "ftp://x:1"}, `--addr "ftp://x:1"`},
			{[]string{"admin", "ring", "-o", "yaml"}, `--output "yaml": want table or json`},
			{[]string{"admin", "ring", "--timeout", "0s"}, "--timeout 0s"},
			{[]string{"admin", "ring", "extra"}, `unknown command "extra"`},
			{[]string{"admin", "bogus"}, `unknown command "bogus" for "herald admin"`},
			{[]string{"admin", "snapshot", "bogus"}, `unknown command "bogus" for "herald admin snapshot"`},
			{[]string{"admin", "drain"}, "herald admin drain takes NODE; got 0 argument(s)"},
			{[]string{"admin", "transfer", "3"}, "takes PARTITION NODE"},
			{[]string{"admin", "transfer", "x", "n1"}, `partition "x": want a partition number`},
			{[]string{"admin", "digest", "1.5"}, `partition "1.5"`},
			{[]string{"admin", "recover-partition", "3"}, "--from NODE is required"},
			{[]string{"admin", "snapshot", "restore", t.TempDir()}, "has no manifest.json"},
		} {
			r := runHerald(t, tc.args...)
			t.Logf("herald %s: status %d after %v: %s", strings.Join(tc.args, " "), r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code != 1 {
				t.Errorf("herald %s: got exit status %d, want 1", strings.Join(tc.args, " "), r.code)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("herald %s: got stderr %q, want it to contain %q", strings.Join(tc.args, " "), r.stderr, tc.want)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
				t.Errorf("herald %s: got %d lines on stderr, want one:\n%s", strings.Join(tc.args, " "), n+1, r.stderr)
			}
		}
	})

	t.Run("no answer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		done := make(chan struct{})
		go func() { // accepts and never answers; ends when ln closes
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			_ = ln.Close() // best effort: ends the accept loop
			<-done
			for _, c := range conns {
				_ = c.Close() // best effort
			}
		})
		addr := ln.Addr().String()
		r := runHerald(t, "admin", "nodes", "--addr", addr, "--timeout", "300ms")
		want := "no answer from " + addr + " within --timeout 300ms"
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("herald admin nodes against a silent server: got status %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
		}
		if r.took > 10*time.Second {
			t.Errorf("herald admin nodes --timeout 300ms: took %v", r.took)
		}
	})
}

// tokenServer serves AdminService.GetRing with fixedRing and records the
// Authorization header of each request.
type tokenServer struct {
	heraldv1connect.UnimplementedAdminServiceHandler
}

func (tokenServer) GetRing(context.Context, *heraldv1.GetRingRequest) (*heraldv1.GetRingResponse, error) {
	return fixedRing(), nil
}

// TestAdminToken checks that the token from --token or HERALD_TOKEN goes
// out as a bearer token, and none without one. It sets the environment, so
// it does not run in parallel.
func TestAdminToken(t *testing.T) {
	var mu sync.Mutex
	var got []string
	path, h := heraldv1connect.NewAdminServiceHandler(tokenServer{})
	mux := http.NewServeMux()
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, ""},
		{"from-env", nil, "Bearer from-env"},
		{"from-env", []string{"--token", "from-flag"}, "Bearer from-flag"},
		{"", []string{"--token", "from-flag"}, "Bearer from-flag"},
	} {
		t.Setenv(tokenEnv, tc.env)
		mu.Lock()
		got = nil
		mu.Unlock()
		args := append([]string{"admin", "ring", "--addr", addr}, tc.args...)
		root := newRootCmd()
		root.SetArgs(args)
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		if err := root.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("herald %s with %s=%q: %v", strings.Join(args, " "), tokenEnv, tc.env, err)
		}
		mu.Lock()
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("herald %s with %s=%q: got Authorization %q, want [%q]", strings.Join(args, " "), tokenEnv, tc.env, got, tc.want)
		}
		mu.Unlock()
		if !strings.Contains(out.String(), "3 partitions (1 ok, 1 degraded, 1 no-quorum), placement epoch 42") {
			t.Errorf("herald %s: got stdout\n%s\nwant the ring table", strings.Join(args, " "), out.String())
		}
	}
}

// devCluster is one `herald dev --nodes N` process.
type devCluster struct {
	*proc          // HTTPAddr and the clients are node n1's
	Addrs []string // every node's HTTP address, n1 first
}

// freeBase returns 127.0.0.1:port for a port such that port..port+n-1 and
// port+100..port+100+n-1 were all free a moment ago, as herald dev
// --nodes n needs.
func freeBase(t *testing.T, n int) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		held := []net.Listener{ln}
		ok := base+100+n <= 65535
		for i := range n {
			for _, port := range []int{base + i, base + 100 + i} {
				if !ok || port == base {
					continue
				}
				l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
				if err != nil {
					ok = false
					continue
				}
				held = append(held, l)
			}
		}
		for _, l := range held {
			_ = l.Close() // best effort: only probing
		}
		if ok {
			return ln.Addr().String()
		}
	}
	t.Fatalf("found no base port with %d free ports at +0 and +100", n)
	return ""
}

// startDevCluster starts `herald dev --nodes n` (and args) on free loopback ports,
// waits until it says every node is ready and each node's /readyz answers
// 200, and kills it at cleanup. It retries on other ports when a port was
// taken in between.
func startDevCluster(t *testing.T, n int, args ...string) *devCluster {
	t.Helper()
	const attempts = 5
	for i := 1; ; i++ {
		base := freeBase(t, n)
		p := launchDev(t, devOptions{dataDir: t.TempDir(), httpAddr: base, raftAddr: freeAddr(t),
			args: append([]string{"--nodes", strconv.Itoa(n)}, args...)})
		host, portStr, _ := net.SplitHostPort(base)
		port, _ := strconv.Atoi(portStr)
		c := &devCluster{proc: p}
		for j := range n {
			c.Addrs = append(c.Addrs, net.JoinHostPort(host, strconv.Itoa(port+j)))
		}
		clash, err := c.waitReady()
		if err == nil {
			t.Logf("%s ready: %d nodes at %v, start-to-ready %v", p.name, n, c.Addrs, p.StartToReady.Round(time.Millisecond))
			return c
		}
		if clash && i < attempts {
			t.Logf("%s: a port was taken (%v); retrying on other ports", p.name, err)
			continue
		}
		p.Kill()
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", p.name, err, p.Stdout(), p.Stderr())
	}
}

func (c *devCluster) waitReady() (clash bool, err error) {
	if clash, err := c.waitReadyLine("nodes ready in "); err != nil {
		return clash, err
	}
	deadline := c.started.Add(readyTimeout)
	for _, addr := range c.Addrs {
		for {
			code, err := c.getAt(addr, "/readyz")
			if err == nil && code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				return false, fmt.Errorf("GET http://%s/readyz: got %d, %v; want 200 within %v", addr, code, err, readyTimeout)
			}
			select {
			case <-c.done:
				return false, fmt.Errorf("exited while waiting for /readyz: %v", c.err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return false, nil
}

// getAt returns the status code of GET path on the node at addr.
func (c *devCluster) getAt(addr, path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close() // best effort: only the status matters
	return resp.StatusCode, nil
}

// runAdmin runs `herald admin ARGS --addr ADDR` against node addr.
func runAdmin(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return runHerald(t, append(append([]string{"admin"}, args...), "--addr", addr)...)
}

// mustAdmin runs runAdmin and fails the test unless it exits 0.
func mustAdmin(t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := runAdmin(t, addr, args...)
	if r.code != 0 {
		t.Fatalf("herald admin %s --addr %s: exit status %d\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), addr, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// parseTable reads the table whose header line starts with first: one
// map per row, from column name to cell, up to the first blank line.
// Columns start where their header names start, as tabwriter aligns them.
func parseTable(out, first string) []map[string]string {
	lines := strings.Split(out, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, first+" ") })
	if start < 0 {
		return nil
	}
	header := lines[start]
	idx := regexp.MustCompile(`\S+`).FindAllStringIndex(header, -1)
	var rows []map[string]string
	for _, line := range lines[start+1:] {
		if strings.TrimSpace(line) == "" {
			break
		}
		row := map[string]string{}
		for i, span := range idx {
			from, to := span[0], len(line)
			if i+1 < len(idx) {
				to = min(idx[i+1][0], len(line))
			}
			if from < len(line) {
				row[header[span[0]:span[1]]] = strings.TrimSpace(line[from:to])
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// checkFor polls fn every step until it returns nil or total has passed,
// and then fails the test with fn's last error.
func checkFor(t *testing.T, total, step time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(step)
	}
}

// waitRingHealthy polls `herald admin ring` until it shows partitions
// partitions, each with three voting replicas, a leader and health ok.
func waitRingHealthy(t *testing.T, addr string, partitions int) string {
	t.Helper()
	begin := time.Now()
	var out string
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		r := runAdmin(t, addr, "ring")
		if r.code != 0 {
			return fmt.Errorf("herald admin ring: exit status %d: %s", r.code, r.stderr)
		}
		rows := parseTable(r.stdout, "PARTITION")
		if len(rows) != partitions {
			return fmt.Errorf("herald admin ring: got %d rows, want %d:\n%s", len(rows), partitions, r.stdout)
		}
		for i, row := range rows {
			if row["PARTITION"] != strconv.Itoa(i) || row["LEADER"] == "-" || row["HEALTH"] != "ok" ||
				len(strings.Fields(row["REPLICAS"])) != 3 || strings.Contains(row["REPLICAS"], "*") ||
				!slices.Contains(strings.Fields(row["REPLICAS"]), row["LEADER"]) {
				return fmt.Errorf("herald admin ring: row %d is %v; want partition %d with a leader among 3 voting replicas and health ok:\n%s",
					i, row, i, r.stdout)
			}
		}
		want := fmt.Sprintf("%d partitions (%d ok), placement epoch ", partitions, partitions)
		if !strings.Contains(r.stdout, want) {
			return fmt.Errorf("herald admin ring: no footer %q:\n%s", want, r.stdout)
		}
		out = r.stdout
		return nil
	})
	t.Logf("herald admin ring at %s: healthy after %v", addr, time.Since(begin).Round(time.Millisecond))
	return out
}

// channelsIn returns, for each of the given partitions, a channel id in
// it.
func channelsIn(t *testing.T, partitions uint32, want ...uint32) map[uint32]string {
	t.Helper()
	out := map[uint32]string{}
	for i := 0; len(out) < len(want); i++ {
		if i == 100000 {
			t.Fatalf("no channel id among %d maps to each of partitions %v", i, want)
		}
		id := fmt.Sprintf("c%d", i)
		p := ring.Partition(id, partitions)
		if _, ok := out[p]; !ok && slices.Contains(want, p) {
			out[p] = id
		}
	}
	return out
}

// TestAdminCluster runs herald admin against `herald dev --nodes 3`: the
// ring, nodes, lookup and digest views, their JSON, error reporting, and
// a snapshot saved from it and restored into a fresh cluster.
func TestAdminCluster(t *testing.T) {
	t.Parallel()
	const partitions = 16
	old := startDevCluster(t, 3)
	addr := old.Addrs[1] // any node answers for the cluster
	ringOut := waitRingHealthy(t, addr, partitions)
	t.Logf("herald admin ring:\n%s", ringOut)

	t.Run("ring json", func(t *testing.T) {
		var resp heraldv1.GetRingResponse
		out := mustAdmin(t, addr, "ring", "-o", "json")
		if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("herald admin ring -o json: %v\n%s", err, out)
		}
		if resp.GetPartitionCount() != partitions || len(resp.GetPartitions()) != partitions {
			t.Errorf("herald admin ring -o json: got %d partitions (count %d), want %d", len(resp.GetPartitions()), resp.GetPartitionCount(), partitions)
		}
		for _, p := range resp.GetPartitions() {
			first, last := ring.Range(p.GetId(), partitions)
			if p.GetFirstToken() != first || p.GetLastToken() != last {
				t.Errorf("partition %d: got tokens %x..%x, want %x..%x", p.GetId(), p.GetFirstToken(), p.GetLastToken(), first, last)
			}
		}
	})

	t.Run("nodes", func(t *testing.T) {
		out := mustAdmin(t, addr, "nodes")
		t.Logf("herald admin nodes:\n%s", out)
		rows := parseTable(out, "ID")
		if len(rows) != 3 {
			t.Fatalf("herald admin nodes: got %d rows, want 3:\n%s", len(rows), out)
		}
		for i, row := range rows {
			want := map[string]string{"ID": fmt.Sprintf("n%d", i+1), "HTTP": old.Addrs[i], "STATE": "active",
				"REPLICAS": strconv.Itoa(partitions), "REACHABLE": "yes", "ROLES": "edge,admin,channel,gateway"}
			for k, v := range want {
				if row[k] != v {
					t.Errorf("herald admin nodes: row %d: got %s %q, want %q (row %v)", i, k, row[k], v, row)
				}
			}
		}
		var resp heraldv1.ListNodesResponse
		out = mustAdmin(t, addr, "nodes", "-o", "json")
		if err := protojson.Unmarshal([]byte(out), &resp); err != nil || len(resp.GetNodes()) != 3 {
			t.Errorf("herald admin nodes -o json: got %d nodes, %v; want 3 and no error:\n%s", len(resp.GetNodes()), err, out)
		}
	})

	t.Run("lookup", func(t *testing.T) {
		want := ring.Partition("general", partitions)
		out := mustAdmin(t, addr, "lookup", "general")
		t.Logf("herald admin lookup general:\n%s", out)
		for _, line := range []string{"channel    general\n", fmt.Sprintf("token      %016x\n", ring.Hash("general")),
			fmt.Sprintf("partition  %d\n", want)} {
			if !strings.Contains(out, line) {
				t.Errorf("herald admin lookup general: no line %q in\n%s", line, out)
			}
		}
		if rows := parseTable(out, "PARTITION"); len(rows) != 1 || rows[0]["PARTITION"] != strconv.Itoa(int(want)) || rows[0]["HEALTH"] != "ok" {
			t.Errorf("herald admin lookup general: got rows %v, want partition %d's row, health ok", rows, want)
		}
		var resp heraldv1.LookupChannelResponse
		out = mustAdmin(t, addr, "lookup", "general", "-o", "json")
		if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("herald admin lookup -o json: %v\n%s", err, out)
		}
		if resp.GetChannelId() != "general" || resp.GetPartition().GetId() != want || resp.GetToken() != ring.Hash("general") {
			t.Errorf("herald admin lookup -o json: got %v, want general in partition %d", &resp, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"drain", "n9"}, `drain n9: node "n9" is not in the cluster (not_found)`},
			{[]string{"drain", "n1"}, "cannot drain"}, // 3 nodes hold 3 replicas each
			{[]string{"remove", "n9"}, `node "n9" is not in the cluster`},
			{[]string{"transfer", "99", "n1"}, "partition 99 does not exist"},
			{[]string{"digest", "99"}, "partition 99 does not exist"},
			{[]string{"lookup", "no spaces"}, "invalid_argument"},
		} {
			r := runAdmin(t, addr, tc.args...)
			t.Logf("herald admin %s: status %d: %s", strings.Join(tc.args, " "), r.code, strings.TrimSpace(r.stderr))
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("herald admin %s: got status %d, stderr %q; want 1 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
			}
		}
		r := runAdmin(t, addr, "recover-partition", "3", "--from", "n9")
		if r.code != 1 || !strings.Contains(r.stderr, "WARNING: recovering partition 3 from n9 alone. Writes that the lost replicas acknowledged") ||
			!strings.Contains(r.stderr, `node "n9" is not in the cluster`) {
			t.Errorf("herald admin recover-partition 3 --from n9: got status %d, stderr %q; want 1, the warning and the server's not-found message", r.code, r.stderr)
		}
		out := mustAdmin(t, addr, "rebalance")
		if !strings.Contains(out, "placement is balanced") && !strings.Contains(out, "changes") {
			t.Errorf("herald admin rebalance: got %q", out)
		}
	})

	t.Run("transfer", func(t *testing.T) {
		const p = 5
		var resp heraldv1.GetRingResponse
		if err := protojson.Unmarshal([]byte(mustAdmin(t, addr, "ring", "-o", "json")), &resp); err != nil {
			t.Fatal(err)
		}
		var to string
		for _, r := range resp.GetPartitions()[p].GetReplicas() {
			if r.GetNodeId() != resp.GetPartitions()[p].GetLeader() {
				to = r.GetNodeId()
				break
			}
		}
		begin := time.Now()
		out := mustAdmin(t, addr, "transfer", strconv.Itoa(p), to)
		t.Logf("herald admin transfer %d %s (from %s) took %v: %s", p, to, resp.GetPartitions()[p].GetLeader(), time.Since(begin).Round(time.Millisecond), out)
		if want := fmt.Sprintf("partition %d: %s leads now", p, to); !strings.HasPrefix(out, want) {
			t.Errorf("herald admin transfer %d %s: got %q, want a line starting %q", p, to, out, want)
		}
	})

	// Post to a few channels in a few partitions, partition 0 among them.
	chans := channelsIn(t, partitions, 0, 3, 8, 13)
	chans[ring.Partition("general", partitions)] = "general"
	acks := map[string][]ack{}
	for _, ch := range chans {
		createChannel(t, old.proc, ch)
		for i := range 3 {
			id, text := fmt.Sprintf("m%d", i), fmt.Sprintf("%s message %d", ch, i)
			resp, err := post(old.Messages, ch, id, text)
			if err != nil {
				t.Fatalf("PostMessage %s %s: %v", ch, id, err)
			}
			acks[ch] = append(acks[ch], ack{seq: resp.GetMessage().GetSeq(), id: id, text: text})
		}
	}
	t.Logf("posted 3 messages to each of %v", chans)

	t.Run("digest", func(t *testing.T) {
		var out string
		checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
			r := runAdmin(t, addr, "digest", "0")
			out = r.stdout
			if r.code != 0 || !regexp.MustCompile(`\nall 3 replicas are at applied index \d+ and have equal digests\n$`).MatchString(r.stdout) {
				return fmt.Errorf("herald admin digest 0: status %d, stdout\n%s\nstderr %s; want 3 replicas at one applied index, equal digests", r.code, r.stdout, r.stderr)
			}
			return nil
		})
		t.Logf("herald admin digest 0:\n%s", out)
		rows := parseTable(out, "NODE")
		if len(rows) != 3 || rows[0]["SHA256"] != rows[1]["SHA256"] || len(rows[0]["SHA256"]) != 16 {
			t.Errorf("herald admin digest 0: got rows %v, want 3 with equal 16-digit digests", rows)
		}
		var got digestJSON
		checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
			r := runAdmin(t, addr, "digest", "0", "-o", "json")
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				return fmt.Errorf("herald admin digest 0 -o json: %v\n%s", err, r.stdout)
			}
			if r.code != 0 || !got.Agree || len(got.Replicas) != 3 {
				return fmt.Errorf("herald admin digest 0 -o json: status %d, %+v; want 3 replicas that agree", r.code, got)
			}
			return nil
		})
		for _, e := range got.Replicas {
			if len(e.SHA256) != 64 || e.AppliedIndex == 0 || e.Error != "" {
				t.Errorf("herald admin digest 0 -o json: replica %+v; want a 64-digit sha256 and an applied index", e)
			}
		}
	})

	// Save.
	dir := filepath.Join(t.TempDir(), "backup")
	r := runAdmin(t, addr, "snapshot", "save", dir)
	t.Logf("herald admin snapshot save: status %d after %v:\n%s%s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("herald admin snapshot save %s: exit status %d: %s", dir, r.code, r.stderr)
	}
	for _, want := range []string{"partition 0 (1 of 16): ", "partition 15 (16 of 16): ", "saved 16 partitions"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("herald admin snapshot save: stdout lacks %q", want)
		}
	}
	m := checkSnapshotDir(t, dir, partitions)
	for p, ch := range chans {
		if m.Files[p].AppliedIndex == 0 {
			t.Errorf("manifest: partition %d (channel %s) has applied index 0, want the index of its posts", p, ch)
		}
	}
	if r := runAdmin(t, addr, "snapshot", "save", dir); r.code != 1 || !strings.Contains(r.stderr, "already holds a snapshot") {
		t.Errorf("herald admin snapshot save into a snapshot: got status %d, stderr %q; want 1 and a refusal", r.code, r.stderr)
	}
	jsonDir := filepath.Join(t.TempDir(), "backup-json")
	r = runAdmin(t, addr, "snapshot", "save", jsonDir, "-o", "json")
	var saved struct {
		Dir      string           `json:"dir"`
		Manifest snapshotManifest `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &saved); r.code != 0 || err != nil || saved.Dir != jsonDir || len(saved.Manifest.Files) != partitions {
		t.Errorf("herald admin snapshot save -o json: status %d, %v, %+v; want 0 and the manifest\nstdout:\n%s", r.code, err, saved, r.stdout)
	}
	if r := runAdmin(t, addr, "snapshot", "save", jsonDir, "--force"); r.code != 0 {
		t.Errorf("herald admin snapshot save --force: got status %d, stderr %q; want 0", r.code, r.stderr)
	}

	// Restore into a fresh cluster.
	fresh := startDevCluster(t, 3)
	waitRingHealthy(t, fresh.Addrs[0], partitions)

	// A snapshot of another partition count is refused before anything is
	// restored.
	fewer := filepath.Join(t.TempDir(), "fewer")
	if err := os.MkdirAll(fewer, 0o700); err != nil {
		t.Fatal(err)
	}
	small := snapshotManifest{Format: 1, Partitions: 8, SavedAt: m.SavedAt, Files: m.Files[:8]}
	for _, f := range small.Files {
		b, err := os.ReadFile(filepath.Join(dir, f.File))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fewer, f.File), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(small)
	if err := os.WriteFile(filepath.Join(fewer, manifestName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = runAdmin(t, fresh.Addrs[0], "snapshot", "restore", fewer)
	if r.code != 1 || !strings.Contains(r.stderr, "has 8 partitions but the cluster at") || !strings.Contains(r.stderr, "has 16") {
		t.Errorf("herald admin snapshot restore of 8 partitions into 16: got status %d, stderr %q; want 1 and a partition count error", r.code, r.stderr)
	}

	r = runAdmin(t, fresh.Addrs[2], "snapshot", "restore", dir)
	t.Logf("herald admin snapshot restore: status %d after %v:\n%s%s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("herald admin snapshot restore %s into a fresh cluster: exit status %d: %s", dir, r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "restored 16 partitions") {
		t.Errorf("herald admin snapshot restore: stdout lacks the summary:\n%s", r.stdout)
	}
	for ch, want := range acks {
		checkHistory(t, ch, history(t, fresh.Messages, ch), want, nil)
		// The restored channel takes new posts after its last seq.
		resp, err := post(fresh.Messages, ch, "after-restore", "after")
		if err != nil {
			t.Fatalf("PostMessage %s after the restore: %v", ch, err)
		}
		if got, wantSeq := resp.GetMessage().GetSeq(), want[len(want)-1].seq+1; got != wantSeq {
			t.Errorf("PostMessage %s after the restore: got seq %d, want %d", ch, got, wantSeq)
		}
	}

	// Last, as it leaves the old cluster short: removing a node of three
	// holding three replicas a partition goes ahead, with a warning.
	t.Run("remove", func(t *testing.T) {
		const warning = "n3 is removed with 2 active nodes left: each partition keeps 2 replicas, not 3, until another node joins"
		r := runAdmin(t, addr, "remove", "n3")
		t.Logf("herald admin remove n3: status %d\nstdout: %sstderr: %s", r.code, r.stdout, r.stderr)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "n3 is removed: ") || !strings.Contains(r.stderr, "WARNING: "+warning+".\n") {
			t.Errorf("herald admin remove n3: got status %d, stdout %q, stderr %q; want 0, n3 removed and the warning %q",
				r.code, r.stdout, r.stderr, warning)
		}
		// Again, as JSON: removing a removed node changes nothing and
		// warns the same.
		r = runAdmin(t, addr, "remove", "n3", "-o", "json")
		var resp heraldv1.RemoveNodeResponse
		if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil || r.code != 0 {
			t.Fatalf("herald admin remove n3 -o json: status %d, %v\nstdout: %s\nstderr: %s", r.code, err, r.stdout, r.stderr)
		}
		if resp.GetWarning() != warning || resp.GetNode().GetState() != heraldv1.Node_STATE_REMOVED {
			t.Errorf("herald admin remove n3 -o json: got %v, want n3 removed and warning %q", &resp, warning)
		}
	})
}

// checkSnapshotDir checks a saved snapshot directory: a manifest of format
// 1 listing one file per partition, each present with the size and
// SHA-256 the manifest gives.
func checkSnapshotDir(t *testing.T, dir string, partitions int) *snapshotManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		t.Fatalf("read the manifest: %v", err)
	}
	var m snapshotManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, b)
	}
	if m.Format != 1 || int(m.Partitions) != partitions || len(m.Files) != partitions {
		t.Fatalf("manifest: got format %d, %d partitions, %d files; want 1, %d, %d", m.Format, m.Partitions, len(m.Files), partitions, partitions)
	}
	if _, err := time.Parse(time.RFC3339, m.SavedAt); err != nil {
		t.Errorf("manifest: saved_at %q: %v", m.SavedAt, err)
	}
	for i, f := range m.Files {
		if f.Partition != uint32(i) || f.File != fmt.Sprintf("partition-%03d.snap", i) {
			t.Errorf("manifest: files[%d] is partition %d in %s; want partition %d in partition-%03d.snap", i, f.Partition, f.File, i, i)
		}
		data, err := os.ReadFile(filepath.Join(dir, f.File))
		if err != nil {
			t.Errorf("partition %d: %v", i, err)
			continue
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != f.SHA256 || int64(len(data)) != f.Bytes {
			t.Errorf("partition %d: %s has %d bytes, sha256 %s; the manifest says %d, %s", i, f.File, len(data), got, f.Bytes, f.SHA256)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != partitions+1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v; want the %d partition files and the manifest only", dir, names, partitions)
	}
	return &m
}
