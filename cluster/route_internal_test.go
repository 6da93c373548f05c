package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// scripted is a cluster as route sees it: candidates in order, and for
// each node the answers its attempts get, one per attempt (the last one
// repeats).
type scripted struct {
	candidates []string
	answers    map[string][]error
	tries      []string // "node" or "node relay", in order
}

func (s *scripted) target() routeTarget {
	return routeTarget{
		next: func(skip map[string]bool) string {
			for _, c := range s.candidates {
				if !skip[c] {
					return c
				}
			}
			return ""
		},
		hint:   func(string) {},
		closed: func() bool { return false },
	}
}

func (s *scripted) try(target string, relay bool) error {
	name := target
	if relay {
		name += " relay"
	}
	s.tries = append(s.tries, name)
	a := s.answers[name]
	if len(a) == 0 {
		return fmt.Errorf("%w: no script for %s", ErrNotApplied, name)
	}
	err := a[0]
	if len(a) > 1 {
		s.answers[name] = a[1:]
	}
	return err
}

func notLeader(leader string) error { return &partition.NotLeaderError{LeaderID: leader} }

var (
	errMaybe      = fmt.Errorf("%w: leadership lost while committing log", ErrIndeterminate)
	errNotApplied = fmt.Errorf("%w: partition is busy", ErrNotApplied)
	errDown       = fmt.Errorf("%w: %w: dial tcp: connection refused", ErrNotApplied, errPeerUnreachable)
)

// TestRouteOutcome drives route through scripted attempts and checks what
// the request's result says. The first row is the defect: an attempt that
// came back indeterminate, followed by attempts that were not applied
// until the deadline, was answered as not applied, although the first
// attempt may still commit; a client trusting that would post again
// without the same client_msg_id and store the message twice.
func TestRouteOutcome(t *testing.T) {
	domain := &storage.Error{Kind: storage.ErrNotFound, Msg: `channel "x" not found`}
	for _, tc := range []struct {
		name        string
		policy      retry
		answers     map[string][]error
		wantIs      []error // the result wraps each
		wantNot     []error // and none of these
		wantTries   []string
		deadlineHit bool
	}{{
		name:   "indeterminate then not applied until the deadline",
		policy: retryWrite,
		answers: map[string][]error{"n1": {errMaybe, notLeader("")}, "n2": {notLeader("")},
			"n3": {errNotApplied}},
		wantIs:      []error{ErrIndeterminate, context.DeadlineExceeded},
		deadlineHit: true,
	}, {
		name:        "only not applied until the deadline",
		policy:      retryWrite,
		answers:     map[string][]error{"n1": {notLeader("")}, "n2": {errNotApplied}, "n3": {errDown}},
		wantIs:      []error{ErrNotApplied, context.DeadlineExceeded},
		wantNot:     []error{ErrIndeterminate},
		deadlineHit: true,
	}, {
		name:      "indeterminate without a client_msg_id ends the request",
		policy:    retryNone,
		answers:   map[string][]error{"n1": {errMaybe}},
		wantIs:    []error{ErrIndeterminate},
		wantTries: []string{"n1"},
	}, {
		name:      "a retry that succeeds is a success",
		policy:    retryWrite,
		answers:   map[string][]error{"n1": {errMaybe}, "n2": {nil}},
		wantTries: []string{"n1", "n2"},
	}, {
		name:        "a read is never indeterminate",
		policy:      retryRead,
		answers:     map[string][]error{"n1": {errMaybe}, "n2": {notLeader("")}, "n3": {notLeader("")}},
		wantIs:      []error{context.DeadlineExceeded},
		wantNot:     []error{ErrIndeterminate},
		deadlineHit: true,
	}, {
		name:      "a domain error ends the request as it is",
		policy:    retryWrite,
		answers:   map[string][]error{"n1": {domain}},
		wantIs:    []error{storage.ErrNotFound},
		wantNot:   []error{ErrIndeterminate},
		wantTries: []string{"n1"},
	}, {
		name:      "the leader named is followed",
		policy:    retryNone,
		answers:   map[string][]error{"n1": {notLeader("n3")}, "n3": {nil}},
		wantTries: []string{"n1", "n3"},
	}, {
		name:   "an unreachable leader is reached through a node that names it",
		policy: retryNone,
		answers: map[string][]error{"n1": {errDown}, "n2": {notLeader("n1")},
			"n2 relay": {nil}},
		wantTries: []string{"n1", "n2", "n2 relay"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{candidates: []string{"n1", "n2", "n3"}, answers: tc.answers}
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			err := route(ctx, tc.policy, s.target(), s.try)
			for _, want := range tc.wantIs {
				if !errors.Is(err, want) {
					t.Errorf("route: got %v, want it to be %v (attempts %v)", err, want, s.tries)
				}
			}
			for _, not := range tc.wantNot {
				if errors.Is(err, not) {
					t.Errorf("route: got %v, want it not to be %v (attempts %v)", err, not, s.tries)
				}
			}
			if len(tc.wantIs) == 0 && err != nil {
				t.Errorf("route: got %v, want success (attempts %v)", err, s.tries)
			}
			if tc.wantTries != nil && !slices.Equal(s.tries, tc.wantTries) {
				t.Errorf("attempts: got %v, want %v", s.tries, tc.wantTries)
			}
			if tc.deadlineHit && ctx.Err() == nil {
				t.Errorf("route returned %v before the deadline", err)
			}
		})
	}
}
