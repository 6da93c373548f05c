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

// benchJSON runs herald bench post with args and --json and decodes its
// result.
func benchJSON(t *testing.T, args ...string) *bench.PostResult {
	t.Helper()
	args = append([]string{"bench", "post", "--json"}, args...)
	r := runHeraldWithin(t, 2*time.Minute, args...)
	if r.code != 0 {
		t.Fatalf("herald %s: status %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	var res bench.PostResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("herald %s: %v\nstdout: %s", strings.Join(args, " "), err, r.stdout)
	}
	t.Logf("herald %s: %.0f/s, p50 %.2f ms, p99 %.2f ms; progress:\n%s", strings.Join(args, " "),
		res.PerSecond, res.Latency.P50, res.Latency.P99, r.stderr)
	return &res
}

// TestBenchPostOwnCluster runs herald bench post on a cluster of three
// herald server processes it starts itself, until 120 posts are
// acknowledged, and checks the report: the count, ordered percentiles, no
// errors, a timeline, the servers' CPU time, and the disk calibration. The
// fsync count needs perf; without it the report must say why.
func TestBenchPostOwnCluster(t *testing.T) {
	t.Parallel()
	page := filepath.Join(t.TempDir(), "report.html")
	res := benchJSON(t, "--count", "120", "--clients", "4", "--channels", "6", "--size", "64",
		"--partitions", "4", "--warmup", "0s", "--html", page)
	if res.Nodes != 3 || res.Clients != 4 || res.Channels != 6 || res.Size != 64 {
		t.Errorf("setup: got %d nodes, %d clients, %d channels, %d bytes; want 3, 4, 6, 64", res.Nodes, res.Clients, res.Channels, res.Size)
	}
	if res.Acked < 120 || len(res.Errors) != 0 {
		t.Errorf("got %d acknowledged and errors %v, want at least 120 and none", res.Acked, res.Errors)
	}
	l := res.Latency
	if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("latency %+v: want 0 < p50 <= p90 <= p99 <= p99.9 <= max", l)
	}
	if res.PerSecond <= 0 || len(res.Timeline) == 0 {
		t.Errorf("got %v/s and a timeline of %d seconds, want both", res.PerSecond, len(res.Timeline))
	}
	if res.CPUMillisPerPost == nil || *res.CPUMillisPerPost <= 0 {
		t.Errorf("server CPU per post: got %v, want a positive figure", res.CPUMillisPerPost)
	}
	switch {
	case res.SyncsPerPost != nil && *res.SyncsPerPost <= 0:
		t.Errorf("fsyncs per post: got %v; every acknowledgement costs some", *res.SyncsPerPost)
	case res.SyncsPerPost == nil && res.SyncsNote == "":
		t.Error("fsyncs per post: neither counted nor said why not")
	}
	if res.Disk == nil || res.Disk.PerSecond <= 0 || res.Disk.P50Micros <= 0 {
		t.Errorf("disk calibration: got %+v, want a rate and a latency", res.Disk)
	}
	// The report page: three plots, self-contained (nothing fetched, no
	// script), with the figures of the run.
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	if n := strings.Count(html, "<svg"); n != 3 {
		t.Errorf("report: %d plots, want 3 (rate, latency over time, latency by percentile)", n)
	}
	for _, bad := range []string{"<script", "src=", "href=", "@import"} {
		if strings.Contains(html, bad) {
			t.Errorf("report contains %q; want a page that needs nothing else", bad)
		}
	}
	if want := fmt.Sprintf("%d in %.1f s", res.Acked, res.Seconds); !strings.Contains(html, want) {
		t.Errorf("report does not say %q", want)
	}
}

// TestBenchPostTarget runs herald bench post against a running node and
// then reads what it posted: every acknowledged post is in the channels'
// history once, with the requested size (posts answered after the
// measurement ended are stored but not counted, so the history may hold
// more).
func TestBenchPostTarget(t *testing.T) {
	t.Parallel()
	p := startDev(t, devOptions{args: []string{"--partitions", "4"}})
	res := benchJSON(t, "--target", p.HTTPAddr, "--count", "80", "--clients", "3", "--channels", "5", "--size", "100", "--warmup", "0s")
	if res.CPUMillisPerPost != nil || res.SyncsPerPost != nil || res.Disk != nil {
		t.Errorf("against --target: got CPU %v, fsyncs %v, disk %v; want none (not its processes)", res.CPUMillisPerPost, res.SyncsPerPost, res.Disk)
	}
	ids := map[string]bool{}
	total := 0
	for i := range res.Channels {
		for _, m := range history(t, p.Messages, fmt.Sprintf("%s-%03d", res.Prefix, i)) {
			if len(m.GetText()) != 100 {
				t.Fatalf("message %d: %d bytes of text, want 100", m.GetSeq(), len(m.GetText()))
			}
			if ids[m.GetClientMsgId()] {
				t.Fatalf("client_msg_id %q stored twice", m.GetClientMsgId())
			}
			ids[m.GetClientMsgId()] = true
			total++
		}
	}
	if int64(total) < res.Acked {
		t.Errorf("history holds %d posts, the bench counted %d acknowledged", total, res.Acked)
	}
	t.Logf("%d acknowledged, %d stored", res.Acked, total)
}

// TestBenchPostPipelined runs the pipelined mode against a node: posts
// travel on PostMessages streams with many in flight, every acknowledged
// post is stored once, and the result says how it was measured.
func TestBenchPostPipelined(t *testing.T) {
	t.Parallel()
	p := startDev(t, devOptions{args: []string{"--partitions", "4"}})
	res := benchJSON(t, "--target", p.HTTPAddr, "--count", "400", "--clients", "2", "--pipeline", "32", "--channels", "3", "--warmup", "0s")
	if res.Pipeline != 32 || !strings.Contains(res.Setup, "PostMessages stream") {
		t.Errorf("got pipeline %d, setup %q; want 32 on PostMessages streams", res.Pipeline, res.Setup)
	}
	if res.Acked < 400 || len(res.Errors) != 0 {
		t.Errorf("got %d acknowledged, errors %v; want at least 400 and none", res.Acked, res.Errors)
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
	if int64(len(ids)) < res.Acked {
		t.Errorf("history holds %d posts, the bench counted %d acknowledged", len(ids), res.Acked)
	}
}
