// Package raftstore opens the durable stores one Raft replica needs: a
// raft-boltdb/v2 log and stable store (one bbolt file, fsynced on every
// append), an in-memory cache of recent entries in front of it, and a file
// snapshot store.
//
// Any error writing, syncing or deleting in the log and stable store is
// fatal: Config.OnFatal is called (by default the process stops with one
// line naming the file and the error), and the stores take no more writes.
// Stores is safe for concurrent use as hashicorp/raft uses it. Close is
// idempotent.
package raftstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/heraldhq/herald/storage/boltfile"
)

// File and directory names inside a replica directory.
const (
	LogFile     = "raft.db"
	SnapshotDir = "snapshots" // made by raft's file snapshot store
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
	// Shared, if non-nil, holds the log instead of the replica's own file
	// (which then keeps only the stable store): the replica's group, named
	// in Dir/log-id, is made on first use, and entries an earlier version
	// kept in the replica's file are moved into it.
	Shared *SharedLog
	// OnFatal is called once, with an error naming the file, when a write,
	// sync or delete in the log or stable store fails; that write and every
	// later one then return an error without touching the file. It is
	// called on the goroutine that wrote (raft's) and is meant not to
	// return. Nil logs the error with slog's default logger and exits the
	// process with status 1.
	OnFatal func(error)
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
	if cfg.OnFatal == nil {
		cfg.OnFatal = exitOnFatal
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create replica dir %q: %w", cfg.Dir, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, LogIDFile)); cfg.Shared == nil && err == nil {
		return nil, fmt.Errorf("open raft log of %q: its entries are in the node's shared raft log (%s), "+
			"which was not given", cfg.Dir, LogIDFile)
	}
	path := filepath.Join(cfg.Dir, LogFile)
	if removed, err := boltfile.CheckTorn(path); err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	} else if removed {
		cfg.Logger.Warn("removed a raft log cut short while it was created (a crash before its first sync); it held nothing", "path", path)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: path,
		BoltOptions: &bolt.Options{
			Timeout:        time.Second,
			FreelistType:   bolt.FreelistMapType,
			NoFreelistSync: true,
		},
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open raft log %q: locked by another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open raft log %q: %w", path, err)
	}
	fs := &failStop{bolt: store, log: store, path: path, onFatal: cfg.OnFatal}
	if cfg.Shared != nil {
		g, err := sharedGroup(cfg.Shared, cfg.Dir, store)
		if err != nil {
			_ = store.Close() // best effort: report the shared log error
			return nil, err
		}
		fs.log, fs.path = g, fmt.Sprintf("%s (group of %s)", cfg.Shared.dir, cfg.Dir)
	}
	cache, err := raft.NewLogCache(cfg.LogCacheSize, fs)
	if err != nil {
		_ = store.Close() // best effort: report the cache error
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	// The store keeps its files in Dir/snapshots (SnapshotDir).
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.RetainSnapshots, cfg.Logger)
	if err != nil {
		_ = store.Close() // best effort: report the snapshot store error
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	return &Stores{Log: cachedLog{LogCache: cache, fs: fs}, Stable: fs, Snapshots: snaps, bolt: store}, nil
}

// HasState reports whether the stores hold any Raft state, i.e. whether the
// replica was bootstrapped or joined before.
func (s *Stores) HasState() (bool, error) {
	return raft.HasExistingState(s.Log, s.Stable, s.Snapshots)
}

// Keys hashicorp/raft keeps in the stable store (raft.go).
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
)

// ResetPartialBootstrap undoes a bootstrap that a crash cut short.
// hashicorp/raft's BootstrapCluster makes two durable writes, the current
// term and then the configuration entry; a replica stopped between them
// has state (HasState is true, so it is not bootstrapped again) but no
// configuration, and a group of one then never elects a leader. When the
// stores hold term 1 (the bootstrap's) but no log entry, no snapshot and no
// vote, nothing else can have happened, and ResetPartialBootstrap clears
// the term so the caller can bootstrap again. It reports whether it did. Call it only for a
// replica whose caller bootstraps it, before starting Raft.
func (s *Stores) ResetPartialBootstrap() (bool, error) {
	has, err := s.HasState()
	if err != nil || !has {
		return false, err
	}
	last, err := s.Log.LastIndex()
	if err != nil || last != 0 {
		return false, err
	}
	snaps, err := s.Snapshots.List()
	if err != nil || len(snaps) != 0 {
		return false, err
	}
	vote, err := s.Stable.GetUint64(keyLastVoteTerm)
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return false, err
	}
	if vote != 0 {
		return false, nil
	}
	// Bootstrap writes term 1, and no leader ever has term 1 (the first
	// election makes term 2). A higher term came from a leader or a
	// candidate: the replica promised not to take entries from older
	// leaders, and forgetting that term would let a deposed leader that
	// resumes commit with its help.
	term, err := s.Stable.GetUint64(keyCurrentTerm)
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return false, err
	}
	if term != 1 {
		return false, nil
	}
	if err := s.Stable.SetUint64(keyCurrentTerm, 0); err != nil {
		return false, fmt.Errorf("reset partial bootstrap: %w", err)
	}
	return true, nil
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
