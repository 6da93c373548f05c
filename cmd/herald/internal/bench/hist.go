package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// histogram records latencies in microseconds, from 1 µs to 5 minutes, to
// three significant digits (HdrHistogram), safe for concurrent use.
type histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

const maxMicros = int64(5 * time.Minute / time.Microsecond)

func newHistogram() *histogram {
	return &histogram{h: hdrhistogram.New(1, maxMicros, 3)}
}

func (h *histogram) record(d time.Duration) {
	us := min(max(d.Microseconds(), 1), maxMicros)
	h.mu.Lock()
	_ = h.h.RecordValue(us) // in range by construction
	h.mu.Unlock()
}

// quantile returns the q-th percentile (0-100) in microseconds.
func (h *histogram) quantile(q float64) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return float64(h.h.ValueAtQuantile(q))
}

func (h *histogram) count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.TotalCount()
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
	Max  float64 `json:"max_ms"`
}

func (h *histogram) summary() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(q float64) float64 { return float64(h.h.ValueAtQuantile(q)) / 1000 }
	return Latency{P50: ms(50), P90: ms(90), P99: ms(99), P999: ms(99.9), Max: float64(h.h.Max()) / 1000}
}

// reset empties the histogram and returns what it held.
func (h *histogram) reset() *hdrhistogram.Histogram {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.h
	h.h = hdrhistogram.New(1, maxMicros, 3)
	return old
}

// Point is one latency percentile.
type Point struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// curve returns the latency at percentiles from 0 to 99.999, denser
// toward the tail, for a plot on a log(1/(1-q)) axis as HdrHistogram's.
func (h *histogram) curve() []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Point
	for _, q := range []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999} {
		out = append(out, Point{Percentile: q, Ms: float64(h.h.ValueAtQuantile(q)) / 1000})
	}
	return out
}
