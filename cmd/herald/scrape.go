package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeLimit bounds the /metrics page read from a node.
const scrapeLimit = 16 << 20

// scrapeResult is one read of a node's /metrics.
type scrapeResult struct {
	at   time.Time
	fams map[string]*dto.MetricFamily
}

// scrapeMetrics GETs base/metrics with client and parses it.
func scrapeMetrics(ctx context.Context, client *http.Client, base string) (*scrapeResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // for the message only
		return nil, fmt.Errorf("GET %s/metrics: %s: %s", base, resp.Status, strings.TrimSpace(string(b)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, scrapeLimit))
	if err != nil {
		return nil, fmt.Errorf("GET %s/metrics: %w", base, err)
	}
	return &scrapeResult{at: time.Now(), fams: fams}, nil
}

// series is one sample: its labels and its value (a histogram's count).
type series struct {
	labels map[string]string
	value  float64
	hist   *dto.Histogram
}

// all returns the samples of name whose labels include want ("k=v" each).
func (s *scrapeResult) all(name string, want ...string) []series {
	if s == nil || s.fams[name] == nil {
		return nil
	}
	var out []series
	for _, m := range s.fams[name].GetMetric() {
		labels := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if !hasLabels(labels, want) {
			continue
		}
		x := series{labels: labels}
		switch {
		case m.Counter != nil:
			x.value = m.GetCounter().GetValue()
		case m.Gauge != nil:
			x.value = m.GetGauge().GetValue()
		case m.Untyped != nil:
			x.value = m.GetUntyped().GetValue()
		case m.Histogram != nil:
			x.value, x.hist = float64(m.GetHistogram().GetSampleCount()), m.GetHistogram()
		}
		out = append(out, x)
	}
	return out
}

func hasLabels(labels map[string]string, want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		if labels[k] != v {
			return false
		}
	}
	return true
}

// sum adds the values of the samples of name with the labels want.
func (s *scrapeResult) sum(name string, want ...string) float64 {
	var t float64
	for _, x := range s.all(name, want...) {
		t += x.value
	}
	return t
}

// has reports whether s holds a sample of name.
func (s *scrapeResult) has(name string) bool { return len(s.all(name)) > 0 }

// rate is how fast counter name grew per second from prev to s; 0 without
// an earlier scrape, and 0 across a restart (the counter went back).
func (s *scrapeResult) rate(prev *scrapeResult, name string, want ...string) float64 {
	if prev == nil || s == nil {
		return 0
	}
	d, secs := s.sum(name, want...)-prev.sum(name, want...), s.at.Sub(prev.at).Seconds()
	if d < 0 || secs <= 0 {
		return 0
	}
	return d / secs
}

// bucketCounts are a histogram's cumulative counts by upper bound, summed
// over the samples given.
type bucketCounts map[float64]float64

func histogramOf(xs []series) bucketCounts {
	b := bucketCounts{}
	for _, x := range xs {
		if x.hist == nil {
			continue
		}
		for _, bk := range x.hist.GetBucket() {
			if !math.IsInf(bk.GetUpperBound(), 1) { // the text format's +Inf bucket is the count
				b[bk.GetUpperBound()] += float64(bk.GetCumulativeCount())
			}
		}
		b[math.Inf(1)] += float64(x.hist.GetSampleCount())
	}
	return b
}

// minus is b's observations since prev (nil: all of them).
func (b bucketCounts) minus(prev bucketCounts) bucketCounts {
	out := bucketCounts{}
	for le, c := range b {
		out[le] = max(0, c-prev[le])
	}
	return out
}

// quantile estimates the q-quantile of the observations as Prometheus's
// histogram_quantile does: linear within the bucket that holds it. It
// returns NaN without observations, and the highest finite bound when the
// quantile falls in the +Inf bucket.
func (b bucketCounts) quantile(q float64) float64 {
	bounds := make([]float64, 0, len(b))
	for le := range b {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 || b[math.Inf(1)] == 0 {
		return math.NaN()
	}
	rank := q * b[math.Inf(1)]
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		c := b[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if c == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(c-below)
		}
		lower, below = le, c
	}
	return lower
}
