// Package partition runs one replica of a partition: a hashicorp/raft group
// whose log and stable store are raft-boltdb/v2, whose snapshots are files,
// and whose state machine is a storage.DB applied in batches
// (raft.BatchingFSM), one bbolt transaction per batch. On one node a
// partition is a group of one; the same code runs three replicas.
//
// Writes go through Propose, which is ctx-first and tells the caller
// whether a failed write may have applied (ErrIndeterminate) or not
// (ErrNotLeader, ErrNotApplied). Linearizable reads run on the leader by
// read-index: after one Barrier per term, a read records the commit index,
// confirms leadership with VerifyLeader and waits until the state machine
// has applied that index; stale reads run on any replica in recent contact
// with a leader.
//
// Every replica publishes its applied events to a Feed; Streams read them
// in seq order with no gap or duplicate, from memory while they keep up and
// from the state file otherwise (and after a snapshot restore).
//
// Concurrency: Partition, Feed and Stream are safe for concurrent use, but
// one goroutine calls a given Stream's Next. Partition owns one goroutine
// (the leadership watcher) besides Raft's own; Close stops both.
package partition
