// Package future waits on hashicorp/raft futures under a context.
// hashicorp/raft's own timeouts bound only the enqueueing of a request, so
// every wrapper of a Raft group (partition, meta, cluster) waits here.
package future

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// Wait blocks until f resolves or ctx ends, returning f's error or ctx's.
// The helper goroutine exits when raft resolves the future, which it does
// at the latest when the Raft instance shuts down.
func Wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// EnqueueTimeout is the timeout to give raft for enqueueing a request:
// what is left of ctx's deadline, or 10 s without one.
func EnqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 10 * time.Second
}
