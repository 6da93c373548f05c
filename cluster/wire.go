package cluster

import (
	"errors"

	"connectrpc.com/connect"

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
	{storage.ErrCursorAhead, clusterv1.DomainError_KIND_CURSOR_AHEAD},
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

// withDomainDetail returns a Connect error with code and err's text,
// carrying err as a DomainError detail when it is a *storage.Error, so
// that the peer gets the exact kind back (domainErrorDetail).
func withDomainDetail(code connect.Code, err error) *connect.Error {
	ce := connect.NewError(code, errors.New(err.Error()))
	if w, ok := toWire(err); ok {
		if d, derr := connect.NewErrorDetail(w); derr == nil {
			ce.AddDetail(d)
		}
	}
	return ce
}

// domainErrorDetail returns the *storage.Error that a Connect error
// carries as a DomainError detail, or nil.
func domainErrorDetail(err error) error {
	ce, ok := errors.AsType[*connect.Error](err)
	if !ok {
		return nil
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if w, ok := v.(*clusterv1.DomainError); derr == nil && ok {
			return domainError(w)
		}
	}
	return nil
}

func resultToWire(r *storage.Result) *clusterv1.CommandResult {
	return &clusterv1.CommandResult{Channel: r.Channel, Message: r.Message, Duplicate: r.Duplicate}
}

func resultFromWire(w *clusterv1.CommandResult) *storage.Result {
	return &storage.Result{Channel: w.GetChannel(), Message: w.GetMessage(), Duplicate: w.GetDuplicate()}
}
