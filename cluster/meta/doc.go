// Package meta runs the cluster's metadata Raft group and plans where
// partition replicas go.
//
// The metadata is small: the nodes (id, addresses, roles, region, state),
// the partition count and replication factor fixed by InitCluster, and the
// desired placement of every partition with an epoch that counts its
// changes. It never holds current leaders: those come from the local
// partition replicas (raft.Leader), NotLeader hints and a cache, and change
// far too often to be worth a consensus round.
//
// Every node of the cluster has a replica of the group (Group): the first
// --meta-voters (3 or 5) nodes as voters, the others as non-voters. So
// every node keeps a local copy of the metadata in memory (State, Watch),
// kept current by Raft's log, and the data path reads that copy: it never
// needs the group's quorum. Only metadata changes (a node joining or
// draining, a placement step) go through the group's leader (Propose).
// The state machine (Apply) is deterministic and free of I/O; it is rebuilt
// at every start from the latest snapshot and the log after it.
//
// Placement (InitialPlacement, Plan, Counts) is pure: it reads a MetaState
// and returns placements, and the metadata leader's reconciler proposes
// them with SetPlacement, whose expected epoch makes each one a
// compare-and-set.
//
// Concurrency: Group's methods are safe for concurrent use, and a state it
// returns is immutable (a change publishes a new one), so readers share it
// without locks and must not modify it. Group owns no goroutine besides
// Raft's; Close stops Raft and is idempotent.
//
// Errors: Raft-level failures are ErrNotLeader (as *NotLeaderError),
// ErrNotApplied, ErrIndeterminate and ErrClosed, which say whether a change
// may have been applied. Commands the state machine rejects return a
// *storage.Error (invalid argument, not found, failed precondition), so the
// gateway maps them with the same function as channel errors; a rejected
// command changes nothing.
package meta
