// Package raftstore opens the durable stores one Raft replica needs: a
// raft-boltdb/v2 log and stable store (one bbolt file, fsynced on every
// append), an in-memory cache of recent entries in front of it, and a file
// snapshot store.
//
// Stores is safe for concurrent use as hashicorp/raft uses it. Close is
// idempotent.
package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// File and directory names inside a replica directory.
const (
	LogFile     = "raft.db"
	SnapshotDir = "snapshots"
)

// Config says where and how to open the stores.
type Config struct {
	// Dir is the replica directory; it is created if missing.
	Dir string
	// RetainSnapshots is how many snapshots to keep; 0 means 2.
	RetainSnapshots int
	// LogCacheSize is how many recent entries to serve from memory; 0
	// means 512.
	LogCacheSize int
	// Logger receives the snapshot store's messages; nil discards them.
	Logger hclog.Logger
}

// Stores are the log, stable and snapshot stores of one replica.
type Stores struct {
	Log       raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore

	bolt *raftboltdb.BoltStore
}

// Open opens or creates the stores in cfg.Dir.
func Open(cfg Config) (*Stores, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("raftstore: Dir is required")
	}
	if cfg.RetainSnapshots == 0 {
		cfg.RetainSnapshots = 2
	}
	if cfg.LogCacheSize == 0 {
		cfg.LogCacheSize = 512
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create replica dir %q: %w", cfg.Dir, err)
	}
	path := filepath.Join(cfg.Dir, LogFile)
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: path,
		BoltOptions: &bolt.Options{
			Timeout:        time.Second,
			FreelistType:   bolt.FreelistMapType,
			NoFreelistSync: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log %q: %w", path, err)
	}
	cache, err := raft.NewLogCache(cfg.LogCacheSize, store)
	if err != nil {
		_ = store.Close() // best effort: report the cache error
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, SnapshotDir),
		cfg.RetainSnapshots, cfg.Logger)
	if err != nil {
		_ = store.Close() // best effort: report the snapshot store error
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	return &Stores{Log: cache, Stable: store, Snapshots: snaps, bolt: store}, nil
}

// HasState reports whether the stores hold any Raft state, i.e. whether the
// replica was bootstrapped or joined before.
func (s *Stores) HasState() (bool, error) {
	return raft.HasExistingState(s.Log, s.Stable, s.Snapshots)
}

// Close closes the log file. Call it after the Raft instance has shut down.
func (s *Stores) Close() error {
	if s.bolt == nil {
		return nil
	}
	err := s.bolt.Close()
	s.bolt = nil
	return err
}
