package partition

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/storage"
	"github.com/heraldhq/herald/storage/raftstore"
)

// Config configures one replica of a partition.
type Config struct {
	// ID is the partition number.
	ID uint32
	// NodeID is this replica's Raft server id: the node's id.
	NodeID string
	// Dir is the replica directory: raft.db, state.db and snapshots/.
	Dir string
	// Bootstrap is the initial configuration of a new group. It is used only
	// when Dir holds no Raft state; nil means the replica waits to be added
	// by a leader.
	Bootstrap []raft.Server
	// RequireState makes New refuse (ErrStateLost) a Dir without Raft
	// state: the replica had state before, and must not start again
	// without the votes and entries it promised. A bootstrap a crash cut
	// short (see Bootstrap) promised nothing and is started over.
	RequireState bool
	// Logger receives state transitions; nil discards them.
	Logger *slog.Logger

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and
	// CommitTimeout are hashicorp/raft's timers; zero means 1 s, 1 s,
	// 500 ms and 500 ms. CommitTimeout only bounds how long an idle
	// follower waits to learn the commit index (so how stale an idle
	// follower's reads may be); raising it from raft's 50 ms to 500 ms
	// cut the idle CPU of a 3-node cluster with 64 partitions from 17 %
	// to 10 % of a core (BenchmarkIdleCluster in package cluster).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// CommitNudge is how long a leader that has applied the last entry of
	// its log waits for another before it tells its followers the commit
	// index itself, so that they learn at once that the entry committed
	// (see nudger) and
	// their subscribers get its events within milliseconds, not up to
	// twice CommitTimeout later. Zero means 2 ms; negative turns it off.
	CommitNudge time.Duration
	// EventRetention is how many events the leader keeps per channel: it
	// proposes trims of the older ones (retention.go). Zero means
	// DefaultEventRetention; negative keeps every event.
	EventRetention int
	// SnapshotInterval and SnapshotThreshold decide when to snapshot;
	// TrailingLogs is how many entries stay after one. Zero means 2 min,
	// 8192 and 10240.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// MaxStale bounds how long since its last leader contact a replica may
	// serve stale reads; zero means 2 s.
	MaxStale time.Duration
	// Storage tunes the state file.
	Storage storage.Options
	// SyncStateFile fsyncs the state file at every apply batch. Without
	// it (the default) the state file is synced at Close only and rebuilt
	// from the last snapshot and the Raft log after an unclean stop.
	SyncStateFile bool
	// UnsafeReadLocal is a planted defect, for herald torture's canary
	// only: every read, linearizable or not, runs on this replica's state
	// whatever its role or how long since it heard from a leader.
	UnsafeReadLocal bool
	// SharedLog, if non-nil, is the node's Raft log shared by all its
	// replicas (raftstore.SharedLog): appends of different partitions
	// share fsyncs. Nil keeps the log in the replica's own file. A replica
	// once opened with it must always be.
	SharedLog *raftstore.SharedLog
	// Observe receives the replica's measurements, for metrics.
	Observe Observers
	// OnFatal is called when the replica cannot go on: a write, sync or
	// delete in its Raft log failed (never retried, see package
	// raftstore), or the state file could not be written. The default logs
	// one line with the error and exits the process.
	OnFatal func(error)
}

// DefaultEventRetention is how many events a channel keeps by default.
const DefaultEventRetention = 100_000

// DefaultConfig returns a Config with every default filled in; ID, NodeID
// and Dir are left for the caller.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      500 * time.Millisecond,
		CommitNudge:        2 * time.Millisecond,
		EventRetention:     DefaultEventRetention,
		SnapshotInterval:   2 * time.Minute,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		MaxStale:           2 * time.Second,
	}
}

// withDefaults returns c with zero fields replaced by DefaultConfig's.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDefault(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	setDefault(&c.ElectionTimeout, d.ElectionTimeout)
	setDefault(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDefault(&c.CommitTimeout, d.CommitTimeout)
	setDefault(&c.CommitNudge, d.CommitNudge)
	setDefault(&c.EventRetention, d.EventRetention)
	setDefault(&c.SnapshotInterval, d.SnapshotInterval)
	setDefault(&c.SnapshotThreshold, d.SnapshotThreshold)
	setDefault(&c.TrailingLogs, d.TrailingLogs)
	setDefault(&c.MaxStale, d.MaxStale)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// Validate reports the first field that is missing or out of range.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.NodeID == "":
		return errors.New("partition: NodeID is required")
	case c.Dir == "":
		return errors.New("partition: Dir is required")
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("partition: ElectionTimeout %v is below HeartbeatTimeout %v",
			c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("partition: LeaderLeaseTimeout %v is above HeartbeatTimeout %v",
			c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	return nil
}

// raftConfig builds hashicorp/raft's configuration.
func (c Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	rc.MaxAppendEntries = 256
	// Our Propose waits on the future under the caller's deadline, so the
	// enqueue timeout that BatchApplyCh weakens does not matter.
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = false
	rc.NoLegacyTelemetry = true
	return rc
}
