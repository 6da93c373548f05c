package cluster

import (
	"encoding/binary"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// postRequest is an internal Apply posting text to a channel.
func postRequest(text string) *clusterv1.ApplyRequest {
	return &clusterv1.ApplyRequest{Partition: 1, Command: &clusterv1.Command{User: "alice",
		Op: &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{
			ChannelId: "general", Text: text, ClientMsgId: "c1"}}}}
}

func testAuth(t testing.TB, secret string) *nodeAuth {
	t.Helper()
	a := newNodeAuth([]byte(secret))
	if a == nil {
		t.Fatal("no nodeAuth for a secret")
	}
	return a
}

func mustDigest(t testing.TB, msg any) []byte {
	t.Helper()
	d, err := requestDigest(msg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRPCCredentialVerify checks what the receiver of an internal RPC
// credential accepts: each case changes one thing about a genuine
// credential, or the receiver.
func TestRPCCredentialVerify(t *testing.T) {
	t.Parallel()
	const apply = clusterv1connect.ClusterServiceApplyProcedure
	req, other := postRequest("hello"), postRequest("hellO")
	signed := func(a *nodeAuth, from, to, procedure string, digest []byte) http.Header {
		h := http.Header{}
		a.sign(h, from, to, procedure, digest)
		return h
	}
	// field replaces field i (0-based) of a header's credential.
	field := func(h http.Header, i int, v string) http.Header {
		f := strings.Split(h.Get(NodeAuthHeader), ".")
		f[i] = v
		return http.Header{NodeAuthHeader: {strings.Join(f, ".")}}
	}
	for _, tc := range []struct {
		name string
		// sender's key, header, and the receiver's id, procedure, request
		// and clock skew
		sender string
		header func(a *nodeAuth) http.Header
		self   string
		proc   string
		msg    any
		skew   time.Duration
		want   error
	}{
		{name: "genuine", want: nil},
		{name: "tampered body", msg: other, want: errUnauthenticated},
		{name: "other procedure", proc: clusterv1connect.ClusterServiceMetaProposeProcedure, want: errUnauthenticated},
		{name: "a stream's credential on a unary call", header: func(a *nodeAuth) http.Header {
			return signed(a, "n2", "n1", apply, nil)
		}, want: errUnauthenticated},
		{name: "other sending node id", header: func(a *nodeAuth) http.Header {
			return field(signed(a, "n2", "n1", apply, mustDigest(t, req)), 1, b64.EncodeToString([]byte("n3")))
		}, want: errUnauthenticated},
		{name: "other receiving node id in the header", header: func(a *nodeAuth) http.Header {
			return field(signed(a, "n2", "n1", apply, mustDigest(t, req)), 2, b64.EncodeToString([]byte("n3")))
		}, want: errUnauthenticated},
		{name: "made out to another node", self: "n3", want: errRPCOtherNode},
		{name: "made out to no node, for Apply", header: func(a *nodeAuth) http.Header {
			return signed(a, "n2", "", apply, mustDigest(t, req))
		}, want: errRPCOtherNode},
		{name: "made out to no node, for Hello", header: func(a *nodeAuth) http.Header {
			return signed(a, "n2", "", clusterv1connect.ClusterServiceHelloProcedure, mustDigest(t, &clusterv1.HelloRequest{}))
		}, proc: clusterv1connect.ClusterServiceHelloProcedure, msg: &clusterv1.HelloRequest{}, want: nil},
		{name: "old timestamp", skew: rpcClockWindow + time.Second, want: errRPCExpired},
		{name: "future timestamp", skew: -rpcClockWindow - time.Second, want: errRPCExpired},
		{name: "within the window", skew: rpcClockWindow - time.Second, want: nil},
		{name: "timestamp changed, within the window", header: func(a *nodeAuth) http.Header {
			return field(signed(a, "n2", "n1", apply, mustDigest(t, req)), 3,
				strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10))
		}, want: errUnauthenticated},
		{name: "nonce changed", header: func(a *nodeAuth) http.Header {
			return field(signed(a, "n2", "n1", apply, mustDigest(t, req)), 4, b64.EncodeToString(make([]byte, rpcNonceSize)))
		}, want: errUnauthenticated},
		{name: "wrong key", sender: "another secret", want: errUnauthenticated},
		{name: "the handshake key", header: func(a *nodeAuth) http.Header {
			b := &nodeAuth{rpcKey: a.key}
			return signed(b, "n2", "n1", apply, mustDigest(t, req))
		}, want: errUnauthenticated},
		{name: "no header", header: func(*nodeAuth) http.Header { return http.Header{} }, want: errUnauthenticated},
		{name: "other version", header: func(a *nodeAuth) http.Header {
			return field(signed(a, "n2", "n1", apply, mustDigest(t, req)), 0, "v1")
		}, want: errUnauthenticated},
		{name: "short MAC", header: func(a *nodeAuth) http.Header {
			return field(signed(a, "n2", "n1", apply, mustDigest(t, req)), 5, "AAAA")
		}, want: errUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv := testAuth(t, "cluster secret")
			sender := recv
			if tc.sender != "" {
				sender = testAuth(t, tc.sender)
			}
			if tc.self == "" {
				tc.self = "n1"
			}
			if tc.proc == "" {
				tc.proc = apply
			}
			if tc.msg == nil {
				tc.msg = req
			}
			var h http.Header
			if tc.header != nil {
				h = tc.header(sender)
			} else {
				h = signed(sender, "n2", "n1", apply, mustDigest(t, req))
			}
			recv.skew.Store(int64(tc.skew))
			if err := recv.verify(h, tc.self, tc.proc, mustDigest(t, tc.msg)); err != tc.want {
				t.Errorf("verify %q: got %v, want %v", h.Get(NodeAuthHeader), err, tc.want)
			}
		})
	}

	t.Run("reused nonce", func(t *testing.T) {
		a := testAuth(t, "cluster secret")
		h := http.Header{}
		a.sign(h, "n2", "n1", apply, mustDigest(t, req))
		if err := a.verify(h, "n1", apply, mustDigest(t, req)); err != nil {
			t.Fatalf("first use: %v", err)
		}
		for _, skew := range []time.Duration{0, rpcClockWindow / 2, rpcClockWindow - time.Second} {
			a.skew.Store(int64(skew))
			if err := a.verify(h, "n1", apply, mustDigest(t, req)); err != errRPCReplayed {
				t.Errorf("used again %v later: got %v, want %v", skew, err, errRPCReplayed)
			}
		}
		// Once the receiver has forgotten the nonce, the time refuses it.
		a.skew.Store(int64(3 * rpcNonceMemory))
		a.seen.add(a.now(), 1)
		a.seen.add(a.now().Add(rpcNonceMemory), 2)
		c, _, _ := parseCred(h.Get(NodeAuthHeader))
		n := binary.LittleEndian.Uint64(c.nonce[:8])
		if _, ok := a.seen.cur[n]; ok {
			t.Fatal("the nonce is still remembered")
		}
		if _, ok := a.seen.prev[n]; ok {
			t.Fatal("the nonce is still remembered")
		}
		if err := a.verify(h, "n1", apply, mustDigest(t, req)); err != errRPCExpired {
			t.Errorf("used again with the nonce forgotten: got %v, want %v", err, errRPCExpired)
		}
		// Fresh credentials keep working.
		a.skew.Store(0)
		a.sign(h, "n2", "n1", apply, mustDigest(t, req))
		if err := a.verify(h, "n1", apply, mustDigest(t, req)); err != nil {
			t.Errorf("a fresh credential: %v", err)
		}
	})

	t.Run("no secret", func(t *testing.T) {
		var a *nodeAuth // --insecure
		if err := a.verify(http.Header{}, "n1", apply, nil); err != nil {
			t.Errorf("without a secret: got %v, want nil", err)
		}
	})
}

// TestNonceSet checks that a nonce is remembered at least a span of time
// after it is added, and that the set forgets after two.
func TestNonceSet(t *testing.T) {
	t.Parallel()
	const span = time.Minute
	t0 := time.Now()
	for _, first := range []time.Duration{0, span / 2, span - time.Millisecond} {
		s := nonceSet{span: span}
		s.add(t0, 100) // starts a generation at t0
		if !s.add(t0.Add(first), 1) {
			t.Fatalf("added at %v: already there", first)
		}
		// Other calls go on, rotating generations as they come.
		for d := first; d <= first+span; d += span / 8 {
			if s.add(t0.Add(d), 1) {
				t.Errorf("added at %v, again at %v: accepted, want refused", first, d)
			}
			s.add(t0.Add(d), uint64(d)+2)
		}
		if at := first + 2*span + time.Millisecond; !s.add(t0.Add(first+2*span+time.Millisecond), 1) {
			t.Errorf("added at %v, again at %v: refused, want forgotten", first, at)
		}
	}
	// Memory: after a pause of two spans, nothing old is kept.
	s := nonceSet{span: span}
	for i := range uint64(1000) {
		s.add(t0, i)
	}
	s.add(t0.Add(2*span), 5000)
	if n := s.len(); n != 1 {
		t.Errorf("after two spans: %d nonces remembered, want 1", n)
	}
}

// BenchmarkRPCCredential measures what one internal Apply's credential
// costs: the sender's digest and MAC, and the receiver's digest, MAC and
// nonce check.
func BenchmarkRPCCredential(b *testing.B) {
	a := testAuth(b, "cluster secret")
	req := postRequest(strings.Repeat("x", 200))
	const apply = clusterv1connect.ClusterServiceApplyProcedure
	b.ReportAllocs()
	h := http.Header{}
	for b.Loop() {
		d, err := requestDigest(req)
		if err != nil {
			b.Fatal(err)
		}
		a.sign(h, "n2", "n1", apply, d)
		if d, err = requestDigest(req); err != nil {
			b.Fatal(err)
		}
		if err := a.verify(h, "n1", apply, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNonceSet measures the nonce check alone, in a set that grows
// to b.N nonces, and the memory a remembered nonce takes.
func BenchmarkNonceSet(b *testing.B) {
	s := nonceSet{span: rpcNonceMemory}
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	var buf [8]byte
	for i := range b.N {
		binary.LittleEndian.PutUint64(buf[:], uint64(i)*0x9e3779b97f4a7c15)
		if !s.add(now, binary.LittleEndian.Uint64(buf[:])) {
			b.Fatal("fresh nonce refused")
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(s.len()), "heap_B/nonce")
}
