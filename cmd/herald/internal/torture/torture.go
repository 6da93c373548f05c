// Package torture tests a Herald cluster the way Jepsen does: real `herald
// server` processes on loopback, every node-to-node link through a fault
// proxy, a seeded schedule of faults (cut and one-way links, isolated
// leaders, SIGKILL, SIGSTOP, slow links, power loss on a FUSE filesystem
// that drops unsynced writes), a workload through the public API
// recording every operation, and the checkers of package check over that
// history once everything has healed and every channel is drained.
package torture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/cluster/check"
	"github.com/heraldhq/herald/cluster/schedule"
)

// Options shape a run.
type Options struct {
	// Binary is the herald executable the nodes run.
	Binary string
	// Nodes is the node count, at least 3.
	Nodes int
	// Partitions is the cluster's partition count; 0 means the server's
	// default.
	Partitions uint32
	// Seed picks the schedule and the clients' choices.
	Seed int64
	// Time is how long faults are injected and the workload runs.
	Time time.Duration
	// Kinds are the faults to draw from (schedule.AllKinds' names).
	Kinds []schedule.Kind
	// Posters and Readers are the concurrent clients, Subscribers the
	// WebSocket followers; Channels the channels they use.
	Posters, Readers, Subscribers, Channels int
	// Out is the report's directory; the cluster's files go in Out/cluster.
	Out string
	// Progress, if non-nil, gets a line a second.
	Progress io.Writer
	// Canary, if set, runs the nodes with a planted defect and that
	// canary's fixed scenario instead of a seeded schedule (see Canaries);
	// the run is a success when the checker that must catch it does.
	Canary string
	// Control runs the canary's scenario without its defect: every
	// checker must pass.
	Control bool
	// Replay, if set, is a schedule to run instead of drawing one (a
	// plan.jsonl of an earlier run): its seed, nodes, partitions and
	// faults. A Time shorter than its duration replays the faults that
	// start within Time, cut to end by then.
	Replay *schedule.Schedule
}

// Result is what a run found.
type Result struct {
	Params   Params          `json:"params"`
	Verdicts []check.Verdict `json:"verdicts"`
	Faults   []Executed      `json:"faults"`
	Counts   Counts          `json:"counts"`
	// Valid is every verdict valid.
	Valid bool `json:"valid"`
	// Canary is the canary run, if any, and Caught whether the checker
	// meant to catch it did.
	Canary string `json:"canary,omitempty"`
	Caught bool   `json:"caught,omitempty"`
}

// Params are a run's parameters, as params.json records them.
type Params struct {
	Seed        int64           `json:"seed"`
	Nodes       int             `json:"nodes"`
	Partitions  uint32          `json:"partitions"`
	TimeMS      int64           `json:"time_ms"`
	Kinds       []schedule.Kind `json:"faults"`
	Posters     int             `json:"posters"`
	Readers     int             `json:"readers"`
	Subscribers int             `json:"subscribers"`
	Channels    []string        `json:"channels"`
	Binary      string          `json:"herald"`
	Started     time.Time       `json:"started"`
}

// Counts summarise the history.
type Counts struct {
	Operations    int            `json:"operations"`
	Posts         int            `json:"post_attempts"`
	Acked         int            `json:"posts_acknowledged"`
	Failed        int            `json:"posts_failed"`
	Indeterminate int            `json:"posts_indeterminate"`
	Reads         int            `json:"reads"`
	FaultsByKind  map[string]int `json:"faults_by_kind"`
}

// Run runs one torture and writes its report to opts.Out.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Nodes < 3 || o.Time <= 0 || o.Posters < 1 || o.Channels < 1 {
		return nil, fmt.Errorf("torture: need at least 3 nodes, 1 poster, 1 channel and a positive time")
	}
	if o.Replay != nil {
		c := o.Replay.Config
		o.Seed, o.Nodes, o.Partitions, o.Kinds = c.Seed, len(c.Nodes), c.Partitions, c.Kinds
		if o.Time <= 0 || o.Time > c.Duration {
			o.Time = c.Duration
		}
	}
	if per := (o.Posters+o.Channels-1)/o.Channels + (o.Readers+o.Channels-1)/o.Channels; per > 4 {
		return nil, fmt.Errorf("torture: %d posters and %d readers on %d channels is %d clients a channel; the linearizability check takes at most 4: give more --channels",
			o.Posters, o.Readers, o.Channels, per)
	}
	if len(o.Kinds) == 0 {
		o.Kinds = slices.Clone(schedule.Kinds)
	}
	var canary *Canary
	if o.Canary != "" {
		c, ok := Canaries[o.Canary]
		if !ok {
			return nil, fmt.Errorf("torture: unknown canary %q; known: %s", o.Canary, canaryNames())
		}
		canary, o.Kinds = &c, nil
	}
	ids := make([]string, o.Nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i+1)
	}
	parts := o.Partitions
	if parts == 0 {
		parts = 16 // the server's default; isolate-leader picks among them
	}
	var sched schedule.Schedule
	var err error
	switch {
	case canary != nil:
		sched = canary.schedule(ids, parts, o.Time)
	case o.Replay != nil:
		sched = o.Replay.Prefix(o.Time)
	default:
		sched, err = schedule.Generate(schedule.Config{Seed: o.Seed, Nodes: ids, Partitions: parts, Duration: o.Time, Kinds: o.Kinds})
	}
	if err != nil {
		return nil, err
	}

	res := &Result{Params: Params{Seed: o.Seed, Nodes: o.Nodes, Partitions: parts, TimeMS: o.Time.Milliseconds(),
		Kinds: o.Kinds, Posters: o.Posters, Readers: o.Readers, Subscribers: o.Subscribers, Binary: o.Binary, Started: time.Now().UTC()}}
	for i := range o.Channels {
		res.Params.Channels = append(res.Params.Channels, fmt.Sprintf("t%d-%03d", o.Seed, i))
	}
	dir := filepath.Join(o.Out, "cluster")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(o.Out, "params.json"), res.Params); err != nil {
		return nil, err
	}
	var plan bytes.Buffer
	if err := schedule.WriteJSONL(&plan, sched); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, "plan.jsonl"), plan.Bytes(), 0o644); err != nil {
		return nil, err
	}

	say := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	lossy := slices.Contains(o.Kinds, schedule.PowerLoss) || canary != nil && canary.Blackout
	var extra []string
	switch {
	case canary != nil && o.Control:
		say("canary %s, control run: its scenario without the defect; every checker must pass", o.Canary)
	case canary != nil:
		extra = []string{"--test-defect", canary.Defect}
		say("canary %s: nodes run with the planted defect %s; %s must catch it", o.Canary, canary.Defect, canary.CaughtBy)
	}
	say("starting %d herald server processes in %s%s ...", o.Nodes, dir, map[bool]string{true: ", each on a power-loss filesystem"}[lossy])
	c, err := startProcs(ctx, o.Binary, dir, o.Nodes, o.Partitions, lossy, extra...)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	say("%s", sched)

	rec := &check.Recorder{}
	w := newWorkload(rec, c, res.Params.Channels, o.Seed)
	w.retryAcked = canary != nil && canary.RetryAcked
	if err := w.createChannels(ctx); err != nil {
		return nil, err
	}
	m := &nemesis{c: c, rec: rec, begin: time.Now(), rng: rand.New(rand.NewPCG(uint64(o.Seed), 0x706f776572))}
	stop, cancel := context.WithTimeout(ctx, o.Time)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { m.run(stop, sched) })
	if canary != nil && canary.Blackout {
		wg.Go(func() { m.blackout(stop, o.Time/2) })
	}
	wg.Go(func() { w.run(stop, o.Posters, o.Readers) })
	subs := &subscribers{w: w}
	wg.Go(func() { subs.run(stop, o.Subscribers) })
	progress(stop, o.Progress, m.begin, rec)
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	say("healing every fault and waiting for the cluster to settle ...")
	if err := c.heal(); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, 60*time.Second); err != nil {
		// Not a crash of this tool: the cluster did not recover. The
		// history so far and where each node is stuck go in the report.
		say("%v", err)
		h := rec.History()
		res.Verdicts = []check.Verdict{{Checker: "settled", Summary: "every node ready within 60 s of the heal",
			Violations: c.stuck(err)}}
		res.Faults = recoveries(m.executed(), h, m.begin)
		res.Counts = count(h, res.Faults)
		return res, writeReport(o.Out, res, h, m.begin)
	}
	digests := settle(ctx, c, 30*time.Second)
	say("draining: reading every channel through every node ...")
	if err := w.drain(30 * time.Second); err != nil {
		return nil, err
	}

	h := rec.History()
	say("letting every subscriber catch up with its channel ...")
	subs.catchUp(heads(h), 30*time.Second)
	chans, lasts := subs.ends()
	ds := subs.deliveries()
	res.Verdicts = append(check.All(h), digests, checkSubscribers(ds, h, chans, lasts))
	res.Faults = recoveries(m.executed(), h, m.begin)
	res.Counts = count(h, res.Faults)
	res.Valid = true
	for _, v := range res.Verdicts {
		res.Valid = res.Valid && v.Valid
		if canary != nil && v.Checker == canary.CaughtBy && !v.Valid {
			res.Canary, res.Caught = o.Canary, true
		}
	}
	if canary != nil {
		res.Canary = o.Canary
	}
	if err := writeDeliveries(filepath.Join(o.Out, "deliveries.jsonl"), ds); err != nil {
		return nil, err
	}
	if err := writeReport(o.Out, res, h, m.begin); err != nil {
		return nil, err
	}
	return res, nil
}

// progress prints a line a second until stop ends.
func progress(stop context.Context, w io.Writer, begin time.Time, rec *check.Recorder) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop.Done():
			return
		case <-t.C:
		}
		if w == nil {
			continue
		}
		h := rec.History()
		c := count(h, nil)
		var active []string
		open := map[string]int{}
		for _, op := range h {
			if op.Kind != check.Fault {
				continue
			}
			what, isStart := strings.CutPrefix(op.Fault, "start ")
			if isStart {
				open[what]++
			} else {
				open[strings.TrimPrefix(op.Fault, "heal ")]--
			}
		}
		for what, n := range open {
			if n > 0 {
				active = append(active, strings.TrimSpace(what))
			}
		}
		slices.Sort(active)
		fmt.Fprintf(w, "  %5.1fs  posts %6d acked, %4d failed, %4d unknown  reads %5d  faults now: %s\n",
			time.Since(begin).Seconds(), c.Acked, c.Failed, c.Indeterminate, c.Reads, strings.Join(append(active, "none")[:max(len(active), 1)], "; "))
	}
}

// count summarises a history.
func count(h check.History, faults []Executed) Counts {
	c := Counts{Operations: len(h), FaultsByKind: map[string]int{}}
	for _, op := range h {
		switch {
		case op.Kind == check.Post && op.Type == check.Invoke:
			c.Posts++
		case op.Kind == check.Post && op.Type == check.OK:
			c.Acked++
		case op.Kind == check.Post && op.Type == check.Fail:
			c.Failed++
		case op.Kind == check.Post && op.Type == check.Info:
			c.Indeterminate++
		case op.Kind == check.Read && op.Type == check.Invoke:
			c.Reads++
		}
	}
	for _, f := range faults {
		c.FaultsByKind[string(f.Kind)]++
	}
	return c
}

// recoveries sets each fault's recovery time: from its heal to the first
// post acknowledged after it.
func recoveries(faults []Executed, h check.History, begin time.Time) []Executed {
	for i := range faults {
		healed := begin.Add(time.Duration(faults[i].HealMS) * time.Millisecond)
		for _, op := range h {
			if op.Kind == check.Post && op.Type == check.OK && !op.Time.Before(healed) {
				faults[i].RecoveryMS = op.Time.Sub(healed).Milliseconds()
				break
			}
		}
	}
	return faults
}

// heads returns each channel's head seq by its first final read.
func heads(h check.History) map[string]uint64 {
	out := map[string]uint64{}
	for _, op := range h {
		if op.Kind == check.Read && op.Type == check.OK && op.Final {
			if _, ok := out[op.Channel]; !ok {
				out[op.Channel] = uint64(len(op.Messages))
			}
		}
	}
	return out
}

func writeDeliveries(path string, ds []Delivery) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, d := range ds {
		if err := enc.Encode(d); err != nil {
			return err
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
