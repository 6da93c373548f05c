package meta

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// Config configures a node's replica of the metadata group.
type Config struct {
	// NodeID is this replica's Raft server id: the node's id. Required.
	NodeID string
	// Dir is the replica directory: raft.db and snapshots/. Required.
	Dir string
	// Logger receives state transitions; nil discards them.
	Logger *slog.Logger
	// OnFatal is called when a write, sync or delete in the replica's Raft
	// log fails (never retried, see package raftstore). Nil logs one line
	// with the error and exits the process.
	OnFatal func(error)

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and
	// CommitTimeout are hashicorp/raft's timers; zero means 1 s, 1 s,
	// 500 ms and 50 ms.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotThreshold is how many entries trigger a snapshot and
	// TrailingLogs how many stay in the log after one; zero means 1024 and
	// 1024. The metadata is small, so snapshots are cheap.
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

// DefaultConfig returns a Config with every default filled in; NodeID and
// Dir are left for the caller.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotThreshold:  1024,
		TrailingLogs:       1024,
	}
}

// withDefaults returns c with zero fields replaced by DefaultConfig's.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDefault(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	setDefault(&c.ElectionTimeout, d.ElectionTimeout)
	setDefault(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDefault(&c.CommitTimeout, d.CommitTimeout)
	setDefault(&c.SnapshotThreshold, d.SnapshotThreshold)
	setDefault(&c.TrailingLogs, d.TrailingLogs)
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

// Validate reports the first field that is missing or out of range, with
// zero fields taken as their defaults. It is safe to call on a copy from
// any goroutine.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.NodeID == "":
		return errors.New("meta: NodeID is required")
	case c.Dir == "":
		return errors.New("meta: Dir is required")
	case c.HeartbeatTimeout < 0, c.ElectionTimeout < 0, c.LeaderLeaseTimeout < 0, c.CommitTimeout < 0:
		return errors.New("meta: timers must not be negative")
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("meta: ElectionTimeout %v is below HeartbeatTimeout %v",
			c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("meta: LeaderLeaseTimeout %v is above HeartbeatTimeout %v",
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
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	// The state lives only in memory: it is rebuilt from the latest
	// snapshot and the log after it at every start.
	rc.NoSnapshotRestoreOnStart = false
	rc.NoLegacyTelemetry = true
	return rc
}
