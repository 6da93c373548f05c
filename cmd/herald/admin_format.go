package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// The output of herald admin: tables for people, JSON for programs. The
// writers here take fixed responses and do no I/O but writing, so tests
// can check them without a server.

// jsonOptions marshal admin responses for -o json: protojson's defaults
// (lowerCamel names, unset fields left out, 64-bit integers as strings),
// indented.
var jsonOptions = protojson.MarshalOptions{Multiline: true, Indent: "  "}

// writeProto writes one response message as indented protojson.
func writeProto(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeJSON writes v, an object of our own design that may embed
// protojson as json.RawMessage, indented like writeProto.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// rawProto returns m as protojson, to embed in writeJSON's objects.
func rawProto(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	return json.RawMessage(b), err
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// healthName is a partition's health as the ring table shows it.
func healthName(h heraldv1.Partition_Health) string {
	switch h {
	case heraldv1.Partition_HEALTH_OK:
		return "ok"
	case heraldv1.Partition_HEALTH_DEGRADED:
		return "degraded"
	case heraldv1.Partition_HEALTH_NO_QUORUM:
		return "no-quorum"
	}
	return "unknown"
}

// nodeStateName is a node's state as the nodes table shows it.
func nodeStateName(s heraldv1.Node_State) string {
	switch s {
	case heraldv1.Node_STATE_ACTIVE:
		return "active"
	case heraldv1.Node_STATE_DRAINING:
		return "draining"
	case heraldv1.Node_STATE_REMOVED:
		return "removed"
	}
	return "unknown"
}

// tokenRange shows a partition's token range by the top 32 bits of its
// first and last token, in hex: "10000000..1fffffff".
func tokenRange(first, last uint64) string {
	return fmt.Sprintf("%08x..%08x", first>>32, last>>32)
}

// replicaList lists replicas by node id, marking non-voters with "*":
// "n1 n2 n3*".
func replicaList(rs []*heraldv1.Replica) string {
	if len(rs) == 0 {
		return "-"
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.GetNodeId()
		if !r.GetVoter() {
			ids[i] += "*"
		}
	}
	return strings.Join(ids, " ")
}

// desiredColumn shows where the placement wants a partition's replicas,
// or "-" when that is where they are (in any order).
func desiredColumn(p *heraldv1.Partition) string {
	have := make([]string, 0, len(p.GetReplicas()))
	for _, r := range p.GetReplicas() {
		have = append(have, r.GetNodeId())
	}
	want := slices.Clone(p.GetDesiredReplicas())
	slices.Sort(have)
	slices.Sort(want)
	if slices.Equal(have, want) {
		return "-"
	}
	if len(want) == 0 {
		return "(none)"
	}
	return strings.Join(p.GetDesiredReplicas(), " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const ringHeader = "PARTITION\tTOKENS\tLEADER\tREPLICAS\tDESIRED\tCOMMIT\tAPPLIED\tHEALTH"

func writePartitionRow(tw io.Writer, p *heraldv1.Partition) {
	fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n",
		p.GetId(), tokenRange(p.GetFirstToken(), p.GetLastToken()), orDash(p.GetLeader()),
		replicaList(p.GetReplicas()), desiredColumn(p), p.GetCommitIndex(), p.GetAppliedIndex(),
		healthName(p.GetHealth()))
}

// writePartitions writes a ring table of the given partitions, without a
// footer.
func writePartitions(w io.Writer, parts ...*heraldv1.Partition) error {
	tw := newTable(w)
	fmt.Fprintln(tw, ringHeader)
	for _, p := range parts {
		writePartitionRow(tw, p)
	}
	return tw.Flush()
}

// writeRing writes the ring table and a footer with the partition count,
// health counts and placement epoch.
func writeRing(w io.Writer, r *heraldv1.GetRingResponse) error {
	if err := writePartitions(w, r.GetPartitions()...); err != nil {
		return err
	}
	counts := map[string]int{}
	for _, p := range r.GetPartitions() {
		counts[healthName(p.GetHealth())]++
	}
	var health []string
	for _, h := range []string{"ok", "degraded", "no-quorum", "unknown"} {
		if counts[h] > 0 {
			health = append(health, fmt.Sprintf("%d %s", counts[h], h))
		}
	}
	summary := ""
	if len(health) > 0 {
		summary = " (" + strings.Join(health, ", ") + ")"
	}
	_, err := fmt.Fprintf(w, "\n%d partitions%s, placement epoch %d\n",
		r.GetPartitionCount(), summary, r.GetPlacementEpoch())
	return err
}

// metaColumn says what a node is in the metadata group.
func metaColumn(n *heraldv1.Node, metaLeader string) string {
	switch {
	case n.GetId() == metaLeader:
		return "leader"
	case n.GetMetaVoter():
		return "voter"
	}
	return "-"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// writeNodes writes the nodes table and a footer naming the metadata
// leader.
func writeNodes(w io.Writer, r *heraldv1.ListNodesResponse) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tHTTP\tRAFT\tSTATE\tROLES\tMETA\tREPLICAS\tLEADERS\tREACHABLE")
	for _, n := range r.GetNodes() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n",
			n.GetId(), orDash(n.GetHttpAddr()), orDash(n.GetRaftAddr()), nodeStateName(n.GetState()),
			orDash(strings.Join(n.GetRoles(), ",")), metaColumn(n, r.GetMetaLeader()), n.GetReplicas(), n.GetLeaders(), yesNo(n.GetReachable()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d nodes, metadata leader %s\n", len(r.GetNodes()), orDash(r.GetMetaLeader()))
	return err
}

// writeLookup writes where a channel lives: its token and partition, then
// the partition's ring row.
func writeLookup(w io.Writer, r *heraldv1.LookupChannelResponse) error {
	fmt.Fprintf(w, "channel    %s\ntoken      %016x\npartition  %d\n\n",
		r.GetChannelId(), r.GetToken(), r.GetPartition().GetId())
	return writePartitions(w, r.GetPartition())
}

// digestResult is one replica's answer to GetReplicaDigest, or why there
// is none.
type digestResult struct {
	node string
	resp *heraldv1.GetReplicaDigestResponse // nil when err is set
	err  error
}

// shortDigest shows the first 16 hex digits of a SHA-256.
func shortDigest(sum []byte) string {
	s := hex.EncodeToString(sum)
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}

// digestVerdict compares the digests of replicas at equal applied index.
// It returns a sentence for the table's last line and whether every such
// group agrees; replicas that did not answer are left out.
func digestVerdict(results []digestResult) (line string, agree bool) {
	type group struct {
		index uint64
		nodes []string
		sums  map[string][]string // hex digest → nodes
	}
	var groups []*group
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
			continue
		}
		i := slices.IndexFunc(groups, func(g *group) bool { return g.index == r.resp.GetAppliedIndex() })
		if i < 0 {
			groups = append(groups, &group{index: r.resp.GetAppliedIndex(), sums: map[string][]string{}})
			i = len(groups) - 1
		}
		g := groups[i]
		g.nodes = append(g.nodes, r.node)
		sum := hex.EncodeToString(r.resp.GetSha256())
		g.sums[sum] = append(g.sums[sum], r.node)
	}
	slices.SortFunc(groups, func(a, b *group) int { return -cmpUint64(a.index, b.index) })
	unread := ""
	if failed > 0 {
		unread = fmt.Sprintf("; %d replica(s) did not answer", failed)
	}
	agree = true
	var differ []string
	for _, g := range groups {
		if len(g.sums) > 1 {
			agree = false
			var parts []string
			for sum, nodes := range g.sums {
				parts = append(parts, strings.Join(nodes, ", ")+" "+sum[:min(16, len(sum))])
			}
			slices.Sort(parts)
			differ = append(differ, fmt.Sprintf("at applied index %d: %s", g.index, strings.Join(parts, " vs ")))
		}
	}
	switch {
	case !agree:
		return "DIGESTS DIFFER " + strings.Join(differ, "; ") + unread, false
	case len(groups) == 0:
		return "no replica answered", true
	case len(groups) == 1 && len(groups[0].nodes) > 1:
		return fmt.Sprintf("all %d replicas are at applied index %d and have equal digests%s",
			len(groups[0].nodes), groups[0].index, unread), true
	case len(groups) == 1:
		return fmt.Sprintf("only %s answered: nothing to compare%s", groups[0].nodes[0], unread), true
	}
	var at []string
	compared := false
	for _, g := range groups {
		at = append(at, fmt.Sprintf("%s at %d", strings.Join(g.nodes, ", "), g.index))
		compared = compared || len(g.nodes) > 1
	}
	if !compared {
		return "replicas are at different applied indexes (" + strings.Join(at, "; ") +
			"): nothing to compare; run again once they catch up" + unread, true
	}
	return "replicas at equal applied index have equal digests (" + strings.Join(at, "; ") + ")" + unread, true
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeDigests writes one row per replica and the verdict line.
func writeDigests(w io.Writer, results []digestResult) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NODE\tAPPLIED\tSHA256")
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\t-\terror: %v\n", r.node, r.err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", r.node, r.resp.GetAppliedIndex(), shortDigest(r.resp.GetSha256()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	line, _ := digestVerdict(results)
	_, err := fmt.Fprintf(w, "\n%s\n", line)
	return err
}

// humanBytes shows a size in B, KiB, MiB or GiB with one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 2 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"KiB", "MiB", "GiB"}[i])
}

// writeSnapshotFiles writes the summary table of a saved or restored
// snapshot and a footer line.
func writeSnapshotFiles(w io.Writer, files []manifestFile, footer string) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "PARTITION\tFILE\tSIZE\tAPPLIED\tSHA256")
	for _, f := range files {
		sum := f.SHA256
		if len(sum) > 16 {
			sum = sum[:16]
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", f.Partition, f.File, humanBytes(f.Bytes), f.AppliedIndex, sum)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s\n", footer)
	return err
}
