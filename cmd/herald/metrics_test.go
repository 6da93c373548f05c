package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// documentedMetrics reads the README's table of metrics: name → type.
func documentedMetrics(t *testing.T) map[string]string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(herald_[a-z_]+)` \\| (counter|gauge|histogram) \\|")
	out := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = m[2]
	}
	if len(out) < 20 {
		t.Fatalf("README documents %d metrics in its table; the table was not found", len(out))
	}
	return out
}

// scrapeAll reads every node's /metrics.
func scrapeCluster(t *testing.T, c *devCluster) []*scrapeResult {
	t.Helper()
	out := make([]*scrapeResult, len(c.Addrs))
	for i, addr := range c.Addrs {
		ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
		m, err := scrapeMetrics(ctx, c.Client, "http://"+addr)
		cancel()
		if err != nil {
			t.Fatalf("scrape %s: %v", addr, err)
		}
		out[i] = m
	}
	return out
}

func sumOver(ms []*scrapeResult, name string, labels ...string) float64 {
	var t float64
	for _, m := range ms {
		t += m.sum(name, labels...)
	}
	return t
}

// TestMetricsCluster scrapes /metrics of a 3-node cluster under load: the
// series the README documents exist with their types (and nothing
// undocumented), posts acknowledged rise by exactly the posts made,
// deliveries by at least what the subscribers received, every partition
// has one leader, and once writes stop the replicas of each partition
// applied the same index. herald admin top shows the load, and the Grafana
// dashboard uses documented series only.
func TestMetricsCluster(t *testing.T) {
	t.Parallel()
	const partitions = 16
	c := startDevCluster(t, 3)
	waitRingHealthy(t, c.Addrs[0], partitions)
	docs := documentedMetrics(t)
	posts, writers, channels := 600, 6, 8
	if testing.Short() {
		posts = 240
	}
	clients := make([]heraldv1connect.MessageServiceClient, len(c.Addrs))
	for i, addr := range c.Addrs {
		clients[i] = heraldv1connect.NewMessageServiceClient(c.Client, "http://"+addr)
	}
	for ch := range channels {
		createChannel(t, c.proc, fmt.Sprintf("m%d", ch))
	}
	// One Subscribe stream per node on m0: deliveries move on every node.
	subCtx, stopSubs := context.WithCancel(t.Context())
	defer stopSubs()
	var received sync.WaitGroup
	var delivered [3]atomic.Int64
	for i, cl := range clients {
		s, err := cl.Subscribe(subCtx, &heraldv1.SubscribeRequest{ChannelId: "m0"})
		if err != nil {
			t.Fatalf("Subscribe on %s: %v", c.Addrs[i], err)
		}
		received.Go(func() {
			for s.Receive() {
				if s.Msg().GetEvent() != nil {
					delivered[i].Add(1)
				}
			}
		})
	}
	before := scrapeCluster(t, c)

	// Writers post until herald admin top has shown a view and at least
	// posts were made, so that the view falls inside the load.
	top := make(chan result, 1)
	topDone := make(chan struct{})
	go func() {
		top <- runAdmin(t, c.Addrs[1], "top", "--count", "1", "--interval", "1500ms")
		close(topDone)
	}()
	var wg sync.WaitGroup
	var made, toM0 atomic.Int64
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; ; i += writers {
				select {
				case <-topDone:
					if i >= posts {
						return
					}
				default:
				}
				ch := fmt.Sprintf("m%d", i%channels)
				if _, err := post(clients[i%len(clients)], ch, fmt.Sprintf("p%d", i), "load"); err != nil {
					errs <- fmt.Errorf("post %d to %s: %w", i, ch, err)
					return
				}
				made.Add(1)
				if ch == "m0" {
					toM0.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	posts = int(made.Load())

	r := <-top
	t.Logf("herald admin top under load:\n%s", r.stdout)
	if r.code != 0 {
		t.Fatalf("herald admin top: exit %d\n%s", r.code, r.stderr)
	}
	rows := parseTable(r.stdout, "NODE")
	if len(rows) != 4 || rows[3]["NODE"] != "all" {
		t.Fatalf("herald admin top: got %d rows, want n1, n2, n3 and all:\n%s", len(rows), r.stdout)
	}
	for i, row := range rows[:3] {
		if row["NODE"] != fmt.Sprintf("n%d", i+1) || row["READY"] != "yes" || row["REPLICAS"] != strconv.Itoa(partitions) {
			t.Errorf("herald admin top: row %d: %v, want n%d ready with %d replicas", i, row, i+1, partitions)
		}
	}
	if v, err := strconv.ParseFloat(rows[3]["POSTS/S"], 64); err != nil || v <= 0 {
		t.Errorf("herald admin top: all POSTS/S %q under load, want > 0", rows[3]["POSTS/S"])
	}
	if rows[3]["LEADERS"] != strconv.Itoa(partitions) {
		t.Errorf("herald admin top: all LEADERS %q, want %d", rows[3]["LEADERS"], partitions)
	}

	// The counters moved by what was done.
	after := scrapeCluster(t, c)
	const postProc = "procedure=/herald.v1.MessageService/PostMessage"
	if d := sumOver(after, "herald_posts_acknowledged_total") - sumOver(before, "herald_posts_acknowledged_total"); d != float64(posts) {
		t.Errorf("herald_posts_acknowledged_total rose by %v over the nodes, want %d (the posts made)", d, posts)
	}
	if d := sumOver(after, "herald_requests_total", postProc, "code=ok") - sumOver(before, "herald_requests_total", postProc, "code=ok"); d != float64(posts) {
		t.Errorf("herald_requests_total{PostMessage,ok} rose by %v, want %d", d, posts)
	}
	if d := sumOver(after, "herald_request_duration_seconds", postProc) - sumOver(before, "herald_request_duration_seconds", postProc); d != float64(posts) {
		t.Errorf("herald_request_duration_seconds{PostMessage} counted %v requests, want %d", d, posts)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for i := range delivered {
			if got := delivered[i].Load(); got != toM0.Load() {
				return fmt.Errorf("subscriber on %s got %d events, want the %d posts to m0", c.Addrs[i], got, toM0.Load())
			}
		}
		return nil
	})
	after = scrapeCluster(t, c)
	if out, want := sumOver(after, "herald_gateway_events_out_total")-sumOver(before, "herald_gateway_events_out_total"), 3*toM0.Load(); out != float64(want) {
		t.Errorf("herald_gateway_events_out_total rose by %v, want %d (m0's posts to its 3 subscribers)", out, want)
	}
	if in, want := sumOver(after, "herald_gateway_events_in_total")-sumOver(before, "herald_gateway_events_in_total"), 3*toM0.Load(); in != float64(want) {
		t.Errorf("herald_gateway_events_in_total rose by %v, want %d (m0's posts, on each node's upstream)", in, want)
	}
	if v := sumOver(after, "herald_gateway_subscriptions"); v != 3 {
		t.Errorf("herald_gateway_subscriptions: %v over the nodes, want 3", v)
	}
	if v := sumOver(after, "herald_partition_role", "role=leader"); v != partitions {
		t.Errorf("herald_partition_role{role=leader}: %v over the nodes, want %d", v, partitions)
	}
	for i, m := range after {
		if n := len(m.all("herald_partition_term")); n != partitions {
			t.Errorf("%s: %d replicas in herald_partition_term, want %d", c.Addrs[i], n, partitions)
		}
		if m.sum("herald_log_append_duration_seconds") == 0 {
			t.Errorf("%s: no shared-log appends observed", c.Addrs[i])
		}
	}

	// Quiescence: each partition's replicas applied the same index, the
	// leader's commit index.
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		ms := scrapeCluster(t, c)
		for p := range partitions {
			l := "partition=" + strconv.Itoa(p)
			commit := 0.0
			for _, m := range ms {
				if len(m.all("herald_partition_role", l, "role=leader")) > 0 {
					commit = m.sum("herald_partition_commit_index", l)
				}
			}
			for i, m := range ms {
				if a := m.sum("herald_partition_applied_index", l); a != commit || a == 0 {
					return fmt.Errorf("partition %d: %s applied %v, leader's commit index %v", p, c.Addrs[i], a, commit)
				}
			}
		}
		return nil
	})

	// The documented series, no more and no fewer.
	seen := map[string]string{}
	for _, m := range after {
		for name, f := range m.fams {
			seen[name] = strings.ToLower(f.GetType().String())
		}
	}
	for name, typ := range docs {
		if seen[name] != typ {
			t.Errorf("README documents %s (%s); the nodes serve it as %q", name, typ, seen[name])
		}
	}
	for name := range seen {
		if strings.HasPrefix(name, "herald_") && docs[name] == "" {
			t.Errorf("the nodes serve %s, which the README's table does not document", name)
		}
	}
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if seen[want] == "" {
			t.Errorf("no %s: the Go and process collectors are missing", want)
		}
	}
	checkDashboard(t, docs, seen)

	stopSubs()
	received.Wait()
	t.Logf("%d posts, %d to m0, each received by its subscriber on every node", posts, toM0.Load())
}

// checkDashboard checks that the Grafana dashboard parses and that every
// series its queries use is one the nodes serve (documented, for herald_).
func checkDashboard(t *testing.T, docs, seen map[string]string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "testdata", "grafana", "herald.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("testdata/grafana/herald.json: %v", err)
	}
	if dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("testdata/grafana/herald.json: title %q, %d panels", dash.Title, len(dash.Panels))
	}
	name := regexp.MustCompile(`\b(herald|go|process)_[a-z_]+\b`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, n := range name.FindAllString(q.Expr, -1) {
				base := n
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if s, ok := strings.CutSuffix(n, suffix); ok && docs[s] == "histogram" {
						base = s
					}
				}
				if seen[base] == "" || strings.HasPrefix(base, "herald_") && docs[base] == "" {
					t.Errorf("dashboard panel %q queries %s, which the nodes do not serve as documented", p.Title, n)
				}
			}
		}
	}
}
