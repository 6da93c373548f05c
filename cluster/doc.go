// Package cluster is a Herald node's cluster role: it owns the node's
// partition replicas and their shared Raft transport, and routes every
// request to the partition that owns its channel (cluster/ring).
//
// Today a node holds every partition as a Raft group of one. The router's
// contract is already the cluster's: Apply returns the command's result or
// says whether a failed write may have applied (ErrIndeterminate) or did
// not (ErrNotApplied, ErrNoLeader); reads are linearizable unless stale;
// requests without a deadline get Config.RequestTimeout.
//
// Node's methods are safe for concurrent use; Close is idempotent and shuts
// the replicas down before the transport.
package cluster
