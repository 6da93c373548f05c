package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
)

// scrape GETs url/metrics with token (none if "") and parses it.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := getMetrics(t, url, token)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %.200q", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func getMetrics(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: read body: %v", err)
	}
	return resp.StatusCode, body
}

// sample returns the value of the series of name whose labels include
// labels ("k=v" each), and whether there is one: a counter's or gauge's
// value, a histogram's count. More than one match is summed.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range f.GetMetric() {
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			ok := false
			for _, lp := range m.GetLabel() {
				ok = ok || lp.GetName() == k && lp.GetValue() == v
			}
			if !ok {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

// wantSample checks that the series exists with value want.
func wantSample(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := sample(fams, name, labels...)
	if !ok || got != want {
		t.Errorf("%s%v: got %v (present: %v), want %v", name, labels, got, ok, want)
	}
}

// TestMetrics: /metrics counts requests by procedure and code, posts
// acknowledged, events in and out, subscriptions, connections, upstream
// streams and resyncs, and shows the node's replicas and metadata group.
func TestMetrics(t *testing.T) {
	n := startNode(t, nodeOptions{metrics: true})
	const ch = "metrics"
	apiCreate(t, n, ch)
	ws := dialWS(t, n, wsOptions{})
	ws.subscribe("s1", ch, nil)
	st := subOpen(t, n.Messages, ch, nil)
	st.subscribed(ch)
	head := subPostN(t, n, ch, 3)
	ws.expectEvents(ch, head-2, head)
	st.events(head-3, head)
	if _, err := n.Channels.GetChannel(apiCtx(t), &heraldv1.GetChannelRequest{ChannelId: "no-such"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetChannel(no-such): %v, want not_found", err)
	}
	ahead := subOpen(t, n.Messages, ch, proto.Uint64(head+10))
	if r := ahead.next().GetResyncRequired(); r.GetReason() != heraldv1.ResyncRequired_CURSOR_AHEAD {
		t.Fatalf("subscribe after %d: got %v, want resync_required CURSOR_AHEAD", head+10, r)
	}
	ahead.ended(0)

	m := scrape(t, n.URL, "")
	const post = "procedure=/herald.v1.MessageService/PostMessage"
	wantSample(t, m, 3, "herald_posts_acknowledged_total")
	wantSample(t, m, 3, "herald_requests_total", post, "code=ok")
	wantSample(t, m, 3, "herald_request_duration_seconds", post)
	wantSample(t, m, 1, "herald_requests_total", "procedure=/herald.v1.ChannelService/GetChannel", "code=not_found")
	wantSample(t, m, 3, "herald_gateway_events_in_total")
	wantSample(t, m, 6, "herald_gateway_events_out_total")
	wantSample(t, m, 2, "herald_gateway_subscriptions")
	wantSample(t, m, 1, "herald_gateway_connections", "kind=websocket")
	wantSample(t, m, 1, "herald_gateway_connections", "kind=subscribe_stream")
	wantSample(t, m, 1, "herald_gateway_upstream_streams")
	wantSample(t, m, 1, "herald_gateway_resyncs_total", "reason=cursor_ahead")
	wantSample(t, m, 0, "herald_gateway_resyncs_total", "reason=slow_consumer")
	if v, ok := sample(m, "herald_gateway_queued_frames"); !ok || v < 0 {
		t.Errorf("herald_gateway_queued_frames: %v (present: %v)", v, ok)
	}

	// The node: 4 partitions, each led here, applied what committed.
	wantSample(t, m, 4, "herald_partition_role", "role=leader")
	wantSample(t, m, 4, "herald_cluster_partitions")
	wantSample(t, m, 1, "herald_cluster_nodes", "state=active")
	wantSample(t, m, 1, "herald_node_ready")
	wantSample(t, m, 1, "herald_meta_role", "role=leader")
	wantSample(t, m, 1, "herald_meta_has_leader")
	for p := range 4 {
		l := fmt.Sprintf("partition=%d", p)
		commit, _ := sample(m, "herald_partition_commit_index", l)
		applied, ok := sample(m, "herald_partition_applied_index", l)
		if !ok || applied == 0 || applied > commit {
			t.Errorf("partition %d: applied %v of commit %v", p, applied, commit)
		}
		if c, ok := sample(m, "herald_partition_leader_changes_total", l); !ok || c < 1 {
			t.Errorf("partition %d: %v leader changes (present: %v), want the first election", p, c, ok)
		}
	}
	for _, h := range []string{"herald_partition_apply_duration_seconds", "herald_log_append_duration_seconds"} {
		if c, _ := sample(m, h); c < 4 {
			t.Errorf("%s: %v observations, want one per post at least", h, c)
		}
	}
	if _, ok := sample(m, "go_goroutines"); !ok {
		t.Error("no go_goroutines: Go runtime metrics missing")
	}

	// Subscribers gone: their series go back to zero.
	st.close()
	ws.shutdown()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() bool {
		m = scrape(t, n.URL, "")
		subs, _ := sample(m, "herald_gateway_subscriptions")
		up, _ := sample(m, "herald_gateway_upstream_streams")
		conns, _ := sample(m, "herald_gateway_connections")
		return subs == 0 && up == 0 && conns == 0
	})
}

// TestMetricsAdminOnly: with authentication on, /metrics needs an admin
// token, as the admin API.
func TestMetricsAdminOnly(t *testing.T) {
	n := startAuthNode(t, gateway.Config{})
	for _, tc := range []struct {
		name, token string
		code        int
		body        string
	}{
		{"no token", "", http.StatusUnauthorized, "admin token"},
		{"user token", n.mint(t, "alice", false, time.Hour), http.StatusForbidden, "reading a node's metrics needs an admin token"},
		{"admin token", n.mint(t, "root", true, time.Hour), http.StatusOK, "herald_posts_acknowledged_total 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := getMetrics(t, n.URL, tc.token)
			if code != tc.code || !strings.Contains(string(body), tc.body) {
				t.Fatalf("GET /metrics: got %d %.300q, want %d containing %q", code, body, tc.code, tc.body)
			}
		})
	}
}
