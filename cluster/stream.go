package cluster

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// Stream is one channel's events in seq order with no gap or duplicate.
// One goroutine calls Next; Close may be called from any goroutine.
type Stream interface {
	// Next returns the next events, at most max, waiting until there is at
	// least one or ctx ends.
	Next(ctx context.Context, max int) ([]*heraldv1.Event, error)
	// Close ends the stream; it is idempotent.
	Close()
}

// errorMessage is a Connect error's message without its code.
func errorMessage(err error) string {
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		return ce.Message()
	}
	return err.Error()
}
