package clustertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/storage"
)

// WriteTimeout bounds Write's retries of one command.
const WriteTimeout = 30 * time.Second

// Retryable reports whether a write failed in a way that a client
// retries: it did not apply (not applied, no leader, node closed), or may
// have (indeterminate). A post retried with the same client_msg_id gets
// the first acknowledgement back; a create that had applied gets
// already_exists, which Write then counts as done.
func Retryable(err error) bool {
	return errors.Is(err, cluster.ErrNotApplied) || errors.Is(err, cluster.ErrNoLeader) ||
		errors.Is(err, cluster.ErrIndeterminate) || errors.Is(err, cluster.ErrClosed)
}

// Write applies cmd through n as a client that retries would: a
// retryable failure (a leader lost to a loaded machine, an election) is
// tried again, for WriteTimeout at most. A post needs a client_msg_id for
// its retry to be safe. A create answered already_exists after an attempt
// that may have applied did apply; its result is then empty.
func Write(ctx context.Context, n *cluster.Node, cmd *clusterv1.Command) (*storage.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, WriteTimeout)
	defer cancel()
	mayHaveApplied := false
	for {
		res, err := n.Apply(ctx, cmd)
		switch {
		case err == nil:
			return res, nil
		case mayHaveApplied && cmd.GetCreateChannel() != nil && errors.Is(err, storage.ErrAlreadyExists):
			return &storage.Result{}, nil
		case !Retryable(err):
			return nil, err
		}
		mayHaveApplied = mayHaveApplied || errors.Is(err, cluster.ErrIndeterminate)
		backoff := time.NewTimer(20 * time.Millisecond) // a client's retry backoff
		select {
		case <-ctx.Done():
			backoff.Stop()
			return nil, fmt.Errorf("not applied within %v; last error: %w", WriteTimeout, err)
		case <-backoff.C:
		}
	}
}

// MustCreate creates channel through n with Write, failing t if it cannot.
func MustCreate(t testing.TB, n *cluster.Node, channel string) {
	t.Helper()
	if _, err := Write(t.Context(), n, Create(channel)); err != nil {
		t.Fatalf("create %s via %s: %v", channel, n.ID(), err)
	}
}

// MustPost posts text to channel through n with client_msg_id id with
// Write, failing t if it cannot, and returns the acknowledged seq.
func MustPost(t testing.TB, n *cluster.Node, channel, text, id string) uint64 {
	t.Helper()
	res, err := Write(t.Context(), n, Post(channel, text, id))
	if err != nil {
		t.Fatalf("post %s to %s via %s: %v", id, channel, n.ID(), err)
	}
	return res.Message.GetSeq()
}
