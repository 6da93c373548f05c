package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// Run is one named result in a report: a system and a setting.
type Run struct {
	Name   string
	Result *PostResult
}

// colors tell the runs of a report apart.
var colors = []string{"#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989"}

// WriteHTML writes one self-contained page (inline SVG, no scripts, no
// external resources) with, for the runs, acknowledged posts per second
// over time, p50 and p99 over time, and latency by percentile.
func WriteHTML(w io.Writer, title string, runs []Run) error {
	var legend []template.HTML
	var rate, lat, curve []series
	for i, r := range runs {
		c := colors[i%len(colors)]
		legend = append(legend, legendOf(c, r.Name))
		var pr, p50, p99 []pt
		prev := 0.0
		for _, s := range r.Result.Timeline {
			pr = append(pr, pt{s.At, float64(s.Acked) / math.Max(s.At-prev, 1e-3)})
			p50 = append(p50, pt{s.At, s.P50})
			p99 = append(p99, pt{s.At, s.P99})
			prev = s.At
		}
		rate = append(rate, series{c, "", pr})
		lat = append(lat, series{c, "", p99}, series{c, "4 3", p50})
		curve = append(curve, series{c, "", curveOf(r.Result.Curve)})
	}
	var tables []table
	for _, r := range runs {
		tables = append(tables, tableOf(r))
	}
	return writePage(w, title, legend, []plot{
		{"Acknowledged posts per second", chart(rate, "seconds", "acknowledged/s", nil)},
		{"Latency over time", chart(lat, "seconds", "ms (solid p99, dashed p50)", nil)},
		{"Latency by percentile", chart(curve, "percentile", "ms", percentileTicks)},
	}, tables)
}

// percentileTicks label a log(1/(1-q)) axis.
var percentileTicks = map[float64]string{0: "0", 1: "90", 2: "99", 3: "99.9", 4: "99.99", 5: "99.999"}

// plot is one headed chart of a report page.
type plot struct {
	Heading string
	SVG     template.HTML
}

// writePage writes a report page: a legend, the plots, then a table of
// figures for each run.
func writePage(w io.Writer, title string, legend []template.HTML, plots []plot, tables []table) error {
	return page.Execute(w, struct {
		Title  string
		Legend []template.HTML
		Plots  []plot
		Tables []table
	}{Title: title, Legend: legend, Plots: plots, Tables: tables})
}

// curveOf is a latency-by-percentile series on a log(1/(1-q)) axis.
func curveOf(ps []Point) []pt {
	var out []pt
	for _, p := range ps {
		out = append(out, pt{math.Log10(1 / math.Max(1-p.Percentile/100, 1e-6)), p.Ms})
	}
	return out
}

// legendOf is a run's name in its color.
func legendOf(color, name string) template.HTML {
	return template.HTML(fmt.Sprintf(`<span style="color:%s">&#9632;</span> %s`, color, template.HTMLEscapeString(name)))
}

type pt struct{ x, y float64 }

type series struct {
	color, dash string
	pts         []pt
}

type table struct {
	Name string
	Rows [][2]string
}

func tableOf(r Run) table {
	res := r.Result
	rows := [][2]string{
		{"setup", res.Setup},
		{"nodes, clients, channels, size", fmt.Sprintf("%d, %d, %d, %d bytes", res.Nodes, res.Clients, res.Channels, res.Size)},
		{"acknowledged", fmt.Sprintf("%d in %.1f s: %.0f/s", res.Acked, res.Seconds, res.PerSecond)},
		{"latency", fmt.Sprintf("p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f", res.Latency.P50, res.Latency.P90, res.Latency.P99, res.Latency.P999, res.Latency.Max)},
		{"errors", errorLine(res.Errors)},
	}
	if res.CPUMillisPerPost != nil {
		rows = append(rows, [2]string{"server CPU", fmt.Sprintf("%.3f ms per post", *res.CPUMillisPerPost)})
	}
	if res.SyncsPerPost != nil {
		rows = append(rows, [2]string{"fsyncs", fmt.Sprintf("%.2f per post", *res.SyncsPerPost)})
	} else if res.SyncsNote != "" {
		rows = append(rows, [2]string{"fsyncs", res.SyncsNote})
	}
	if d := res.Disk; d != nil {
		rows = append(rows, [2]string{"data disk", fmt.Sprintf("4 KiB write + fdatasync: %.0f/s, p50 %.3f ms", d.PerSecond, d.P50Micros/1000)})
	}
	return table{Name: r.Name, Rows: rows}
}

// chart draws the series as lines in a 640x260 SVG, from 0 on both axes;
// xticks, if set, labels the x axis at those values instead of numbers.
func chart(ss []series, xlabel, ylabel string, xticks map[float64]string) template.HTML {
	const w, h, l, b, top, right = 640.0, 260.0, 56.0, 36.0, 10.0, 10.0
	var maxX, maxY float64
	for _, s := range ss {
		for _, p := range s.pts {
			maxX, maxY = math.Max(maxX, p.x), math.Max(maxY, p.y)
		}
	}
	maxX, maxY = nice(maxX), nice(maxY)
	x := func(v float64) float64 { return l + v/maxX*(w-l-right) }
	y := func(v float64) float64 { return h - b - v/maxY*(h-b-top) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="11" font-family="sans-serif">`, w, h)
	fmt.Fprintf(&sb, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, l, top, w-l-right, h-b-top)
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, l-4, y(v)+4, num(v))
		fmt.Fprintf(&sb, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eee"/>`, l, w-right, y(v), y(v))
	}
	if xticks == nil {
		xticks = map[float64]string{}
		for i := 0; i <= 4; i++ {
			xticks[maxX*float64(i)/4] = num(maxX * float64(i) / 4)
		}
	}
	for v, label := range xticks {
		if v <= maxX {
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, x(v), h-b+14, template.HTMLEscapeString(label))
		}
	}
	fmt.Fprintf(&sb, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, (l+w)/2, h-4, template.HTMLEscapeString(xlabel))
	fmt.Fprintf(&sb, `<text x="12" y="%.0f" transform="rotate(-90 12 %.0f)" text-anchor="middle">%s</text>`, h/2, h/2, template.HTMLEscapeString(ylabel))
	for _, s := range ss {
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.x), y(p.y)))
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="%s" points="%s"/>`, s.color, s.dash, strings.Join(pts, " "))
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String()) // built from numbers and escaped labels only
}

// nice rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func nice(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func num(v float64) string {
	if v >= 100 || v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td{border:1px solid #ddd;padding:.2em .6em;vertical-align:top}</style>
</head><body>
<h1>{{.Title}}</h1>
<p>{{range .Legend}}{{.}} &nbsp; {{end}}</p>
{{range .Plots}}<h2>{{.Heading}}</h2>{{.SVG}}
{{end}}{{range .Tables}}<h2>{{.Name}}</h2><table>{{range .Rows}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>{{end}}
</body></html>
`))
