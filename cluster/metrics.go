package cluster

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/partition"
)

// latencyBuckets are the buckets of the node's duration histograms, in
// seconds: 100 µs to 10 s, covering an fsync on a fast disk to a stall.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics are the node's measurements in Prometheus form: histograms and
// counters fed as things happen (applies, snapshots, leader changes,
// appends to the shared log), and gauges read from the replicas and the
// metadata group at scrape time. Partition ids are the only label besides
// fixed sets (roles, node states): bounded by the partition count.
type metrics struct {
	n *Node

	apply         *prometheus.HistogramVec // by partition
	snapshot      *prometheus.HistogramVec // by partition
	leaderChanges *prometheus.CounterVec   // by partition
	logAppend     prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	byPartition := []string{"partition"}
	return &metrics{n: n,
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_partition_apply_duration_seconds",
			Help:    "Time to apply one batch of committed entries to a replica's state file.",
			Buckets: latencyBuckets}, byPartition),
		snapshot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_partition_snapshot_duration_seconds",
			Help:    "Time to write one snapshot of a replica's state, fsync included.",
			Buckets: latencyBuckets}, byPartition),
		leaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_partition_leader_changes_total",
			Help: "Leader changes a replica has seen (a new leader, or none) since it opened here."}, byPartition),
		logAppend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_log_append_duration_seconds",
			Help:    "Time of one synced append to the node's shared Raft log, WAL fsync included (shared by concurrent appends).",
			Buckets: latencyBuckets}),
	}
}

// observers are what partition p's replica measures into.
func (m *metrics) observers(p uint32) partition.Observers {
	l := strconv.FormatUint(uint64(p), 10)
	return partition.Observers{
		Apply:        m.apply.WithLabelValues(l),
		Snapshot:     m.snapshot.WithLabelValues(l),
		LeaderChange: m.leaderChanges.WithLabelValues(l),
	}
}

// forget drops partition p's series when its replica leaves the node.
func (m *metrics) forget(p uint32) {
	l := strconv.FormatUint(uint64(p), 10)
	m.apply.DeleteLabelValues(l)
	m.snapshot.DeleteLabelValues(l)
	m.leaderChanges.DeleteLabelValues(l)
}

// Descriptions of the gauges read at scrape time.
var (
	descPartitionRole = prometheus.NewDesc("herald_partition_role",
		"1 for a replica's current Raft role (leader, follower, candidate, shutdown).", []string{"partition", "role"}, nil)
	descPartitionTerm = prometheus.NewDesc("herald_partition_term",
		"A replica's current Raft term.", []string{"partition"}, nil)
	descPartitionCommit = prometheus.NewDesc("herald_partition_commit_index",
		"The highest log index a replica knows committed.", []string{"partition"}, nil)
	descPartitionApplied = prometheus.NewDesc("herald_partition_applied_index",
		"The log index a replica's state reflects.", []string{"partition"}, nil)
	descPartitionLast = prometheus.NewDesc("herald_partition_last_index",
		"The last index of a replica's log (or its latest snapshot).", []string{"partition"}, nil)
	descPartitionContact = prometheus.NewDesc("herald_partition_last_contact_seconds",
		"Seconds since a follower last heard from its leader (absent on a leader).", []string{"partition"}, nil)
	descPartitionCaughtUp = prometheus.NewDesc("herald_partition_caught_up",
		"1 once a replica has been seen within reach of its leader's commit index.", []string{"partition"}, nil)
	descPartitionCurrent = prometheus.NewDesc("herald_partition_current",
		"1 when a replica feeds this node's event streams (a leader, or a follower in contact with it and caught up); 0 while they read from a peer.", []string{"partition"}, nil)
	descPeerStreams = prometheus.NewDesc("herald_peer_watch_streams",
		"WatchPartition streams this node reads events from peers over: one per partition it reads from another node's replica.", nil, nil)
	descPeerWatches = prometheus.NewDesc("herald_peer_watches",
		"Channel watches carried on this node's WatchPartition streams.", nil, nil)
	descNodeReady = prometheus.NewDesc("herald_node_ready",
		"1 when the node has the metadata and every replica it holds has a leader and is caught up (as /readyz).", nil, nil)
	descMetaRole = prometheus.NewDesc("herald_meta_role",
		"1 for the metadata replica's current Raft role.", []string{"role"}, nil)
	descMetaTerm = prometheus.NewDesc("herald_meta_term",
		"The metadata replica's Raft term.", nil, nil)
	descMetaCommit = prometheus.NewDesc("herald_meta_commit_index",
		"The highest metadata log index this node knows committed.", nil, nil)
	descMetaApplied = prometheus.NewDesc("herald_meta_applied_index",
		"The metadata log index this node has applied.", nil, nil)
	descMetaContact = prometheus.NewDesc("herald_meta_last_contact_seconds",
		"Seconds since the metadata replica last heard from its leader (absent on the leader).", nil, nil)
	descMetaLeader = prometheus.NewDesc("herald_meta_has_leader",
		"1 when the metadata replica knows a leader.", nil, nil)
	descNodes = prometheus.NewDesc("herald_cluster_nodes",
		"Nodes in the cluster's metadata, by state (active, draining, removed).", []string{"state"}, nil)
	descPartitions = prometheus.NewDesc("herald_cluster_partitions",
		"Partitions in the ring.", nil, nil)
)

// Describe sends every series' description.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.apply.Describe(ch)
	m.snapshot.Describe(ch)
	m.leaderChanges.Describe(ch)
	m.logAppend.Describe(ch)
	for _, d := range []*prometheus.Desc{descPartitionRole, descPartitionTerm, descPartitionCommit,
		descPartitionApplied, descPartitionLast, descPartitionContact, descPartitionCaughtUp,
		descPartitionCurrent, descPeerStreams, descPeerWatches, descNodeReady,
		descMetaRole, descMetaTerm, descMetaCommit, descMetaApplied, descMetaContact, descMetaLeader,
		descNodes, descPartitions} {
		ch <- d
	}
}

// Collect sends every series' current value.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.apply.Collect(ch)
	m.snapshot.Collect(ch)
	m.leaderChanges.Collect(ch)
	m.logAppend.Collect(ch)
	n := m.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range n.reps.all() {
		p := strconv.FormatUint(uint64(r.ID()), 10)
		s := r.Status()
		gauge(descPartitionRole, 1, p, strings.ToLower(s.State))
		gauge(descPartitionTerm, float64(s.Term), p)
		gauge(descPartitionCommit, float64(s.CommitIndex), p)
		gauge(descPartitionApplied, float64(s.AppliedIndex), p)
		gauge(descPartitionLast, float64(s.LastIndex), p)
		if s.State != "Leader" && !s.LastContact.IsZero() {
			gauge(descPartitionContact, time.Since(s.LastContact).Seconds(), p)
		}
		_, _, caughtUp, _ := n.reps.lookup(r.ID())
		gauge(descPartitionCaughtUp, bool01(caughtUp || s.State == "Leader"), p)
		gauge(descPartitionCurrent, bool01(n.current(r) == nil), p)
	}
	streams, watches := n.ups.stats()
	gauge(descPeerStreams, float64(streams))
	gauge(descPeerWatches, float64(watches))
	gauge(descNodeReady, bool01(n.Ready()))
	ms := n.meta.Status()
	gauge(descMetaRole, 1, strings.ToLower(ms.State))
	gauge(descMetaTerm, float64(ms.Term))
	gauge(descMetaCommit, float64(ms.CommitIndex))
	gauge(descMetaApplied, float64(ms.AppliedIndex))
	if ms.State != "Leader" && !ms.LastContact.IsZero() {
		gauge(descMetaContact, time.Since(ms.LastContact).Seconds())
	}
	leader, _ := n.meta.Leader()
	gauge(descMetaLeader, bool01(leader != ""))
	st := n.meta.State()
	states := map[heraldv1.Node_State]int{heraldv1.Node_STATE_ACTIVE: 0, heraldv1.Node_STATE_DRAINING: 0, heraldv1.Node_STATE_REMOVED: 0}
	for _, node := range st.GetNodes() {
		states[node.GetState()]++
	}
	for s, c := range states {
		gauge(descNodes, float64(c), strings.ToLower(strings.TrimPrefix(s.String(), "STATE_")))
	}
	gauge(descPartitions, float64(st.GetPartitions()))
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Metrics returns the node's Prometheus collector (see metrics), to be
// registered with the registry that serves /metrics.
func (n *Node) Metrics() prometheus.Collector { return n.metrics }
