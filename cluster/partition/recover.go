package partition

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/storage/raftstore"
)

// Recover rewrites a closed replica's Raft configuration to servers
// (raft.RecoverCluster), so that a partition which lost its quorum can
// elect a leader again from this replica. It applies the replica's
// committed log first and snapshots the result. Writes that a majority
// acknowledged but this replica never received are lost: use it only when
// the other replicas are gone. Open the replica with New afterwards.
func Recover(cfg Config, trans raft.Transport, servers []raft.Server) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("partition", cfg.ID)
	stores, err := raftstore.Open(raftstore.Config{Dir: cfg.Dir, Shared: cfg.SharedLog, Logger: raftlog.New(log), OnFatal: cfg.OnFatal})
	if err != nil {
		return err
	}
	db, err := openState(cfg, log)
	if err != nil {
		return errors.Join(err, stores.Close())
	}
	onFatal := cfg.OnFatal
	if onFatal == nil {
		onFatal = func(error) {}
	}
	var fatal error
	// An entry the state file has no room for is not waited for: the
	// recovery fails, and can run again once there is room.
	giveUp := make(chan struct{})
	close(giveUp)
	f, err := newFSM(db, newFeed(db, 0), log, func(err error) { fatal = err; onFatal(err) }, giveUp)
	if err != nil {
		return errors.Join(err, db.Close(), stores.Close())
	}
	rc := cfg.raftConfig()
	rc.Logger = raftlog.New(log)
	err = raft.RecoverCluster(rc, releasingFSM{f}, stores.Log, stores.Stable, stores.Snapshots, trans,
		raft.Configuration{Servers: servers})
	if err == nil && fatal != nil {
		err = fatal
	}
	if f.broken.Load() && fatal == nil {
		err = errors.Join(errors.New("the state file has no room for the log; free disk space and recover again"), err)
	}
	if err != nil {
		err = fmt.Errorf("partition %d: recover: %w", cfg.ID, err)
	}
	log.Warn("recovered replica group from this replica", "servers", len(servers), "err", err)
	return errors.Join(err, db.Close(), stores.Close())
}

// releasingFSM releases each snapshot once it is persisted:
// raft.RecoverCluster never calls Release, and an unreleased snapshot
// holds a read transaction that the state file's Close would wait for
// for ever.
type releasingFSM struct{ *fsm }

func (f releasingFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return releasingSnapshot{s}, nil
}

type releasingSnapshot struct{ raft.FSMSnapshot }

func (s releasingSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	return s.FSMSnapshot.Persist(sink)
}
