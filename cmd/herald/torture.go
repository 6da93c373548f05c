package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cluster/schedule"
	"github.com/heraldhq/herald/cmd/herald/internal/torture"
)

func newTortureCmd() *cobra.Command {
	var (
		o      torture.Options
		faults string
		replay string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "torture",
		Short: "Break a local Herald cluster on a seeded schedule and check that it kept its guarantees",
		Long: `Start --nodes "herald server" processes on loopback, every node-to-node link
(Raft and internal RPC) through a fault proxy of this process (--peer-map),
and for --time inject the faults of a schedule drawn from --seed: cut links
both ways (partition) or one way (oneway), isolate a partition's leader,
SIGKILL and restart (kill), SIGSTOP and SIGCONT (pause), slow links, Raft
snapshots of every replica of a partition (snapshot), a node drained and
then started again and the replicas rebalanced (membership), a
partition's leadership moved to another replica (transfer), and with
powerloss each node's data directory on a FUSE filesystem of its own
that throws away every write not yet fsynced, torn at a random point, when
that node loses power (SIGKILL, then the loss; needs root and /dev/fuse).

Meanwhile clients post through the public API with unique client_msg_ids,
retrying posts whose outcome is unknown with the same id, and read
histories linearizably and stale. Then every fault heals, the cluster
settles, every channel is read through every node, and the checkers run:
lost acknowledged posts, duplicates, order and seq agreement, stale
linearizable reads, indeterminate posts resolved, replica digests equal.

--out gets params.json, plan.jsonl (the seeded schedule), schedule.jsonl
(the faults as executed), history.jsonl (every operation), verdicts.json
and report.html (latency and throughput over time with the faults shaded,
and the verdicts). The exit status is 0 only if every checker passed.

--canary NAME proves a checker can fail: the nodes run with a planted
defect (herald server --test-defect, for this only) in a fixed scenario,
and the run succeeds only if the checker meant to catch it reports a
violation: lost-writes (a Raft log acknowledging before fsync, then power
lost on every node at once: lost), duplicates (client_msg_id not looked up,
every acknowledged post sent again: duplicates), stale-reads (linearizable
reads served by the local replica, through a node cut off: stale-reads),
gap (every stream skips one event: subscribers).`,
		Example: `  herald torture --time 60s --seed 1
  herald torture --nodes 5 --time 10m --faults kill,pause,partition,oneway,powerloss --seed 7 --out /tmp/t7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kinds, err := parseKinds(faults)
			if err != nil {
				return err
			}
			o.Kinds = kinds
			if replay != "" {
				f, err := os.Open(replay)
				if err != nil {
					return err
				}
				s, err := schedule.ReadJSONL(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("--schedule %s: %w", replay, err)
				}
				o.Replay = &s
				if !cmd.Flags().Changed("time") {
					o.Time = 0 // the whole schedule
				}
			}
			if o.Binary == "" {
				if o.Binary, err = os.Executable(); err != nil {
					return err
				}
			}
			if o.Out == "" {
				o.Out = filepath.Join(os.TempDir(), fmt.Sprintf("herald-torture-%d-%d", o.Seed, time.Now().Unix()))
			}
			if err := os.MkdirAll(o.Out, 0o755); err != nil {
				return err
			}
			o.Progress = cmd.ErrOrStderr()
			res, err := torture.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printTorture(cmd.OutOrStdout(), res, o.Out)
			}
			if o.Canary != "" && !o.Control {
				c := torture.Canaries[o.Canary]
				if !res.Caught {
					return fmt.Errorf("canary %s was NOT caught: %s reported no violation of a cluster with %s", o.Canary, c.CaughtBy, c.What)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "canary %s caught by %s\n", o.Canary, c.CaughtBy)
				return nil
			}
			if !res.Valid {
				return errors.New("a checker failed; see " + filepath.Join(o.Out, "report.html"))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 5, "herald server processes")
	f.Uint32Var(&o.Partitions, "partitions", 8, "partitions of the cluster")
	f.Int64Var(&o.Seed, "seed", 1, "seed of the schedule and of the clients' choices")
	f.DurationVar(&o.Time, "time", 60*time.Second, "how long faults are injected and clients run")
	f.StringVar(&faults, "faults", "kill,pause,partition,oneway,isolate-leader,slow,snapshot,membership,transfer", "comma-separated fault kinds: "+kindNames())
	f.IntVar(&o.Posters, "posters", 8, "concurrent posting clients")
	f.IntVar(&o.Readers, "readers", 4, "concurrent reading clients")
	f.IntVar(&o.Subscribers, "subscribers", 4, "WebSocket subscribers, disconnecting and resuming at random through every node")
	f.IntVar(&o.Channels, "channels", 4, "channels the clients use")
	f.StringVar(&o.Out, "out", "", "directory for the report and the cluster's files (default: a new one under $TMPDIR)")
	f.StringVar(&o.Binary, "herald", "", "herald binary the nodes run (default: this one)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&replay, "schedule", "", "replay this plan.jsonl of an earlier run (its seed, nodes, partitions and faults) instead of drawing one; with --time, its first part")
	f.BoolVar(&o.Control, "control", false, "with --canary: run its scenario without the defect; every checker must pass")
	f.StringVar(&o.Canary, "canary", "", "prove a checker can fail: run nodes with a planted defect in its fixed scenario ("+canaryList()+"); succeeds only if the checker catches it")
	return cmd
}

func canaryList() string {
	var names []string
	for n := range torture.Canaries {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func kindNames() string {
	var names []string
	for _, k := range schedule.AllKinds {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

func parseKinds(s string) ([]schedule.Kind, error) {
	var out []schedule.Kind
	for _, name := range strings.Split(s, ",") {
		k := schedule.Kind(strings.TrimSpace(name))
		if k == "" {
			continue
		}
		known := false
		for _, a := range schedule.AllKinds {
			known = known || a == k
		}
		if !known {
			return nil, fmt.Errorf("--faults: unknown fault %q; known: %s", k, kindNames())
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("--faults: name at least one fault")
	}
	return out, nil
}

func printTorture(w io.Writer, r *torture.Result, out string) {
	c := r.Counts
	fmt.Fprintf(w, "herald torture: seed %d, %d nodes, %.0f s of faults\n", r.Params.Seed, r.Params.Nodes, float64(r.Params.TimeMS)/1000)
	fmt.Fprintf(w, "  operations  %d: %d post attempts (%d acknowledged, %d failed, %d indeterminate), %d reads\n",
		c.Operations, c.Posts, c.Acked, c.Failed, c.Indeterminate, c.Reads)
	var kinds []string
	for k, n := range c.FaultsByKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	fmt.Fprintf(w, "  faults      %s\n", strings.Join(kinds, ", "))
	var worst int64 = -1
	for _, f := range r.Faults {
		worst = max(worst, f.RecoveryMS)
	}
	fmt.Fprintf(w, "  recovery    longest from a heal to the next acknowledged post: %d ms\n", worst)
	for _, v := range r.Verdicts {
		fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(v.String(), "\n", "\n  "))
	}
	fmt.Fprintf(w, "  report      %s\n", filepath.Join(out, "report.html"))
}
