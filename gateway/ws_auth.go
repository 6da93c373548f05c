package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// upgradeIdentity authenticates a WebSocket upgrade that carries an
// Authorization header, and counts the connection towards its user's
// limit. It returns nil (and true) when the connection must authenticate
// with its first frame instead, and false when it answered the request
// with an error. An Authorization header that is not a valid bearer token
// is refused like a bad token, not taken for a missing one.
func (w *wsServer) upgradeIdentity(rw http.ResponseWriter, r *http.Request) (*Identity, bool) {
	if r.Header.Get("Authorization") == "" && w.s.cfg.Auth != nil {
		return nil, true
	}
	id, err := w.s.authenticate(r.Header)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusUnauthorized)
		return nil, false
	}
	if err := w.s.conns.acquire(id.User); err != nil {
		// The status is all a browser's WebSocket sees; other clients get
		// a Connect error body (JSON) and Retry-After-Ms as well.
		_ = connect.NewErrorWriter().Write(rw, r, err) // best effort: the upgrade is refused either way
		return nil, false
	}
	return &id, true
}

// errFirstFrame refuses a connection whose first frame is not auth.
var errFirstFrame = errors.New("the first frame must be auth: {\"auth\":{\"token\":\"TOKEN\"}}")

// authenticate handles the first frame of a connection that came without
// an Authorization header: it must be auth, with a valid token.
func (k *wsConn) authenticate(f *heraldv1.ClientFrame) {
	a := f.GetAuth()
	if a == nil {
		k.fail(f.GetId(), connect.NewError(connect.CodeUnauthenticated, errFirstFrame))
		return
	}
	id, err := k.w.s.cfg.Auth.Verify(a.GetToken())
	if err != nil {
		k.w.s.log.Debug("websocket token refused", "err", err) // never the token itself
		k.fail(f.GetId(), connect.NewError(connect.CodeUnauthenticated, errUnauthenticated))
		return
	}
	if err := k.w.s.conns.acquire(id.User); err != nil {
		k.fail(f.GetId(), connectError(k.w.s.log, err))
		return
	}
	k.id, k.counted = id, true
	k.authed.Store(true)
	k.hello(f.GetId())
}

// reauthenticate takes a fresh token for the same user, extending the
// connection past the old token's expiry.
func (k *wsConn) reauthenticate(replyTo, token string) {
	if k.w.s.cfg.Auth == nil {
		return // authentication is off: nothing to refresh
	}
	id, err := k.w.s.cfg.Auth.Verify(token)
	switch {
	case err != nil:
		k.sendError(replyTo, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated))
		return
	case id.User != k.id.User:
		k.sendError(replyTo, invalid(fmt.Sprintf(
			"auth: the token is for %q but the connection is %q; open a new connection", id.User, k.id.User)))
		return
	}
	k.id.Expires = id.Expires
	k.armExpiry()
	k.hello(replyTo)
}

// hello sends the hello frame and arms the token's expiry.
func (k *wsConn) hello(replyTo string) {
	k.send(&heraldv1.ServerFrame{ReplyTo: replyTo, Kind: &heraldv1.ServerFrame_Hello{Hello: &heraldv1.Hello{
		User: k.id.User, ServerVersion: k.w.s.cfg.Version,
		HeartbeatIntervalMs: uint32(k.w.s.cfg.PingInterval / time.Millisecond)}}})
	k.armExpiry()
}

// armExpiry closes the connection when its token expires.
func (k *wsConn) armExpiry() {
	if k.id.Expires.IsZero() {
		return
	}
	k.arm(time.Until(k.id.Expires), func() {
		k.fail("", connect.NewError(connect.CodeUnauthenticated, errors.New(
			"token expired; reconnect (or send a fresh auth frame before expiry)")))
	})
}

// arm replaces the connection's timer.
func (k *wsConn) arm(d time.Duration, f func()) {
	if old := k.timer.Swap(time.AfterFunc(d, f)); old != nil {
		old.Stop()
	}
}

// fail sends an error and closes the connection once it is written.
func (k *wsConn) fail(replyTo string, ce *connect.Error) {
	k.sendError(replyTo, ce)
	k.c.Async(func() { _ = k.c.WriteClose(1008, []byte(ce.Code().String())) })
}

// errorText is a Connect error's message without its code prefix.
func errorText(err error) string {
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		return ce.Message()
	}
	return err.Error()
}
