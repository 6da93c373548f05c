package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// postProcedure is the procedure whose latency top reports as POST P99.
const postProcedure = "procedure=/herald.v1.MessageService/PostMessage"

// staleContact is how long without leader contact makes a replica lagging
// in top: partition.Config.MaxStale's default.
const staleContact = 2 * time.Second

func newAdminTopCmd(o *adminOptions) *cobra.Command {
	var interval time.Duration
	var count int
	var lag uint64
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch the cluster: posts/s, deliveries/s, p99, leaders and lagging replicas, refreshing",
		Long: `Show a refreshing view of the whole cluster, read from every node's
/metrics (the nodes come from the node at --addr), one row per node:

  NODE          the node's id
  STATE         active, draining or removed; unreachable when /metrics failed
  READY         whether the node is ready (as its /readyz)
  POSTS/S       posts acknowledged through the node, per second
  DELIVERIES/S  events its gateway queued to subscribers, per second
  POST P99      99th percentile of unary PostMessage latency on the node
                over the interval (- without posts)
  CONNS         WebSocket connections and Subscribe streams open
  SUBS          subscriptions open
  LEADERS       partitions it leads
  REPLICAS      partitions it holds a replica of

Below the table, the lagging replicas: a replica whose applied index is more
than --lag entries behind its leader's commit index, or that has not heard
from a leader for 2s, and any partition without a leader.

Rates need two reads, so the first view comes after one --interval. On a
terminal each view replaces the last; otherwise views follow one another.
Stop with Ctrl-C, or give --count.`,
		Example: `  herald admin top
  herald admin top --interval 5s --addr 10.0.0.5:7700
  herald admin top --count 1 > snapshot.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.json() {
				return fmt.Errorf("herald admin top prints tables only; for machine-readable figures scrape each node's /metrics")
			}
			if interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %v: want 100ms or more", interval)
			}
			if count < 0 {
				return fmt.Errorf("--count %d: want 0 (until interrupted) or more", count)
			}
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				return runTop(ctx, c, interval, count, lag)
			})
		},
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", 2*time.Second, "time between views")
	f.IntVar(&count, "count", 0, "stop after this many views; 0 = until interrupted")
	f.Uint64Var(&lag, "lag", 100, "entries behind its leader's commit index that make a replica lagging")
	return cmd
}

// topNode is one node as top last read it.
type topNode struct {
	node *heraldv1.Node
	base string
	prev *scrapeResult
	cur  *scrapeResult
	err  error
}

func runTop(ctx context.Context, c *adminClient, interval time.Duration, count int, lag uint64) error {
	nodes, err := topNodes(ctx, c)
	if err != nil {
		return err
	}
	c.scrapeAll(ctx, nodes)
	tty := isTerminal(c.out)
	t := time.NewTicker(interval)
	defer t.Stop()
	for shown := 0; count == 0 || shown < count; shown++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, n := range nodes {
			n.prev = n.cur
		}
		c.scrapeAll(ctx, nodes)
		if tty {
			_, _ = io.WriteString(c.out, "\x1b[H\x1b[2J") // clear the screen; a failed write shows below
		} else if shown > 0 {
			_, _ = io.WriteString(c.out, "\n")
		}
		if err := writeTop(c.out, nodes, interval, lag); err != nil {
			return err
		}
	}
	return nil
}

// topNodes lists the cluster's nodes, by id, with the URL of each one's
// HTTP port (in --addr's scheme).
func topNodes(ctx context.Context, c *adminClient) ([]*topNode, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.api.ListNodes(cctx, &heraldv1.ListNodesRequest{})
	if err != nil {
		return nil, c.fail("list nodes", err)
	}
	var out []*topNode
	for _, n := range resp.GetNodes() {
		if n.GetState() == heraldv1.Node_STATE_REMOVED {
			continue
		}
		base, err := c.opts.tls.baseURL(n.GetHttpAddr())
		if err != nil {
			return nil, fmt.Errorf("node %s: HTTP address %q: %w", n.GetId(), n.GetHttpAddr(), err)
		}
		out = append(out, &topNode{node: n, base: base})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node.GetId() < out[j].node.GetId() })
	return out, nil
}

// scrapeAll reads every node's /metrics at once.
func (c *adminClient) scrapeAll(ctx context.Context, nodes []*topNode) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			cctx, cancel := c.call(ctx)
			defer cancel()
			n.cur, n.err = scrapeMetrics(cctx, c.http, n.base)
		})
	}
	wg.Wait()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// writeTop writes one view.
func writeTop(w io.Writer, nodes []*topNode, interval time.Duration, lag uint64) error {
	partitions := 0.0
	for _, n := range nodes {
		partitions = max(partitions, n.cur.sum("herald_cluster_partitions"))
	}
	fmt.Fprintf(w, "herald admin top  %d nodes  %.0f partitions  every %v  %s\n\n",
		len(nodes), partitions, interval, time.Now().Format(time.TimeOnly))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tREADY\tPOSTS/S\tDELIVERIES/S\tPOST P99\tCONNS\tSUBS\tLEADERS\tREPLICAS")
	var posts, deliveries, conns, subs, leaders, replicas float64
	all, allPrev := bucketCounts{}, bucketCounts{}
	for _, n := range nodes {
		id := n.node.GetId()
		if n.err != nil || n.cur == nil {
			fmt.Fprintf(tw, "%s\tunreachable\t-\t-\t-\t-\t-\t-\t-\t-\n", id)
			continue
		}
		m := n.cur
		p := m.rate(n.prev, "herald_posts_acknowledged_total")
		d := m.rate(n.prev, "herald_gateway_events_out_total")
		cur := histogramOf(m.all("herald_request_duration_seconds", postProcedure))
		var prev bucketCounts
		if n.prev != nil {
			prev = histogramOf(n.prev.all("herald_request_duration_seconds", postProcedure))
		}
		for le, v := range cur {
			all[le] += v
		}
		for le, v := range prev {
			allPrev[le] += v
		}
		cn, sb := m.sum("herald_gateway_connections"), m.sum("herald_gateway_subscriptions")
		ld, rp := m.sum("herald_partition_role", "role=leader"), float64(len(m.all("herald_partition_term")))
		posts, deliveries, conns, subs, leaders, replicas = posts+p, deliveries+d, conns+cn, subs+sb, leaders+ld, replicas+rp
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f\t%s\t%.0f\t%.0f\t%.0f\t%.0f\n", id, nodeState(n.node.GetState()),
			yesNo(m.sum("herald_node_ready") == 1), p, d, latency(cur.minus(prev).quantile(0.99)), cn, sb, ld, rp)
	}
	fmt.Fprintf(tw, "all\t\t\t%.1f\t%.1f\t%s\t%.0f\t%.0f\t%.0f\t%.0f\n", posts, deliveries,
		latency(all.minus(allPrev).quantile(0.99)), conns, subs, leaders, replicas)
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeLagging(w, nodes, lag)
}

// lagRow is one lagging replica, or a partition without a leader (node "").
type lagRow struct {
	partition int
	node      string
	behind    float64
	contact   float64 // seconds; -1 if unknown
	leader    string
}

// writeLagging lists the replicas more than lag entries behind their
// leader's commit index or out of contact, and the partitions without a
// leader.
func writeLagging(w io.Writer, nodes []*topNode, lag uint64) error {
	type leader struct {
		node         string
		term, commit float64
	}
	leaders := map[int]leader{}
	held := map[int]bool{}
	for _, n := range nodes {
		for _, x := range n.cur.all("herald_partition_term") {
			held[atoi(x.labels["partition"])] = true
		}
		for _, x := range n.cur.all("herald_partition_role", "role=leader") {
			p := atoi(x.labels["partition"])
			l := leader{node: n.node.GetId(), term: n.cur.sum("herald_partition_term", "partition="+x.labels["partition"]),
				commit: n.cur.sum("herald_partition_commit_index", "partition="+x.labels["partition"])}
			if old, ok := leaders[p]; !ok || l.term > old.term {
				leaders[p] = l
			}
		}
	}
	var rows []lagRow
	for p := range held {
		if _, ok := leaders[p]; !ok {
			rows = append(rows, lagRow{partition: p, contact: -1})
		}
	}
	for _, n := range nodes {
		for _, x := range n.cur.all("herald_partition_applied_index") {
			p := atoi(x.labels["partition"])
			l, ok := leaders[p]
			if !ok || l.node == n.node.GetId() {
				continue
			}
			behind := max(0, l.commit-x.value)
			contact := -1.0
			if c := n.cur.all("herald_partition_last_contact_seconds", "partition="+x.labels["partition"]); len(c) > 0 {
				contact = c[0].value
			}
			if behind > float64(lag) || contact > staleContact.Seconds() {
				rows = append(rows, lagRow{partition: p, node: n.node.GetId(), behind: behind, contact: contact, leader: l.node})
			}
		}
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintf(w, "\nlagging replicas: none (every replica within %d entries of its leader)\n", lag)
		return err
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].partition != rows[j].partition {
			return rows[i].partition < rows[j].partition
		}
		return rows[i].node < rows[j].node
	})
	fmt.Fprintf(w, "\nlagging replicas (more than %d entries behind, or no leader contact for %v):\n", lag, staleContact)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tNODE\tBEHIND\tLAST CONTACT\tLEADER")
	for _, r := range rows {
		if r.node == "" {
			fmt.Fprintf(tw, "%d\t-\t-\t-\tnone: no leader\n", r.partition)
			continue
		}
		contact := "-"
		if r.contact >= 0 {
			contact = (time.Duration(r.contact * float64(time.Second))).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\n", r.partition, r.node, r.behind, contact, r.leader)
	}
	return tw.Flush()
}

func nodeState(s heraldv1.Node_State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

// latency formats seconds for a table: "-" for NaN (no observations).
func latency(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s) // labels come from our own nodes: numbers
	return n
}
