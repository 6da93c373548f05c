// Package seglog is a Raft log store for every Raft group of a node: one
// directory of append-only segment files, written by one flusher that
// group-commits. Every append or delete, of any group, is queued; the
// flusher takes all the requests queued while its previous write and
// fdatasync ran, writes them with one write, syncs once, updates the
// in-memory index and only then wakes the callers. So a call returns once
// its records are durable, and concurrent groups share their fsyncs.
//
// A record is length-prefixed and checksummed (CRC-32C): an entry (group
// id, index, term, type, append time, data, extensions) or a deletion
// marker (group id and an index range). The index of each group (index →
// segment and offset) lives in memory and is rebuilt at Open by replaying
// the segments in order; replay stops at the first torn or corrupt record
// of the last segment and truncates the file there. Deletions are markers,
// so a suffix truncation (raft's conflict resolution) survives a reopen;
// whole segments at the head are removed once no group has a live entry
// in them (prefix compaction).
//
// Concurrency: Log and the stores Group returns are safe for concurrent
// use. Errors: a failed write or sync is sticky, as in raftstore: the
// request fails, and every later write fails with ErrFailed without
// touching the files (the kernel may have dropped the pages it could not
// write; a retried fdatasync could succeed over them). Reopen to recover.
//
// The package is a prototype kept for measurement against the Pebble log
// (raftstore.SharedLog); production does not use it. See storage/DESIGN.md.
package seglog
