package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

// comparison is one client count run against both systems.
type comparison struct {
	Round   int                `json:"round"`
	Clients int                `json:"clients"`
	Herald  *bench.PostResult  `json:"herald"`
	NATS    *bench.PostResult  `json:"nats"`
	Ratio   map[string]float64 `json:"herald_over_nats"`
}

func newBenchCompareCmd() *cobra.Command {
	var (
		cf         clusterFlags
		o          bench.PostOptions
		clients    string
		natsURL    string
		natsServer string
		asJSON     bool
		htmlFile   string
		rounds     int
	)
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Run the post benchmark against Herald and NATS JetStream side by side",
		Long: `Run "herald bench post"'s workload against a Herald cluster and a
NATS JetStream cluster, one after the other for each --clients count, and
print both with their ratios. JetStream gets the durability Herald promises:
a file stream replicated on 3 nodes with sync_interval: always (every write
fsynced before it is acknowledged). Synchronous by default; with --pipeline N
each client keeps N posts in flight (Herald: one PostMessages stream; NATS:
N publishes sharing the client's connection).

Without --nats it starts 3 nats-server processes on loopback from
--nats-server (default: nats-server on PATH or in $(go env GOPATH)/bin);
install one with:
  go install github.com/nats-io/nats-server/v2@v2.15.3
With --nats URL it uses that cluster and creates the stream HERALDBENCH
(subjects bench.>, R3) there.

On a shared or noisy machine one run's ratio can move by half or more:
--rounds N repeats every comparison N times, NATS first in every other
round, and ends with the median of the rounds' ratios for each client
count.`,
		Example: `  herald bench compare --clients 1,16,64 --duration 10s
  herald bench compare --clients 4 --pipeline 256     # the throughput path of both
  herald bench compare --clients 16 --rounds 5        # the median of five ratios`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			counts, err := parseCounts(clients)
			if err != nil {
				return err
			}
			if o.Channels < 1 || o.Size < 1 || o.Duration <= 0 || o.Pipeline < 0 || rounds < 1 {
				return errors.New("--channels, --size, --duration and --rounds must be positive, --pipeline not negative")
			}
			targets, pids, dir, stop, err := cf.cluster(cmd)
			if err != nil {
				return err
			}
			defer stop()
			natsTargets, natsPIDs, stopNATS, err := startOrTargetNATS(cmd, natsURL, natsServer)
			if err != nil {
				return err
			}
			defer stopNATS()
			var out []comparison
			for round := 1; round <= rounds; round++ {
				for _, n := range counts {
					c := comparison{Round: round, Clients: n}
					sides := []struct {
						name    string
						targets []string
						pids    []int
						run     func(o bench.PostOptions) (*bench.PostResult, error)
						res     **bench.PostResult
					}{
						{"herald", targets, pids, func(o bench.PostOptions) (*bench.PostResult, error) { return bench.RunPost(cmd.Context(), o) }, &c.Herald},
						{"nats", natsTargets, natsPIDs, func(o bench.PostOptions) (*bench.PostResult, error) { return bench.RunNATSPost(cmd.Context(), o) }, &c.NATS},
					}
					if round%2 == 0 {
						sides[0], sides[1] = sides[1], sides[0]
					}
					for _, side := range sides {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s, %d clients (round %d of %d):\n", side.name, n, round, rounds)
						ro := o
						ro.Clients, ro.Targets, ro.PIDs, ro.Progress = n, side.targets, side.pids, cmd.ErrOrStderr()
						ro.Prefix = fmt.Sprintf("cmp%d-%d-%d", time.Now().Unix(), round, n)
						if *side.res, err = side.run(ro); err != nil {
							return fmt.Errorf("%s, %d clients: %w", side.name, n, err)
						}
					}
					c.Ratio = ratios(c.Herald, c.NATS)
					out = append(out, c)
				}
			}
			var disk *bench.DiskSync
			if dir != "" {
				if d, err := bench.CalibrateSync(dir, 2*time.Second); err == nil {
					disk = &d
				}
			}
			if htmlFile != "" {
				var runs []bench.Run
				for _, c := range out {
					runs = append(runs, bench.Run{Name: fmt.Sprintf("herald, %d clients", c.Clients), Result: c.Herald},
						bench.Run{Name: fmt.Sprintf("NATS JetStream, %d clients", c.Clients), Result: c.NATS})
				}
				if err := writeHTML(htmlFile, "herald bench compare", runs); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"runs": out, "median_ratios": medianRatios(out), "disk_fsync": disk})
			}
			printComparison(cmd.OutOrStdout(), out, disk)
			if rounds > 1 {
				printMedians(cmd.OutOrStdout(), medianRatios(out), rounds)
			}
			return nil
		},
	}
	cf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&clients, "clients", "1,16,64", "comma-separated client counts, each run against both")
	f.IntVar(&o.Pipeline, "pipeline", 0, "posts in flight per client (Herald: a PostMessages stream; NATS: publishes sharing the client's connection); 0: synchronous")
	f.IntVar(&o.Channels, "channels", 64, "channels (Herald) and subjects (NATS) posted to")
	f.IntVar(&o.Size, "size", 128, "message length in bytes")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to measure each run")
	f.DurationVar(&o.Warmup, "warmup", 2*time.Second, "load before measuring each run, not counted")
	f.StringVar(&natsURL, "nats", "", "URL of a NATS JetStream cluster to compare with (default: start one)")
	f.StringVar(&natsServer, "nats-server", "", "nats-server binary for the cluster the bench starts")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	f.StringVar(&htmlFile, "html", "", "also write a self-contained HTML report (plots) to this file")
	f.IntVar(&rounds, "rounds", 1, "run every comparison this many times, NATS first in every other round, and report the median ratios")
	return cmd
}

// medianRatio is, for one client count, the median over the rounds of
// each of Herald's ratios to NATS.
type medianRatio struct {
	Clients int                `json:"clients"`
	Rounds  int                `json:"rounds"`
	Ratio   map[string]float64 `json:"herald_over_nats"`
}

// medianRatios takes the median of every ratio over the rounds of each
// client count, in the order the counts were first run.
func medianRatios(runs []comparison) []medianRatio {
	var out []medianRatio
	byCount := map[int][]map[string]float64{}
	for _, c := range runs {
		if _, seen := byCount[c.Clients]; !seen {
			out = append(out, medianRatio{Clients: c.Clients})
		}
		byCount[c.Clients] = append(byCount[c.Clients], c.Ratio)
	}
	for i := range out {
		rs := byCount[out[i].Clients]
		out[i].Rounds, out[i].Ratio = len(rs), map[string]float64{}
		for _, k := range []string{"acknowledged_per_second", "p50", "p99", "server_cpu_per_post"} {
			var vs []float64
			for _, r := range rs {
				if v, ok := r[k]; ok {
					vs = append(vs, v)
				}
			}
			if len(vs) > 0 {
				slices.Sort(vs)
				m := vs[len(vs)/2]
				if len(vs)%2 == 0 {
					m = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
				}
				out[i].Ratio[k] = m
			}
		}
	}
	return out
}

func printMedians(w io.Writer, meds []medianRatio, rounds int) {
	fmt.Fprintf(w, "median of %d rounds, herald / nats:\n", rounds)
	fmt.Fprintf(w, "%-8s %10s %9s %9s %12s\n", "clients", "acked/s", "p50", "p99", "cpu/post")
	for _, m := range meds {
		fmt.Fprintf(w, "%-8d %10s %9s %9s %12s\n", m.Clients, ratioOpt(m.Ratio, "acknowledged_per_second"),
			ratioOpt(m.Ratio, "p50"), ratioOpt(m.Ratio, "p99"), ratioOpt(m.Ratio, "server_cpu_per_post"))
	}
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--clients %q: want positive whole numbers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// startOrTargetNATS returns the NATS URLs to load and the server PIDs (none
// for --nats), starting a 3-node cluster unless url is given.
func startOrTargetNATS(cmd *cobra.Command, url, binary string) ([]string, []int, func(), error) {
	if url != "" {
		if err := bench.EnsureNATSStream(cmd.Context(), url, 3); err != nil {
			return nil, nil, nil, err
		}
		return strings.Split(url, ","), nil, func() {}, nil
	}
	if binary == "" {
		binary = findNATSServer()
	}
	if binary == "" {
		return nil, nil, nil, errors.New("no nats-server found on PATH or in $(go env GOPATH)/bin: " +
			"install one with \"go install github.com/nats-io/nats-server/v2@v2.15.3\", or pass --nats-server or --nats")
	}
	dir, err := os.MkdirTemp("", "herald-bench-nats-")
	if err != nil {
		return nil, nil, nil, err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "starting 3 nats-server processes (%s) in %s ...\n", binary, dir)
	c, err := bench.StartNATS(cmd.Context(), binary, 3, dir)
	if err != nil {
		return nil, nil, nil, err
	}
	return c.URLs, c.PIDs(), func() { c.Stop(); os.RemoveAll(dir) }, nil
}

func findNATSServer() string { return findBinary("nats-server") }

// findBinary returns the path of the program name on PATH or in
// $(go env GOPATH)/bin, or "".
func findBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for dir := range strings.SplitSeq(strings.TrimSpace(string(out)), string(os.PathListSeparator)) {
			p := filepath.Join(dir, "bin", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// ratios are Herald's figures over NATS's: throughput (higher is better
// for Herald), latency and CPU (lower is better for Herald).
func ratios(h, n *bench.PostResult) map[string]float64 {
	r := map[string]float64{}
	setRatio(r, "acknowledged_per_second", h.PerSecond, n.PerSecond)
	setRatio(r, "p50", h.Latency.P50, n.Latency.P50)
	setRatio(r, "p99", h.Latency.P99, n.Latency.P99)
	if h.CPUMillisPerPost != nil && n.CPUMillisPerPost != nil {
		setRatio(r, "server_cpu_per_post", *h.CPUMillisPerPost, *n.CPUMillisPerPost)
	}
	return r
}

// setRatio sets r[k] to a/b, if b is positive.
func setRatio(r map[string]float64, k string, a, b float64) {
	if b > 0 {
		r[k] = a / b
	}
}

func printComparison(w io.Writer, runs []comparison, disk *bench.DiskSync) {
	if len(runs) > 0 && runs[0].Herald.Pipeline > 0 {
		fmt.Fprintf(w, "herald bench compare: %d posts in flight per client, Herald (PostMessages stream, protobuf over h2c) and NATS JetStream (R3 file stream, sync_interval always)\n",
			runs[0].Herald.Pipeline)
	} else {
		fmt.Fprintln(w, "herald bench compare: synchronous posts, Herald (Connect JSON over HTTP/1.1) and NATS JetStream (R3 file stream, sync_interval always)")
	}
	fmt.Fprintf(w, "%-8s %-7s %10s %9s %9s %9s %12s %11s\n", "clients", "system", "acked/s", "p50 ms", "p99 ms", "max ms", "cpu ms/post", "fsyncs/post")
	opt := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f", *v)
	}
	multi := len(runs) > 0 && runs[len(runs)-1].Round > 1
	for i, c := range runs {
		if multi && (i == 0 || runs[i-1].Round != c.Round) {
			fmt.Fprintf(w, "round %d:\n", c.Round)
		}
		for _, s := range []struct {
			name string
			r    *bench.PostResult
		}{{"herald", c.Herald}, {"nats", c.NATS}} {
			fmt.Fprintf(w, "%-8d %-7s %10.0f %9.2f %9.2f %9.2f %12s %11s\n", c.Clients, s.name, s.r.PerSecond,
				s.r.Latency.P50, s.r.Latency.P99, s.r.Latency.Max, opt(s.r.CPUMillisPerPost), opt(s.r.SyncsPerPost))
		}
		fmt.Fprintf(w, "%-8d %-7s %10.2f %9.2f %9.2f %9s %12s\n", c.Clients, "ratio", c.Ratio["acknowledged_per_second"],
			c.Ratio["p50"], c.Ratio["p99"], "", ratioOpt(c.Ratio, "server_cpu_per_post"))
		for _, s := range []*bench.PostResult{c.Herald, c.NATS} {
			if len(s.Errors) > 0 {
				fmt.Fprintf(w, "         errors (%s): %v\n", s.Setup, s.Errors)
			}
		}
	}
	if disk != nil {
		fmt.Fprintf(w, "data disk: 4 KiB write + fdatasync, one after another: %.0f/s, p50 %.3f ms\n", disk.PerSecond, disk.P50Micros/1000)
	}
}

func ratioOpt(r map[string]float64, k string) string {
	if v, ok := r[k]; ok {
		return fmt.Sprintf("%.2f", v)
	}
	return "-"
}
