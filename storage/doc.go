// Package storage is the durable state of one partition replica: a bbolt
// file holding, per channel, the gap-free event log, the message view, the
// dedup table and the channel record with its members, plus the last applied
// Raft index, written in the same transaction as the data.
//
// The state machine (DB.Apply) is deterministic: it reads no clock, takes
// timestamps and the caller from the command, marshals protos
// deterministically, and fails a command whole (a domain *Error, nothing
// written) or applies it whole. Entries at or below the applied index are
// skipped, so Raft may redeliver them.
//
// Concurrency: Apply and Restore run on one goroutine (the Raft FSM's);
// View, Snapshot and Digest may run concurrently with them. Errors: domain
// errors are *Error wrapping one of the ErrX kinds; anything else returned
// by Apply is an I/O failure after which the replica must stop.
//
// See DESIGN.md for the key layout and why it is shaped this way.
package storage
