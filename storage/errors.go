package storage

import (
	"errors"
	"fmt"
)

// Kinds of domain error. Apply and the Reader methods return an *Error whose
// Unwrap is one of these, so callers classify with errors.Is and show the
// *Error's text, which names the offending field or object and is safe to
// show to clients.
var (
	// ErrInvalidArgument is returned for a malformed command or query: a bad
	// id, text, limit or thread reference.
	ErrInvalidArgument = errors.New("storage: invalid argument")
	// ErrNotFound is returned when a channel or message does not exist, or
	// the channel is private and the caller may not see it.
	ErrNotFound = errors.New("storage: not found")
	// ErrAlreadyExists is returned by CreateChannel for an id in use.
	ErrAlreadyExists = errors.New("storage: already exists")
	// ErrPermissionDenied is returned when the caller is not a member, not
	// the author, or not an admin, as the command requires.
	ErrPermissionDenied = errors.New("storage: permission denied")
	// ErrFailedPrecondition is returned for writes to an archived channel.
	ErrFailedPrecondition = errors.New("storage: failed precondition")
	// ErrResourceExhausted is returned when a per-object limit is reached,
	// such as the number of distinct reactions on a message.
	ErrResourceExhausted = errors.New("storage: resource exhausted")
	// ErrCursorExpired is returned by Reader.Events when the events after the
	// cursor have been trimmed.
	ErrCursorExpired = errors.New("storage: cursor expired")
	// ErrCursorAhead is returned by event streams whose cursor is past the
	// channel's head for good: the head went back below it (a restored
	// snapshot), or the partition's leader has no such events.
	ErrCursorAhead = errors.New("storage: cursor ahead")
	// ErrClosed is returned by every method of a closed DB.
	ErrClosed = errors.New("storage: closed")
	// ErrNoSpace is wrapped by Apply's error when the state file had no room
	// for the transaction: the filesystem is full (ENOSPC, EDQUOT on a
	// write) or the file reached Options.MaxSize. The transaction was rolled
	// back before anything was synced, so nothing was applied, and the same
	// entries may be applied again once there is room. It is not a domain
	// error: no *Error carries it.
	ErrNoSpace = errors.New("storage: no room in the state file")
)

// Error is a domain error: a kind (one of the sentinels above) and a
// client-safe message.
type Error struct {
	Kind error
	Msg  string
}

// Error returns the client-safe message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the kind, so errors.Is(err, ErrNotFound) works.
func (e *Error) Unwrap() error { return e.Kind }

func domainErr(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func channelNotFound(id string) *Error {
	return domainErr(ErrNotFound, "channel %q not found", id)
}

func messageNotFound(id string, seq uint64) *Error {
	return domainErr(ErrNotFound, "message %d not found in channel %q", seq, id)
}
