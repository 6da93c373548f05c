package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Key labels: each use of the cluster secret gets its own derived key.
const (
	labelNodeAuth = "herald node-to-node v1"
)

// DeriveKey derives the key for one use (label) from the cluster secret:
// HMAC-SHA256(secret, label).
func DeriveKey(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// NodeAuthHeader carries a node's proof of the cluster key on internal RPCs.
const NodeAuthHeader = "Herald-Node-Auth"

// errNodeAuth is the handshake failure both sides see.
var errNodeAuth = errors.New("cluster: node-to-node authentication failed")

// nodeAuth authenticates node-to-node traffic with a key derived from the
// cluster secret. A nil *nodeAuth (no secret: --insecure) lets everything
// through.
type nodeAuth struct {
	key   []byte
	token string // hex HMAC(key, "rpc"): the internal RPC bearer
}

func newNodeAuth(secret []byte) *nodeAuth {
	if len(secret) == 0 {
		return nil
	}
	key := DeriveKey(secret, labelNodeAuth)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("rpc"))
	return &nodeAuth{key: key, token: hex.EncodeToString(m.Sum(nil))}
}

// handshake is the Raft transport's challenge-response: the accepting side
// sends a random nonce, the dialing side answers HMAC(key, nonce). The
// transport runs it under its handshake deadline.
func (a *nodeAuth) handshake(conn net.Conn, dialing bool) error {
	if a == nil {
		return nil
	}
	nonce := make([]byte, 32)
	if dialing {
		if _, err := io.ReadFull(conn, nonce); err != nil {
			return fmt.Errorf("%w: read challenge: %v", errNodeAuth, err)
		}
		_, err := conn.Write(a.mac(nonce))
		return err
	}
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if _, err := conn.Write(nonce); err != nil {
		return err
	}
	answer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(conn, answer); err != nil {
		return fmt.Errorf("%w: read answer: %v", errNodeAuth, err)
	}
	if !hmac.Equal(answer, a.mac(nonce)) {
		return errNodeAuth
	}
	return nil
}

func (a *nodeAuth) mac(b []byte) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write(b)
	return m.Sum(nil)
}

// authorize checks an internal RPC's header.
func (a *nodeAuth) authorize(h http.Header) bool {
	if a == nil {
		return true
	}
	return hmac.Equal([]byte(h.Get(NodeAuthHeader)), []byte(a.token))
}

// set adds the proof to an outgoing internal RPC.
func (a *nodeAuth) set(h http.Header) {
	if a != nil {
		h.Set(NodeAuthHeader, a.token)
	}
}
