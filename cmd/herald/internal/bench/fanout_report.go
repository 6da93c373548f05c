package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
)

// PrintFanout writes the final table of a fan-out benchmark.
func PrintFanout(w io.Writer, what string, r *FanoutResult) {
	for _, row := range fanoutRows(r) {
		if row[0] == "" {
			fmt.Fprintf(w, "%s: %s\n", what, row[1])
			continue
		}
		fmt.Fprintf(w, "  %-13s %s\n", row[0], row[1])
	}
}

// fanoutRows are the figures of a fan-out run, as label and text; the
// first row, unlabelled, says what was run.
func fanoutRows(r *FanoutResult) [][2]string {
	rate := "synchronous (one post at a time)"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g posts/s requested", r.Rate)
	}
	l, pl := r.Latency, r.PostLatency
	rows := [][2]string{
		{"", fmt.Sprintf("%d nodes, %d subscribers, %d channels, %d-byte messages, %s, %.1f s",
			r.Nodes, r.Subscribers, r.Channels, r.Size, rate, r.Seconds)},
		{"setup", r.Setup},
		{"posts", fmt.Sprintf("%d acknowledged, %.0f/s; post latency p50 %.2f ms  p99 %.2f ms; errors %s",
			r.Posts, r.PostsPerSecond, pl.P50, pl.P99, errorLine(r.PostErrors))},
		{"deliveries", fmt.Sprintf("%d of %d expected, %.0f/s", r.Deliveries, r.ExpectedDeliveries, r.DeliveriesPerSecond)},
		{"latency", fmt.Sprintf("post sent to event received: p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms",
			l.P50, l.P90, l.P99, l.P999, l.Max)},
	}
	if r.CPUSecondsPerMillion != nil {
		rows = append(rows, [2]string{"server CPU", fmt.Sprintf("%.2f s per million deliveries (all nodes, all work)", *r.CPUSecondsPerMillion)})
	} else {
		rows = append(rows, [2]string{"server CPU", "not counted: the bench did not start the servers"})
	}
	v := r.Violations
	verdict := "none"
	if v.Total() > 0 {
		verdict = fmt.Sprintf("%d: gaps %d, duplicates %d, reorders %d, lost %d, misrouted %d",
			v.Total(), v.Gaps, v.Duplicates, v.Reorders, v.Lost, v.Misrouted)
	}
	rows = append(rows,
		[2]string{"violations", verdict + fmt.Sprintf(" (drained in %.2f s)", r.DrainSeconds)},
		[2]string{"resyncs", resyncLine(r.Resyncs)},
		[2]string{"subscribers", "errors " + errorLine(r.SubscriberErrors)})
	if r.Slow > 0 {
		rows = append(rows, [2]string{"slow", fmt.Sprintf(
			"%d slow consumers (stopped reading once subscribed, not counted above): %d cut off by the servers, %d of them told SLOW_CONSUMER first",
			r.Slow, r.SlowCut, r.SlowResyncs)})
	}
	return rows
}

func resyncLine(by map[string]int64) string {
	if len(by) == 0 {
		return "no resync_required"
	}
	return "resync_required " + errorLine(by) + " (reported, not violations; not checked past it)"
}

// WriteFanoutHTML writes one self-contained page (inline SVG, no scripts,
// no external resources) with deliveries per second over time, delivery
// latency p50 and p99 over time, delivery latency by percentile, and the
// figures.
func WriteFanoutHTML(w io.Writer, title string, r *FanoutResult) error {
	c := colors[0]
	var rate, p50, p99 []pt
	prev := 0.0
	for _, s := range r.Timeline {
		rate = append(rate, pt{s.At, float64(s.Deliveries) / math.Max(s.At-prev, 1e-3)})
		p50 = append(p50, pt{s.At, s.P50})
		p99 = append(p99, pt{s.At, s.P99})
		prev = s.At
	}
	var rows [][2]string
	for _, row := range fanoutRows(r) {
		if row[0] == "" {
			row[0] = "run"
		}
		rows = append(rows, row)
	}
	name := fmt.Sprintf("herald, %d subscribers", r.Subscribers)
	return writePage(w, title, []template.HTML{legendOf(c, name)}, []plot{
		{"Deliveries per second", chart([]series{{c, "", rate}}, "seconds", "deliveries/s", nil)},
		{"Delivery latency over time", chart([]series{{c, "", p99}, {c, "4 3", p50}}, "seconds", "ms (solid p99, dashed p50)", nil)},
		{"Delivery latency by percentile", chart([]series{{c, "", curveOf(r.Curve)}}, "percentile", "ms", percentileTicks)},
	}, []table{{Name: name, Rows: rows}})
}
