package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

// fanoutJSON runs herald bench fanout with args and --json, requires it to
// exit 0, and decodes its result.
func fanoutJSON(t *testing.T, args ...string) *bench.FanoutResult {
	t.Helper()
	args = append([]string{"bench", "fanout", "--json"}, args...)
	r := runHeraldWithin(t, 2*time.Minute, args...)
	if r.code != 0 {
		t.Fatalf("herald %s: status %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	var res bench.FanoutResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("herald %s: %v\nstdout: %s", strings.Join(args, " "), err, r.stdout)
	}
	t.Logf("herald %s: %d posts, %d deliveries, %.0f/s, p50 %.2f ms, p99 %.2f ms; subscriber errors %v; progress:\n%s",
		strings.Join(args, " "), res.Posts, res.Deliveries, res.DeliveriesPerSecond, res.Latency.P50, res.Latency.P99,
		res.SubscriberErrors, r.stderr)
	return &res
}

// checkFanout checks what every fan-out run must report: every
// acknowledged post delivered to each of its channel's subscribers, no
// violation, ordered percentiles and a timeline.
func checkFanout(t *testing.T, res *bench.FanoutResult, posts int64, subscribers, channels int) {
	t.Helper()
	if res.Subscribers != subscribers || res.Channels != channels {
		t.Errorf("setup: got %d subscribers, %d channels; want %d, %d", res.Subscribers, res.Channels, subscribers, channels)
	}
	if res.Posts < posts || len(res.PostErrors) != 0 {
		t.Errorf("got %d acknowledged posts and errors %v, want at least %d and none", res.Posts, res.PostErrors, posts)
	}
	if want := res.Posts * int64(subscribers/channels); res.Deliveries != want || res.ExpectedDeliveries != want {
		t.Errorf("got %d deliveries of %d expected, want %d (%d posts × %d subscribers a channel)",
			res.Deliveries, res.ExpectedDeliveries, want, res.Posts, subscribers/channels)
	}
	if v := res.Violations; v.Total() != 0 {
		t.Errorf("violations %+v, want none", v)
	}
	if len(res.Resyncs) != 0 {
		t.Errorf("resync_required %v, want none on an idle cluster", res.Resyncs)
	}
	for _, l := range []bench.Latency{res.Latency, res.PostLatency} {
		if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("latency %+v: want 0 < p50 <= p90 <= p99 <= p99.9 <= max", l)
		}
	}
	if res.DeliveriesPerSecond <= 0 || len(res.Timeline) == 0 || len(res.Curve) == 0 {
		t.Errorf("got %v deliveries/s, a timeline of %d seconds and %d percentiles; want all", res.DeliveriesPerSecond, len(res.Timeline), len(res.Curve))
	}
}

// TestBenchFanoutOwnCluster runs herald bench fanout on a cluster of three
// herald server processes it starts itself: 8 subscribers over the 3
// nodes, 4 on each of 2 channels, until 150 posts are acknowledged. Every
// post must reach its 4 subscribers, the servers' CPU must be counted,
// and the HTML report must hold the figures.
func TestBenchFanoutOwnCluster(t *testing.T) {
	t.Parallel()
	page := filepath.Join(t.TempDir(), "report.html")
	res := fanoutJSON(t, "--count", "150", "--subscribers", "8", "--channels", "2", "--size", "64",
		"--partitions", "4", "--warmup", "0s", "--html", page)
	if res.Nodes != 3 || res.Size != 64 || res.Rate != 0 {
		t.Errorf("setup: got %d nodes, %d bytes, rate %v; want 3, 64, 0 (synchronous)", res.Nodes, res.Size, res.Rate)
	}
	checkFanout(t, res, 150, 8, 2)
	if res.CPUSecondsPerMillion == nil || *res.CPUSecondsPerMillion <= 0 {
		t.Errorf("server CPU per million deliveries: got %v, want a positive figure", res.CPUSecondsPerMillion)
	}

	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	if n := strings.Count(html, "<svg"); n != 3 {
		t.Errorf("report: %d plots, want 3 (deliveries, latency over time, latency by percentile)", n)
	}
	for _, bad := range []string{"<script", "src=", "href=", "@import"} {
		if strings.Contains(html, bad) {
			t.Errorf("report contains %q; want a page that needs nothing else", bad)
		}
	}
	for _, want := range []string{
		fmt.Sprintf("%d of %d expected, %.0f/s", res.Deliveries, res.ExpectedDeliveries, res.DeliveriesPerSecond),
		fmt.Sprintf("p99 %.2f ms", res.Latency.P99),
		fmt.Sprintf("%.2f s per million deliveries", *res.CPUSecondsPerMillion),
		"<td>violations</td><td>none",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("report does not say %q", want)
		}
	}
}

// TestBenchFanoutTarget runs herald bench fanout at a fixed rate against a
// running node, with a slow consumer beside the subscribers, then reads
// the channels' history: it holds every post the bench counted, each once.
func TestBenchFanoutTarget(t *testing.T) {
	t.Parallel()
	p := startDev(t, devOptions{args: []string{"--partitions", "4"}})
	res := fanoutJSON(t, "--target", p.HTTPAddr, "--rate", "200", "--count", "100", "--subscribers", "6",
		"--channels", "3", "--warmup", "0s", "--proto", "--slow", "1")
	if res.Slow != 1 {
		t.Errorf("--slow 1: the report counts %d slow consumers", res.Slow)
	}
	if res.Rate != 200 || !strings.Contains(res.Setup, "protobuf") {
		t.Errorf("setup: got rate %v, %q; want 200 posts/s and protobuf frames", res.Rate, res.Setup)
	}
	checkFanout(t, res, 100, 6, 3)
	if res.CPUSecondsPerMillion != nil {
		t.Errorf("against --target: got CPU %v, want none (not its processes)", *res.CPUSecondsPerMillion)
	}
	ids := map[string]bool{}
	for i := range res.Channels {
		for _, m := range history(t, p.Messages, fmt.Sprintf("%s-%03d", res.Prefix, i)) {
			if ids[m.GetClientMsgId()] {
				t.Fatalf("client_msg_id %q stored twice", m.GetClientMsgId())
			}
			ids[m.GetClientMsgId()] = true
		}
	}
	if int64(len(ids)) < res.Posts {
		t.Errorf("history holds %d posts, the bench counted %d acknowledged", len(ids), res.Posts)
	}
}

// TestBenchFanoutCentrifugoRefusals: --centrifugo refuses, before it
// starts a cluster, a centrifugo binary that is not there and the flags
// that measure Herald alone.
func TestBenchFanoutCentrifugoRefusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--centrifugo", "--centrifugo-server", "/nonexistent/centrifugo"}, "--centrifugo-server"},
		{[]string{"--centrifugo", "--slow", "1"}, "--slow and --proto measure Herald alone"},
		{[]string{"--centrifugo", "--proto"}, "--slow and --proto measure Herald alone"},
	} {
		args := append([]string{"bench", "fanout"}, c.args...)
		r := runHeraldWithin(t, 30*time.Second, args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("herald %s: status %d, stderr %q; want an error saying %q", strings.Join(args, " "), r.code, r.stderr, c.want)
		}
		if strings.Contains(r.stderr, "ready in") {
			t.Errorf("herald %s started a cluster before refusing: %q", strings.Join(args, " "), r.stderr)
		}
	}
}
