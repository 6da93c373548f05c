package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// PrintPost writes the final table of a post benchmark.
func PrintPost(w io.Writer, what string, r *PostResult) {
	fmt.Fprintf(w, "%s: %d nodes, %d clients, %d channels, %d-byte messages, %.1f s\n",
		what, r.Nodes, r.Clients, r.Channels, r.Size, r.Seconds)
	fmt.Fprintf(w, "  %s\n", r.Setup)
	fmt.Fprintf(w, "  acknowledged  %d posts, %.0f/s\n", r.Acked, r.PerSecond)
	l := r.Latency
	fmt.Fprintf(w, "  latency       p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms\n",
		l.P50, l.P90, l.P99, l.P999, l.Max)
	fmt.Fprintf(w, "  errors        %s\n", errorLine(r.Errors))
	if r.CPUMillisPerPost != nil {
		fmt.Fprintf(w, "  server CPU    %.3f ms per acknowledged post (all nodes)\n", *r.CPUMillisPerPost)
	} else {
		fmt.Fprintf(w, "  server CPU    not counted: the bench did not start the servers\n")
	}
	if r.SyncsPerPost != nil {
		fmt.Fprintf(w, "  fsyncs        %.2f per acknowledged post (all nodes)\n", *r.SyncsPerPost)
	} else {
		fmt.Fprintf(w, "  fsyncs        %s\n", r.SyncsNote)
	}
	if d := r.Disk; d != nil {
		fmt.Fprintf(w, "  data disk     4 KiB write + fdatasync, one after another: %.0f/s, p50 %.3f ms, p99 %.3f ms\n",
			d.PerSecond, d.P50Micros/1000, d.P99Micros/1000)
	}
}

func errorLine(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s %d", code, errs[code]))
	}
	return strings.Join(parts, ", ")
}
