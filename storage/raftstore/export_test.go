package raftstore

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// OpenSharedLogFS opens the shared log in dir as OpenSharedLog does, with
// Pebble's files on fs (a wrapper that counts syncs, for benchmarks).
func OpenSharedLogFS(dir string, fs vfs.FS) (*SharedLog, error) {
	s := &SharedLog{dir: dir, onFatal: exitOnFatal}
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{s}, FS: fs})
	if err != nil {
		return nil, fmt.Errorf("open shared raft log %s: %w", dir, err)
	}
	s.db = db
	return s, nil
}

// Group returns group id's log store itself, without the cache and the
// fail-stop wrapper that Open puts in front of it.
func (s *SharedLog) Group(id uint64) (raft.LogStore, error) { return s.group(id) }
