package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

func newBenchFanoutCmd() *cobra.Command {
	var (
		cf       clusterFlags
		o        bench.FanoutOptions
		asJSON   bool
		htmlFile string
		withCF   bool
		cfBinary string
	)
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Post to channels watched by many WebSocket subscribers and measure the deliveries",
		Long: `Connect --subscribers WebSocket clients (GET /ws) and subscribe each to one
of --channels channels from its head: subscriber i watches channel i mod C,
through the nodes in turn for each channel's subscribers. Then post to the
channels in turn (Connect, JSON), one post at a time, or at --rate posts a
second, and report deliveries per second, the server processes' CPU time per
million deliveries, and the latency from a post's send to each event's
receipt (HdrHistogram; both in this process's clock).

Every delivery is checked as it arrives: per subscriber, seqs must come
strictly increasing and without a gap from the subscribed frame's head_seq
on. After the last post the bench waits up to --drain for every
acknowledged post to reach every subscriber of its channel exactly once. A
gap, duplicate, reorder, loss or misrouted event is a violation: it is
counted, reported, and makes the command exit with status 1. A
resync_required frame is reported as such, not as a loss; the subscription
is not checked past it.

--slow adds slow consumers: subscribers of the first channel that stop
reading once subscribed, with a small socket buffer. They are not counted
or checked; the report says how many the servers cut off, and the others'
figures (compare a run without them) show what they cost everyone else.

Without --target it starts --nodes "herald server" processes on loopback in
a temporary directory, with fsync on, and stops them after.

--centrifugo then runs the same load against one Centrifugo node (memory
engine, history with offsets on every channel, anonymous clients) started
from --centrifugo-server (default: centrifugo on PATH or in
$(go env GOPATH)/bin), with the same WebSocket client speaking Centrifugo's
JSON protocol and posts through its HTTP API, and prints both runs and
Herald's figures over Centrifugo's (--html FILE: Herald's report in FILE,
Centrifugo's beside it, FILE without .html plus -centrifugo.html). Install
it with:
  go install github.com/centrifugal/centrifugo/v6@v6.9.1
Compare with --nodes 1 for one node against one.`,
		Example: `  herald bench fanout                                # 3 nodes, 64 subscribers, 8 channels, 10 s
  herald bench fanout --subscribers 1000 --channels 10 --rate 200
  herald bench fanout --target 127.0.0.1:7700 --json
  herald bench fanout --nodes 1 --subscribers 1000 --channels 1 --count 500 --centrifugo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Subscribers < 1 || o.Channels < 1 || o.Size < 1 || o.Rate < 0 || o.Slow < 0 || (o.Duration <= 0 && o.Count <= 0) {
				return errors.New("--subscribers, --channels and --size must be positive, --rate and --slow 0 or more, and --duration or --count given")
			}
			if withCF && (o.Slow > 0 || o.Binary) {
				return errors.New("--slow and --proto measure Herald alone: run --centrifugo without them")
			}
			if withCF {
				bin, err := centrifugoBinary(cfBinary)
				if err != nil {
					return err
				}
				cfBinary = bin
			}
			targets, pids, _, stopCluster, err := cf.cluster(cmd)
			if err != nil {
				return err
			}
			stop := sync.OnceFunc(stopCluster)
			defer stop()
			o.Targets, o.PIDs, o.Progress = targets, pids, cmd.ErrOrStderr()
			o.Prefix = fmt.Sprintf("fanout-%d", time.Now().Unix())
			res, err := bench.RunFanout(cmd.Context(), o)
			if err != nil {
				return err
			}
			if withCF {
				stop() // the peer gets the machine to itself
				peer, err := runCentrifugoFanout(cmd, o, cfBinary)
				if err != nil {
					return err
				}
				if htmlFile != "" {
					if err := writeFanoutHTML(htmlFile, res); err != nil {
						return err
					}
					peerFile := strings.TrimSuffix(htmlFile, ".html") + "-centrifugo.html"
					if err := writeFanoutHTML(peerFile, peer); err != nil {
						return err
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (herald) and %s (centrifugo)\n", htmlFile, peerFile)
				}
				return reportFanoutComparison(cmd, res, peer, asJSON)
			}
			if htmlFile != "" {
				if err := writeFanoutHTML(htmlFile, res); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				bench.PrintFanout(cmd.OutOrStdout(), "herald bench fanout", res)
			}
			return violationsError(res.Violations)
		},
	}
	cf.add(cmd)
	f := cmd.Flags()
	f.IntVar(&o.Subscribers, "subscribers", 64, "WebSocket subscribers, one channel each")
	f.IntVar(&o.Channels, "channels", 8, "channels posted to and subscribed to")
	f.Float64Var(&o.Rate, "rate", 0, "posts per second, sent on schedule (0: one post at a time)")
	f.IntVar(&o.Size, "size", 128, "message text length in bytes")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to measure")
	f.Int64Var(&o.Count, "count", 0, "measure until this many posts are acknowledged instead of --duration")
	f.DurationVar(&o.Warmup, "warmup", 2*time.Second, "load before measuring, not counted (its deliveries are checked)")
	f.DurationVar(&o.Drain, "drain", 10*time.Second, "longest wait after the last post for every delivery")
	f.BoolVar(&o.Binary, "proto", false, "subscribe with binary protobuf frames (herald.v1.proto) instead of protojson")
	f.IntVar(&o.Slow, "slow", 0, "also subscribe this many slow consumers to the first channel, which stop reading once subscribed; the others' figures show what they cost")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&htmlFile, "html", "", "also write a self-contained HTML report (plots) to this file")
	f.BoolVar(&withCF, "centrifugo", false, "also run the same load against one Centrifugo node and print both with Herald's figures over Centrifugo's")
	f.StringVar(&cfBinary, "centrifugo-server", "", "centrifugo binary for --centrifugo (default: centrifugo on PATH or in $(go env GOPATH)/bin)")
	return cmd
}

// violationsError says what a fan-out run saw that the delivery contract
// rules out, or is nil.
func violationsError(v bench.Violations) error {
	if v.Total() == 0 {
		return nil
	}
	return fmt.Errorf("%d violations of the delivery contract (gaps %d, duplicates %d, reorders %d, lost %d, misrouted %d)",
		v.Total(), v.Gaps, v.Duplicates, v.Reorders, v.Lost, v.Misrouted)
}

// writeFanoutHTML writes a fan-out report page to path.
func writeFanoutHTML(path string, res *bench.FanoutResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteFanoutHTML(f, "herald bench fanout", res); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
