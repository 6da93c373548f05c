package gateway

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// OutcomeHeader tells a client whether a failed write may have applied.
const OutcomeHeader = "Herald-Outcome"

// Values of OutcomeHeader.
const (
	OutcomeNotApplied    = "not-applied"
	OutcomeIndeterminate = "indeterminate"
)

var kindCodes = []struct {
	kind error
	code connect.Code
}{
	{storage.ErrInvalidArgument, connect.CodeInvalidArgument},
	{storage.ErrNotFound, connect.CodeNotFound},
	{storage.ErrAlreadyExists, connect.CodeAlreadyExists},
	{storage.ErrPermissionDenied, connect.CodePermissionDenied},
	{storage.ErrFailedPrecondition, connect.CodeFailedPrecondition},
	{storage.ErrResourceExhausted, connect.CodeResourceExhausted},
	{storage.ErrCursorExpired, connect.CodeOutOfRange},
	{storage.ErrCursorAhead, connect.CodeOutOfRange},
}

// connectError is the one mapping from internal errors to Connect errors
// (DESIGN.md "Errors"). Domain errors keep their client-safe text; anything
// unexpected is logged and answered as internal without detail.
func connectError(log *slog.Logger, err error) *connect.Error {
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		return ce
	}
	if de, ok := errors.AsType[*storage.Error](err); ok {
		for _, kc := range kindCodes {
			if errors.Is(de, kc.kind) {
				return connect.NewError(kc.code, errors.New(de.Msg))
			}
		}
	}
	if nse, ok := errors.AsType[*cluster.NoSpaceError](err); ok {
		// Its reason names the node and the limit and says what to do.
		ce := connect.NewError(connect.CodeResourceExhausted, errors.New(nse.Reason))
		ce.Meta().Set(OutcomeHeader, OutcomeNotApplied)
		return ce
	}
	switch {
	case errors.Is(err, cluster.ErrIndeterminate):
		code := connect.CodeUnknown
		if errors.Is(err, context.DeadlineExceeded) {
			code = connect.CodeDeadlineExceeded
		}
		ce := connect.NewError(code, errors.New(
			"the write may or may not have been applied; retry with the same client_msg_id"))
		ce.Meta().Set(OutcomeHeader, OutcomeIndeterminate)
		return ce
	case errors.Is(err, cluster.ErrNoMetaLeader):
		ce := connect.NewError(connect.CodeUnavailable, errors.New(
			"the cluster's metadata group has no leader right now; nothing was applied, retry"))
		ce.Meta().Set(OutcomeHeader, OutcomeNotApplied)
		return ce
	case errors.Is(err, cluster.ErrNotApplied), errors.Is(err, cluster.ErrNoLeader):
		ce := connect.NewError(connect.CodeUnavailable, errors.New(
			"the channel's partition has no leader right now; nothing was applied, retry"))
		ce.Meta().Set(OutcomeHeader, OutcomeNotApplied)
		return ce
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, storage.ErrNoSpace):
		// A read of a replica whose state file has no room for entries it
		// applied (storage/DESIGN.md "Commits held across batches").
		return connect.NewError(connect.CodeUnavailable, errors.New(
			"the replica's state file is out of disk space and lacks entries it applied; "+
				"free space on the node, retry, or read with stale (which serves what it stored)"))
	case errors.Is(err, partition.ErrTooStale):
		return connect.NewError(connect.CodeUnavailable, errors.New(
			"the replica has not heard from its partition's leader recently enough for a stale read; retry"))
	case errors.Is(err, cluster.ErrClosed), errors.Is(err, partition.ErrClosed), errors.Is(err, storage.ErrClosed),
		errors.Is(err, errShuttingDown):
		ce := connect.NewError(connect.CodeUnavailable, errors.New("node is shutting down"))
		ce.Meta().Set(OutcomeHeader, OutcomeNotApplied)
		return ce
	}
	log.Error("internal error", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// invalid returns an invalid_argument error for the gateway's own checks.
func invalid(msg string) *connect.Error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
}
