package torture

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/cluster/check"
)

// writeReport writes the run's files to dir: history.jsonl (every
// operation), schedule.jsonl (the faults as executed), verdicts.json and
// report.html.
func writeReport(dir string, res *Result, h check.History, begin time.Time) error {
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return err
	}
	if err := check.WriteJSONL(f, h); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var lines []byte
	for _, ex := range res.Faults {
		b, err := json.Marshal(ex)
		if err != nil {
			return err
		}
		lines = append(append(lines, b...), '\n')
	}
	if err := os.WriteFile(filepath.Join(dir, "schedule.jsonl"), lines, 0o644); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "verdicts.json"), map[string]any{"valid": res.Valid,
		"verdicts": res.Verdicts, "counts": res.Counts}); err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := page.Execute(out, pageData(res, h, begin)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// The page: two plots with the fault windows shaded, and the verdicts.
var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms": func(v int64) string { return fmt.Sprintf("%.2f s", float64(v)/1000) },
	"part": func(p *uint32) string {
		if p == nil {
			return ""
		}
		return fmt.Sprintf("partition %d", *p)
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>herald torture, seed {{.Params.Seed}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}
h1{font-size:20px} h2{font-size:16px;margin-top:2em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.ok{color:#070;font-weight:bold} .bad{color:#b00;font-weight:bold}
svg{background:#fafafa;border:1px solid #ddd} pre{white-space:pre-wrap;margin:0;font-size:12px}
</style></head><body>
<h1>herald torture: {{if .Res.Valid}}<span class="ok">every checker passed</span>{{else}}<span class="bad">a checker failed</span>{{end}}</h1>
<p>seed {{.Params.Seed}}, {{.Params.Nodes}} nodes, {{.Params.Partitions}} partitions, {{.Seconds}} s of faults
({{.Kinds}}), {{.Params.Posters}} posters and {{.Params.Readers}} readers on {{len .Params.Channels}} channels.
{{.Res.Counts.Operations}} operations: {{.Res.Counts.Posts}} post attempts ({{.Res.Counts.Acked}} acknowledged,
{{.Res.Counts.Failed}} failed, {{.Res.Counts.Indeterminate}} indeterminate), {{.Res.Counts.Reads}} reads.</p>
<h2>Verdicts</h2>
<table><tr><th>checker</th><th>verdict</th><th>summary</th></tr>
{{range .Res.Verdicts}}<tr><td>{{.Checker}}</td><td>{{if .Valid}}<span class="ok">valid</span>{{else}}<span class="bad">INVALID</span>{{end}}</td>
<td>{{.Summary}}{{range .Violations}}<pre>{{.What}}{{range .Ops}}
  {{.}}{{end}}</pre>{{end}}</td></tr>
{{end}}</table>
<h2>Post latency over time (acknowledged posts; p50 and max per 250 ms), faults shaded</h2>
{{.Latency}}
<h2>Acknowledged posts per second, faults shaded</h2>
{{.Throughput}}
<h2>Faults as executed</h2>
<table><tr><th>kind</th><th>target</th><th>from</th><th>healed</th><th>first ack after heal</th><th>note</th></tr>
{{range .Res.Faults}}<tr><td>{{.Kind}}</td><td>{{range .Nodes}}{{.}} {{end}}{{part .Partition}}</td><td>{{ms .StartMS}}</td><td>{{ms .HealMS}}</td>
<td>{{if ge .RecoveryMS 0}}{{.RecoveryMS}} ms{{else}}none{{end}}</td><td>{{.Note}}</td></tr>
{{end}}</table>
</body></html>
`))

type pageView struct {
	Res        *Result
	Params     Params
	Seconds    string
	Kinds      string
	Latency    template.HTML
	Throughput template.HTML
}

func pageData(res *Result, h check.History, begin time.Time) pageView {
	var kinds []string
	for _, k := range res.Params.Kinds {
		kinds = append(kinds, string(k))
	}
	// Acknowledged posts: when they were answered, and how long they took.
	invoked := map[int]time.Time{}
	type point struct{ at, ms float64 }
	var acks []point
	for _, op := range h {
		if op.Kind != check.Post {
			continue
		}
		switch op.Type {
		case check.Invoke:
			invoked[op.ID] = op.Time
		case check.OK:
			acks = append(acks, point{op.Time.Sub(begin).Seconds(), float64(op.Time.Sub(invoked[op.ID]).Microseconds()) / 1000})
		}
	}
	end := float64(res.Params.TimeMS) / 1000
	for _, a := range acks {
		end = max(end, a.at)
	}
	buckets := int(math.Ceil(end/0.25)) + 1
	lat := make([][]float64, buckets)
	perSec := make([]float64, int(math.Ceil(end))+1)
	for _, a := range acks {
		if a.at < 0 {
			continue
		}
		lat[int(a.at/0.25)] = append(lat[int(a.at/0.25)], a.ms)
		perSec[int(a.at)]++
	}
	var p50, pmax, tput []xy
	for i, b := range lat {
		if len(b) == 0 {
			continue
		}
		slices.Sort(b)
		p50 = append(p50, xy{float64(i) * 0.25, b[len(b)/2]})
		pmax = append(pmax, xy{float64(i) * 0.25, b[len(b)-1]})
	}
	for i, n := range perSec {
		tput = append(tput, xy{float64(i), n})
	}
	return pageView{Res: res, Params: res.Params, Seconds: fmt.Sprintf("%.0f", float64(res.Params.TimeMS)/1000),
		Kinds: strings.Join(kinds, ", "),
		Latency: svgPlot(end, res.Faults, "ms", true,
			line{"p50", "#1f77b4", p50}, line{"max", "#d62728", pmax}),
		Throughput: svgPlot(end, res.Faults, "posts/s", false, line{"acknowledged/s", "#2ca02c", tput})}
}

type xy struct{ x, y float64 }

type line struct {
	name, color string
	pts         []xy
}

// svgPlot draws lines over [0, end] seconds with each fault's window
// shaded and labelled; log puts y on a log scale.
func svgPlot(end float64, faults []Executed, unit string, log bool, lines ...line) template.HTML {
	const w, h, l, r, t, b = 960.0, 300.0, 90.0, 10.0, 10.0, 30.0
	ymax := 1.0
	for _, ln := range lines {
		for _, p := range ln.pts {
			ymax = max(ymax, p.y)
		}
	}
	fy := func(v float64) float64 {
		if log {
			return t + (h-t-b)*(1-math.Log10(max(v, 0.1)/0.1)/math.Log10(ymax/0.1))
		}
		return t + (h-t-b)*(1-v/ymax)
	}
	fx := func(s float64) float64 { return l + (w-l-r)*s/max(end, 1e-3) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, w, h, w, h)
	colors := map[string]string{"kill": "#f4c7c3", "powerloss": "#f4a3a3", "pause": "#fce8b2", "partition": "#c6dafc",
		"oneway": "#d7cbf2", "isolate-leader": "#b7e1cd", "slow": "#e0e0e0"}
	for _, f := range faults {
		x0, x1 := fx(float64(f.StartMS)/1000), fx(float64(f.HealMS)/1000)
		label := template.HTMLEscapeString(string(f.Kind) + " " + strings.Join(f.Nodes, ","))
		fmt.Fprintf(&sb, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s" opacity="0.6"><title>%s</title></rect>`,
			x0, t, max(x1-x0, 1), h-t-b, colors[string(f.Kind)], label)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.0f" font-size="9" fill="#555">%s</text>`, x0+2, t+10, label)
	}
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, l, h-b, w-r, h-b)
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, l, t, l, h-b)
	for s := 0.0; s <= end; s += math.Max(1, math.Round(end/10)) {
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.0f" font-size="11" text-anchor="middle">%.0fs</text>`, fx(s), h-b+15, s)
	}
	ticks := []float64{0, ymax / 2, ymax}
	if log {
		ticks = nil
		for v := 1.0; v <= ymax*1.001; v *= 10 {
			ticks = append(ticks, v)
		}
	}
	for _, v := range ticks {
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.1f" font-size="11" text-anchor="end">%.4g %s</text>`, l-4, fy(v)+4, v, unit)
	}
	for i, ln := range lines {
		var pts []string
		for _, p := range ln.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", fx(p.x), fy(p.y)))
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, ln.color, strings.Join(pts, " "))
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.0f" font-size="12" fill="%s">%s</text>`, w-r-120, t+14+float64(i)*14, ln.color, ln.name)
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String()) // numbers and escaped labels only
}
