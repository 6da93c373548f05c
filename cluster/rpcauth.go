package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
)

// Internal RPC credentials. Every ClusterService call carries, in
// NodeAuthHeader, a credential made for that one call:
//
//	v2.FROM.TO.MILLIS.NONCE.MAC
//
// FROM and TO are the sending and receiving node ids, NONCE 16 random
// bytes (all three base64url without padding), MILLIS the sender's clock
// in Unix milliseconds, and MAC (base64url) HMAC-SHA256 under a key of its
// own derived from the cluster secret (labelRPCAuth) over the version, the
// two ids, the procedure, the time, the nonce and, for a unary call, the
// SHA-256 of the request message (deterministic protobuf encoding). A
// streaming call's credential covers everything but its messages.
//
// The receiver accepts a credential once: its MAC must verify, TO must be
// the receiver (or empty, for Hello and Join, which go to addresses before
// their node is known), MILLIS within rpcClockWindow of its own clock,
// and the nonce unseen. So a captured call cannot be sent again, to the
// same node or another, nor its credential put on another request.
const (
	rpcCredVersion = "v2"
	rpcNonceSize   = 16

	// rpcClockWindow is how far a credential's time may be from the
	// receiver's clock, either way: node clocks must agree within it.
	rpcClockWindow = 30 * time.Second
	// rpcNonceMemory is how long a receiver remembers a nonce at least: a
	// credential accepted at t carries a time before t+window, so it
	// passes the window check until t+2×window; a second more covers the
	// rounding to milliseconds.
	rpcNonceMemory = 2*rpcClockWindow + time.Second
)

// Refusals of internal RPC credentials. They say what is wrong and
// nothing about the key.
var (
	errUnauthenticated = connect.NewError(connect.CodeUnauthenticated,
		errors.New("internal RPC without a valid cluster key"))
	errRPCOtherNode = connect.NewError(connect.CodeUnauthenticated,
		errors.New("internal RPC credential made out to another node"))
	errRPCExpired = connect.NewError(connect.CodeUnauthenticated,
		fmt.Errorf("internal RPC credential expired: its time is more than %v from this node's clock (node clocks must agree within %v)",
			rpcClockWindow, rpcClockWindow))
	errRPCReplayed = connect.NewError(connect.CodeUnauthenticated,
		errors.New("internal RPC credential replayed: each is good for one call"))
)

var b64 = base64.RawURLEncoding

// rpcCred is what one credential vouches for.
type rpcCred struct {
	from, to  string
	procedure string
	millis    int64
	nonce     [rpcNonceSize]byte
	digest    []byte // SHA-256 of a unary call's request; nil for a stream
}

// mac is the credential's MAC under key. Every field is length-prefixed
// or of fixed size, so no two credentials share an input.
func (c *rpcCred) mac(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	var b []byte
	b = append(b, rpcCredVersion...)
	for _, s := range []string{c.from, c.to, c.procedure} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(c.millis))
	b = append(b, c.nonce[:]...)
	if c.digest != nil {
		b = append(b, 'u')
		b = append(b, c.digest...)
	} else {
		b = append(b, 's')
	}
	m.Write(b)
	return m.Sum(nil)
}

// requestDigest is the SHA-256 of a unary request's deterministic
// encoding, as both ends compute it.
func requestDigest(msg any) ([]byte, error) {
	pm, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("internal RPC request is a %T, not a protobuf message", msg)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pm)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return sum[:], nil
}

// sign puts a fresh credential for one call of procedure from node from to
// node to ("" if unknown) in h. digest is requestDigest of a unary call's
// request, nil for a stream.
func (a *nodeAuth) sign(h http.Header, from, to, procedure string, digest []byte) {
	if a == nil {
		return
	}
	c := rpcCred{from: from, to: to, procedure: procedure, millis: time.Now().UnixMilli(), digest: digest}
	_, _ = rand.Read(c.nonce[:]) // never fails (crypto/rand)
	h.Set(NodeAuthHeader, strings.Join([]string{rpcCredVersion, b64.EncodeToString([]byte(from)),
		b64.EncodeToString([]byte(to)), strconv.FormatInt(c.millis, 10),
		b64.EncodeToString(c.nonce[:]), b64.EncodeToString(c.mac(a.rpcKey))}, "."))
}

// verify checks the credential in h for one call of procedure received by
// node self, and uses it up. digest is requestDigest of a unary call's
// request, nil for a stream. It returns nil or one of the refusals above.
func (a *nodeAuth) verify(h http.Header, self, procedure string, digest []byte) error {
	if a == nil {
		return nil
	}
	c, mac, ok := parseCred(h.Get(NodeAuthHeader))
	if !ok {
		return errUnauthenticated
	}
	c.procedure, c.digest = procedure, digest
	if !hmac.Equal(mac, c.mac(a.rpcKey)) {
		return errUnauthenticated
	}
	if c.to != self && (c.to != "" || procedure != clusterv1connect.ClusterServiceHelloProcedure &&
		procedure != clusterv1connect.ClusterServiceJoinProcedure) {
		return errRPCOtherNode
	}
	now := a.now()
	if d := time.Duration(now.UnixMilli()-c.millis) * time.Millisecond; d > rpcClockWindow || d < -rpcClockWindow {
		return errRPCExpired
	}
	if !a.seen.add(now, binary.LittleEndian.Uint64(c.nonce[:8])) {
		return errRPCReplayed
	}
	return nil
}

// parseCred splits a credential header into its fields and MAC.
func parseCred(v string) (c rpcCred, mac []byte, ok bool) {
	f := strings.Split(v, ".")
	if len(f) != 6 || f[0] != rpcCredVersion {
		return c, nil, false
	}
	from, err1 := b64.DecodeString(f[1])
	to, err2 := b64.DecodeString(f[2])
	millis, err3 := strconv.ParseInt(f[3], 10, 64)
	nonce, err4 := b64.DecodeString(f[4])
	mac, err5 := b64.DecodeString(f[5])
	if errors.Join(err1, err2, err3, err4, err5) != nil || len(nonce) != rpcNonceSize || len(mac) != sha256.Size {
		return c, nil, false
	}
	c.from, c.to, c.millis = string(from), string(to), millis
	copy(c.nonce[:], nonce)
	return c, mac, true
}

// now is this node's clock as it checks credentials: the test hook skew
// moves it.
func (a *nodeAuth) now() time.Time {
	return time.Now().Add(time.Duration(a.skew.Load()))
}

// warnNow reports whether a refusal may be logged now: once a window.
func (a *nodeAuth) warnNow() bool {
	now, last := time.Now().UnixNano(), a.warned.Load()
	return now-last >= int64(rpcClockWindow) && a.warned.CompareAndSwap(last, now)
}

// nonceSet remembers the nonces of accepted credentials for at least span
// of elapsed (monotonic) time, in two generations: a nonce goes into the
// current one; every span the current one becomes the previous one and
// the previous one is dropped. With span rpcNonceMemory, a nonce is
// remembered for as long as its credential's time can pass the window
// check, however far apart the clocks are within it, and memory stays at
// most two spans of calls.
//
// It keeps 64 of a nonce's 128 random bits: two genuine credentials of
// the n a node remembers collide with a chance of about n²/2⁶⁵, and the
// later is refused as replayed. Only MAC-checked nonces get in, so no one
// without the key can fill it.
type nonceSet struct {
	span time.Duration

	mu        sync.Mutex // guards following
	cur, prev map[uint64]struct{}
	since     time.Time // when cur began
}

// add records nonce n seen at now; it reports false if n was already
// there.
func (s *nonceSet) add(now time.Time, n uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if age := now.Sub(s.since); s.cur == nil || age >= s.span {
		// Every nonce in cur came before since+span; in prev before since.
		s.prev = nil
		if s.cur != nil && age < 2*s.span {
			s.prev = s.cur
		}
		s.cur = make(map[uint64]struct{}, len(s.prev))
		s.since = now
	}
	if _, ok := s.prev[n]; ok {
		return false
	}
	if _, ok := s.cur[n]; ok {
		return false
	}
	s.cur[n] = struct{}{}
	return true
}

// len is how many nonces the set remembers.
func (s *nonceSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cur) + len(s.prev)
}
