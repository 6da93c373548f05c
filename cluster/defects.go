package cluster

import (
	"log/slog"

	"github.com/heraldhq/herald/storage/raftstore"
)

// Defects are known bugs a node can be started with, so that herald
// torture's canaries can show that its checkers catch each of them. Every
// one breaks a guarantee: never set them otherwise.
type Defects struct {
	// UnsyncedLog acknowledges Raft log appends before they are fsynced:
	// a power loss of a majority loses acknowledged posts.
	UnsyncedLog bool
	// SkipDedup stores a post again when it is retried with the same
	// client_msg_id: a duplicate.
	SkipDedup bool
	// LocalReads serves linearizable reads from this node's replica
	// whatever its role: a replica cut off from its leader answers stale.
	LocalReads bool
}

// plant applies the defects set to cfg and the shared log, saying so.
func (d Defects) plant(cfg *Config, shared *raftstore.SharedLog, log *slog.Logger) {
	if d.UnsyncedLog {
		shared.UnsafeNoSync()
	}
	cfg.Partition.Storage.UnsafeSkipDedup = d.SkipDedup
	cfg.Partition.UnsafeReadLocal = d.LocalReads
	if d != (Defects{}) {
		log.Warn("started with planted defects, for testing the checkers only: acknowledged posts may be lost, duplicated or read stale",
			"unsynced_log", d.UnsyncedLog, "skip_dedup", d.SkipDedup, "local_reads", d.LocalReads)
	}
}
