// Package check records what the clients of a Herald cluster did and saw
// while faults were injected, and checks that record against the
// guarantees of Herald's design (DESIGN.md, "Guarantees" and "Errors").
//
// A History is a list of Ops in the order they happened: each post or read
// attempt is an invoke followed by its completion (ok, fail or
// indeterminate), and faults appear as fault records. After the faults
// heal, the drain reads every channel through every node; those reads are
// marked Final. Histories are encoded as JSON lines (WriteJSONL,
// ReadJSONL), so the same checks run over the history of an in-process
// test cluster and of real processes alike.
//
// The checkers, each returning a Verdict that names the violating
// operations:
//
//   - Lost: every acknowledged post is in the final history.
//   - Duplicates: no client_msg_id is stored more than once, in any read.
//   - Order: the final reads through every node agree, message by
//     message; each channel's seqs run from 1 without a gap; an
//     acknowledged post's seq is its stored seq (a retry with the same
//     client_msg_id included); a post acknowledged before another was
//     invoked has the lower seq; and every read returns a prefix of the
//     final history (nothing uncommitted, nothing out of order).
//   - StaleReads: a linearizable read holds every post of its channel
//     acknowledged before the read was invoked.
//   - Indeterminate: a post whose attempts were never acknowledged but may
//     have applied is, after the drain, either stored once or absent (the
//     verdict counts both); one whose every attempt definitely failed is
//     absent.
//   - Linearizable: with porcupine, each channel's posts and linearizable
//     reads are linearizable against an append-only log that deduplicates
//     by client_msg_id (posts that may have applied have no known end).
//
// Checkers are pure functions of the history; Recorder is safe for
// concurrent use.
package check
