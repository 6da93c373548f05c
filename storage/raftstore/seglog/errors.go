package seglog

import "errors"

var (
	// ErrClosed is returned by writes and reads after Close, and by writes
	// still queued when Close stopped the flusher.
	ErrClosed = errors.New("seglog: closed")
	// ErrFailed is returned, wrapping the first failure, by every write
	// after a write or sync of the log failed: nothing is retried.
	ErrFailed = errors.New("seglog: an earlier write to the log failed; it takes no more writes")
	// ErrCorrupt is returned by Open for a record that fails its checksum,
	// or does not parse, in a segment other than the last one (which a
	// crash can only have left torn at its end).
	ErrCorrupt = errors.New("seglog: corrupt segment")
)
