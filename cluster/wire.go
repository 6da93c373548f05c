package cluster

import (
	"errors"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/storage"
)

var kinds = []struct {
	kind error
	wire clusterv1.DomainError_Kind
}{
	{storage.ErrInvalidArgument, clusterv1.DomainError_KIND_INVALID_ARGUMENT},
	{storage.ErrNotFound, clusterv1.DomainError_KIND_NOT_FOUND},
	{storage.ErrAlreadyExists, clusterv1.DomainError_KIND_ALREADY_EXISTS},
	{storage.ErrPermissionDenied, clusterv1.DomainError_KIND_PERMISSION_DENIED},
	{storage.ErrFailedPrecondition, clusterv1.DomainError_KIND_FAILED_PRECONDITION},
	{storage.ErrResourceExhausted, clusterv1.DomainError_KIND_RESOURCE_EXHAUSTED},
	{storage.ErrCursorExpired, clusterv1.DomainError_KIND_CURSOR_EXPIRED},
}

// toWire returns err as a DomainError if it is a *storage.Error.
func toWire(err error) (*clusterv1.DomainError, bool) {
	de, ok := errors.AsType[*storage.Error](err)
	if !ok {
		return nil, false
	}
	for _, k := range kinds {
		if errors.Is(de.Kind, k.kind) {
			return &clusterv1.DomainError{Kind: k.wire, Message: de.Msg}, true
		}
	}
	return &clusterv1.DomainError{Message: de.Msg}, true
}

// domainError turns a DomainError back into a *storage.Error.
func domainError(w *clusterv1.DomainError) error {
	for _, k := range kinds {
		if w.GetKind() == k.wire {
			return &storage.Error{Kind: k.kind, Msg: w.GetMessage()}
		}
	}
	return &storage.Error{Kind: storage.ErrInvalidArgument, Msg: w.GetMessage()}
}

func resultToWire(r *storage.Result) *clusterv1.CommandResult {
	return &clusterv1.CommandResult{Channel: r.Channel, Message: r.Message, Duplicate: r.Duplicate}
}

func resultFromWire(w *clusterv1.CommandResult) *storage.Result {
	return &storage.Result{Channel: w.GetChannel(), Message: w.GetMessage(), Duplicate: w.GetDuplicate()}
}
