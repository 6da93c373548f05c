package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a Herald cluster: durable posts and fan-out per second, latency, CPU and fsyncs",
		Args:  cobra.NoArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newBenchPostCmd(), newBenchFanoutCmd(), newBenchCompareCmd())
	return cmd
}

// clusterFlags say which cluster a benchmark loads: one it starts, or
// --target.
type clusterFlags struct {
	target     string
	nodes      int
	partitions uint32
	herald     string
	dir        string
	keep       bool
}

func (f *clusterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.target, "target", "", "comma-separated HTTP addresses of a running cluster (default: start one)")
	fl.IntVar(&f.nodes, "nodes", 3, "nodes of the cluster the bench starts")
	fl.Uint32Var(&f.partitions, "partitions", 0, "partitions of the cluster the bench starts (default: the server's)")
	fl.StringVar(&f.herald, "herald", "", "herald binary for the cluster the bench starts (default: this one)")
	fl.StringVar(&f.dir, "dir", "", "directory for the started cluster's data (default: a temporary one, removed after)")
	fl.BoolVar(&f.keep, "keep", false, "keep the started cluster's data directory")
}

// cluster returns the targets and server PIDs, starting a cluster unless
// --target was given, and a function that stops it.
func (f *clusterFlags) cluster(cmd *cobra.Command) (targets []string, pids []int, dataDir string, stop func(), err error) {
	if f.target != "" {
		return strings.Split(f.target, ","), nil, "", func() {}, nil
	}
	bin := f.herald
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, nil, "", nil, err
		}
	}
	dir, remove := f.dir, !f.keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "herald-bench-"); err != nil {
			return nil, nil, "", nil, err
		}
	} else {
		remove = false
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, "", nil, err
		}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "starting %d herald server processes in %s ...\n", f.nodes, dir)
	begin := time.Now()
	c, err := bench.StartCluster(cmd.Context(), bench.ClusterOptions{Binary: bin, Nodes: f.nodes, Partitions: f.partitions, Dir: dir})
	if err != nil {
		return nil, nil, "", nil, err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "ready in %v: %s\n", time.Since(begin).Round(time.Millisecond), strings.Join(c.Addrs, " "))
	return c.Addrs, c.PIDs(), dir, func() {
		c.Stop()
		if remove {
			os.RemoveAll(dir)
		}
	}, nil
}

func newBenchPostCmd() *cobra.Command {
	var (
		cf       clusterFlags
		o        bench.PostOptions
		asJSON   bool
		htmlFile string
	)
	cmd := &cobra.Command{
		Use:   "post",
		Short: "Post messages synchronously from concurrent clients and measure what is acknowledged",
		Long: `Post messages from --clients concurrent clients, each with one request in
flight over its own keep-alive HTTP/1.1 connection (Connect, JSON), round-robin
over the cluster's nodes, to --channels channels, and report acknowledged
posts per second, latency percentiles (HdrHistogram), errors by Connect code,
the server processes' CPU time and fsyncs per acknowledged post, and the data
disk's own fsync rate measured in the same run. With --pipeline N each client
instead keeps N posts in flight on one PostMessages stream (Connect protobuf
over an HTTP/2 cleartext connection), the throughput path.

Without --target it starts --nodes "herald server" processes on loopback in
a temporary directory, with fsync on, and stops them after. fsyncs are
counted with "perf stat" on the syscall tracepoints (Debian: linux-perf;
root or a permissive perf_event_paranoid).`,
		Example: `  herald bench post                      # 3 nodes, 16 clients, 64 channels, 10 s
  herald bench post --clients 64 --duration 30s
  herald bench post --clients 4 --pipeline 256   # 1,024 posts in flight on 4 streams
  herald bench post --target 127.0.0.1:7700 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Clients < 1 || o.Channels < 1 || o.Size < 1 || o.Pipeline < 0 || (o.Duration <= 0 && o.Count <= 0) {
				return errors.New("--clients, --channels and --size must be positive, --pipeline not negative, and --duration or --count")
			}
			targets, pids, dir, stop, err := cf.cluster(cmd)
			if err != nil {
				return err
			}
			defer stop()
			o.Targets, o.PIDs, o.Progress = targets, pids, cmd.ErrOrStderr()
			o.Prefix = fmt.Sprintf("bench-%d", time.Now().Unix())
			res, err := bench.RunPost(cmd.Context(), o)
			if err != nil {
				return err
			}
			if dir != "" {
				d, err := bench.CalibrateSync(dir, 2*time.Second)
				if err != nil {
					return err
				}
				res.Disk = &d
			}
			if htmlFile != "" {
				if err := writeHTML(htmlFile, "herald bench post", []bench.Run{{Name: "herald", Result: res}}); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			bench.PrintPost(cmd.OutOrStdout(), "herald bench post", res)
			return nil
		},
	}
	cf.add(cmd)
	f := cmd.Flags()
	f.IntVar(&o.Clients, "clients", 16, "concurrent clients, one request in flight each")
	f.IntVar(&o.Pipeline, "pipeline", 0, "posts in flight per client on a PostMessages stream (HTTP/2, protobuf); 0: synchronous unary calls")
	f.IntVar(&o.Channels, "channels", 64, "channels posted to")
	f.IntVar(&o.Size, "size", 128, "message text length in bytes")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to measure")
	f.Int64Var(&o.Count, "count", 0, "measure until this many posts are acknowledged instead of --duration")
	f.DurationVar(&o.Warmup, "warmup", 2*time.Second, "load before measuring, not counted")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&htmlFile, "html", "", "also write a self-contained HTML report (plots) to this file")
	return cmd
}

// writeHTML writes a report page to path.
func writeHTML(path, title string, runs []bench.Run) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteHTML(f, title, runs); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
