package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// Key labels: each use of the cluster secret gets its own derived key.
const (
	labelNodeAuth = "herald node-to-node v1" // the Raft transport's handshake
	labelRPCAuth  = "herald internal rpc v2" // internal RPC credentials
)

// DeriveKey derives the key for one use (label) from the cluster secret:
// HMAC-SHA256(secret, label).
func DeriveKey(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// NodeAuthHeader carries a node's credential on internal RPCs (see
// nodeAuth.sign).
const NodeAuthHeader = "Herald-Node-Auth"

// errNodeAuth is the handshake failure both sides see.
var errNodeAuth = errors.New("cluster: node-to-node authentication failed")

// nodeAuth authenticates node-to-node traffic with a key derived from the
// cluster secret. A nil *nodeAuth (no secret: --insecure) lets everything
// through.
type nodeAuth struct {
	key    []byte   // the Raft handshake's
	rpcKey []byte   // internal RPC credentials'
	seen   nonceSet // nonces of the RPC credentials accepted lately
	// skew moves the clock credentials are checked against (tests only).
	skew   atomic.Int64
	warned atomic.Int64 // when a refusal was last logged, Unix ns
}

func newNodeAuth(secret []byte) *nodeAuth {
	if len(secret) == 0 {
		return nil
	}
	return &nodeAuth{key: DeriveKey(secret, labelNodeAuth), rpcKey: DeriveKey(secret, labelRPCAuth),
		seen: nonceSet{span: rpcNonceMemory}}
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
