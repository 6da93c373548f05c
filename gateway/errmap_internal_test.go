package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// TestConnectErrorMapping checks the one mapping from internal errors to
// Connect errors (DESIGN.md "Errors"): codes, the Herald-Outcome header,
// and messages that say what happened without internal detail.
func TestConnectErrorMapping(t *testing.T) {
	domain := func(kind error, msg string) error { return &storage.Error{Kind: kind, Msg: msg} }
	// How the partition and the router wrap their outcomes.
	notLeader := &partition.NotLeaderError{Partition: 3, LeaderID: "n2", LeaderAddr: "10.0.0.2:7800"}
	cases := []struct {
		name    string
		err     error
		code    connect.Code
		outcome string   // Herald-Outcome, "" for none
		msg     string   // the message must contain this
		hidden  []string // and must not contain these
	}{
		{"invalid argument", domain(storage.ErrInvalidArgument, "text: must not be empty"),
			connect.CodeInvalidArgument, "", "text: must not be empty", nil},
		{"not found", domain(storage.ErrNotFound, `channel "x" not found`),
			connect.CodeNotFound, "", `channel "x" not found`, nil},
		{"already exists", domain(storage.ErrAlreadyExists, `channel "x" already exists`),
			connect.CodeAlreadyExists, "", "already exists", nil},
		{"permission denied", domain(storage.ErrPermissionDenied, "only the author can edit message 3"),
			connect.CodePermissionDenied, "", "only the author", nil},
		{"failed precondition", domain(storage.ErrFailedPrecondition, `channel "x" is archived`),
			connect.CodeFailedPrecondition, "", "archived", nil},
		{"resource exhausted", domain(storage.ErrResourceExhausted, "message 3 already has the maximum of 50 distinct reactions"),
			connect.CodeResourceExhausted, "", "maximum of 50", nil},
		{"cursor expired", domain(storage.ErrCursorExpired, "events after 3 are no longer retained"),
			connect.CodeOutOfRange, "", "no longer retained", nil},
		{"cursor ahead", domain(storage.ErrCursorAhead, `channel "x" now ends at seq 5; subscribe again from the channel's head`),
			connect.CodeOutOfRange, "", "subscribe again", nil},
		{"wrapped domain error keeps only its own text",
			fmt.Errorf("partition 3: apply index 77: %w", domain(storage.ErrNotFound, "message 9 not found")),
			connect.CodeNotFound, "", "message 9 not found", []string{"partition 3", "index 77"}},
		{"connect error passes through", connect.NewError(connect.CodeAborted, errors.New("try again")),
			connect.CodeAborted, "", "try again", nil},

		{"indeterminate: leadership lost",
			fmt.Errorf("%w: partition 3: %w", cluster.ErrIndeterminate, errors.New("leadership lost while committing log")),
			connect.CodeUnknown, OutcomeIndeterminate, "client_msg_id", []string{"partition 3", "leadership lost"}},
		{"indeterminate: deadline after propose",
			fmt.Errorf("%w: %w", cluster.ErrIndeterminate, context.DeadlineExceeded),
			connect.CodeDeadlineExceeded, OutcomeIndeterminate, "retry with the same client_msg_id", nil},
		{"indeterminate: caller canceled after propose",
			fmt.Errorf("%w: %w", cluster.ErrIndeterminate, context.Canceled),
			connect.CodeUnknown, OutcomeIndeterminate, "client_msg_id", nil},
		{"not applied: busy",
			fmt.Errorf("%w: partition 3 is busy", cluster.ErrNotApplied),
			connect.CodeUnavailable, OutcomeNotApplied, "nothing was applied", []string{"partition 3"}},
		{"not applied: deadline before dispatch",
			fmt.Errorf("%w: %w", cluster.ErrNotApplied, context.DeadlineExceeded),
			connect.CodeUnavailable, OutcomeNotApplied, "nothing was applied", nil},
		{"no leader within the deadline",
			fmt.Errorf("%w: %w", notLeader, context.DeadlineExceeded),
			connect.CodeUnavailable, OutcomeNotApplied, "nothing was applied", []string{"10.0.0.2", "n2"}},
		{"no metadata leader within the deadline",
			fmt.Errorf("%w: %w: %w", cluster.ErrNoLeader, cluster.ErrNoMetaLeader, context.DeadlineExceeded),
			connect.CodeUnavailable, OutcomeNotApplied, "metadata group has no leader", []string{"partition"}},
		{"out of space: the reason is the message",
			fmt.Errorf("%w: %w", &cluster.NoSpaceError{Partition: 3, Reason: "partition 3 refuses writes: node n2 has 10 MiB free on its data disk, below its reserve of 1 GiB"}, context.DeadlineExceeded),
			connect.CodeResourceExhausted, OutcomeNotApplied, "node n2 has 10 MiB free on its data disk, below its reserve of 1 GiB", []string{"deadline"}},
		{"node closed", fmt.Errorf("route: %w", cluster.ErrClosed),
			connect.CodeUnavailable, OutcomeNotApplied, "shutting down", nil},
		{"replica closed", fmt.Errorf("read: %w", partition.ErrClosed),
			connect.CodeUnavailable, OutcomeNotApplied, "shutting down", nil},
		{"state file closed", fmt.Errorf("read: %w", storage.ErrClosed),
			connect.CodeUnavailable, OutcomeNotApplied, "shutting down", nil},
		{"stale read refused",
			fmt.Errorf("%w: partition 3 last heard from a leader 5s ago", partition.ErrTooStale),
			connect.CodeUnavailable, "", "retry", []string{"partition 3"}},
		{"state file out of room",
			fmt.Errorf("%w: /var/lib/herald/partitions/003/state.db: %w", storage.ErrNoSpace, errors.New("no space left on device")),
			connect.CodeUnavailable, "", "free space", []string{"/var/lib", "state.db"}},
		{"read deadline", context.DeadlineExceeded, connect.CodeDeadlineExceeded, "", "deadline exceeded", nil},
		{"read canceled", fmt.Errorf("barrier: %w", context.Canceled), connect.CodeCanceled, "", "canceled", []string{"barrier"}},

		{"unexpected error",
			fmt.Errorf("decode message 4 of %q: %w", "general", errors.New("proto: cannot parse invalid wire-format data")),
			connect.CodeInternal, "", "internal error", []string{"decode", "proto", "general", "wire-format"}},
		{"unexpected error wrapping a path",
			fmt.Errorf("open channel db %q: %w", "/var/lib/herald/partitions/003/state.db", errors.New("permission denied")),
			connect.CodeInternal, "", "internal error", []string{"/var/lib", "state.db", "permission"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ce := connectError(log, tc.err)
			if ce == nil {
				t.Fatalf("connectError(%v): got nil, want %v", tc.err, tc.code)
			}
			if ce.Code() != tc.code {
				t.Errorf("connectError(%v): code got %v, want %v", tc.err, ce.Code(), tc.code)
			}
			if got := ce.Meta().Get(OutcomeHeader); got != tc.outcome {
				t.Errorf("connectError(%v): %s got %q, want %q", tc.err, OutcomeHeader, got, tc.outcome)
			}
			if !strings.Contains(ce.Message(), tc.msg) {
				t.Errorf("connectError(%v): message got %q, want it to contain %q", tc.err, ce.Message(), tc.msg)
			}
			for _, h := range tc.hidden {
				if strings.Contains(ce.Message(), h) {
					t.Errorf("connectError(%v): message %q leaks %q", tc.err, ce.Message(), h)
				}
			}
			// Only the unexpected are logged as errors, with their detail
			// for the operator.
			logged := strings.Contains(logs.String(), "level=ERROR")
			if want := tc.code == connect.CodeInternal; logged != want {
				t.Errorf("connectError(%v): logged an error: got %v, want %v (log %q)", tc.err, logged, want, logs.String())
			}
			if tc.code == connect.CodeInternal && !strings.Contains(logs.String(), tc.hidden[0]) {
				t.Errorf("connectError(%v): log %q lacks the detail %q", tc.err, logs.String(), tc.hidden[0])
			}
		})
	}
	if ce := connectError(slog.New(slog.DiscardHandler), nil); ce != nil {
		t.Errorf("connectError(nil): got %v, want nil", ce)
	}
}
