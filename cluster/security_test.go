package cluster_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
)

// nodeAuthLabel is the label the node-to-node key is derived with
// (cluster.DeriveKey), as the cluster documents it.
const nodeAuthLabel = "herald node-to-node v1"

func newSecret(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func hmacOf(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// rpcAuthLabel is the label internal RPC credentials are keyed with.
const rpcAuthLabel = "herald internal rpc v2"

// rpcToken is the static internal RPC bearer nodes used to send, which
// anyone who captured one call could send again.
func rpcToken(secret []byte) string {
	return hex.EncodeToString(hmacOf(cluster.DeriveKey(secret, nodeAuthLabel), []byte("rpc")))
}

// credential is an internal RPC credential as the cluster documents it
// (the NodeAuthHeader value), made now with secret by node from for one
// call of procedure to node to. msg is a unary call's request, nil for a
// stream.
func credential(t testing.TB, secret []byte, from, to, procedure string, msg proto.Message) string {
	t.Helper()
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	millis := time.Now().UnixMilli()
	in := []byte("v2")
	for _, s := range []string{from, to, procedure} {
		in = binary.BigEndian.AppendUint16(in, uint16(len(s)))
		in = append(in, s...)
	}
	in = binary.BigEndian.AppendUint64(in, uint64(millis))
	in = append(in, nonce...)
	if msg != nil {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		in = append(append(in, 'u'), sum[:]...)
	} else {
		in = append(in, 's')
	}
	b64 := base64.RawURLEncoding
	return strings.Join([]string{"v2", b64.EncodeToString([]byte(from)), b64.EncodeToString([]byte(to)),
		strconv.FormatInt(millis, 10), b64.EncodeToString(nonce),
		b64.EncodeToString(hmacOf(cluster.DeriveKey(secret, rpcAuthLabel), in))}, ".")
}

// headerInterceptor sets the node auth header to what header returns for
// each call, if not "".
type headerInterceptor struct {
	header func(procedure string, msg proto.Message) string
}

// staticHeader sends token on every call ("" for no header).
func staticHeader(token string) headerInterceptor {
	return headerInterceptor{func(string, proto.Message) string { return token }}
}

// signedBy makes a fresh credential for every call, as node x9 with
// secret, made out to node to.
func signedBy(t testing.TB, secret []byte, to string) headerInterceptor {
	return headerInterceptor{func(procedure string, msg proto.Message) string {
		return credential(t, secret, "x9", to, procedure, msg)
	}}
}

func (i headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if h := i.header(req.Spec().Procedure, req.Any().(proto.Message)); h != "" {
			req.Header().Set(cluster.NodeAuthHeader, h)
		}
		return next(ctx, req)
	}
}

func (i headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if h := i.header(spec.Procedure, nil); h != "" {
			conn.RequestHeader().Set(cluster.NodeAuthHeader, h)
		}
		return conn
	}
}

func (i headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// rawClient is a ClusterService client for addr that sets the node auth
// header with h.
func rawClient(addr string, h headerInterceptor) clusterv1connect.ClusterServiceClient {
	return clusterv1connect.NewClusterServiceClient(http.DefaultClient, "http://"+addr,
		connect.WithInterceptors(h))
}

// startLoneNode starts a node outside any test cluster, with its own
// secret, joining through join, and serves its ClusterService.
func startLoneNode(t *testing.T, id string, secret []byte, join []string) (*cluster.Node, string) {
	t.Helper()
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := cluster.New(cluster.Config{NodeID: id, DataDir: t.TempDir(), HTTPAddr: httpLn.Addr().String(),
		RaftListener: raftLn, Join: join, Secret: secret, ReconcileInterval: 100 * time.Millisecond,
		Meta: clustertest.FastMeta()})
	if err != nil {
		httpLn.Close()
		raftLn.Close()
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(n.RPCHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(httpLn) }() // returns at Close
	t.Cleanup(func() {
		_ = srv.Close() // best effort: the node is what the test checked
		if err := n.Close(); err != nil {
			t.Errorf("close %s: %v", id, err)
		}
	})
	return n, httpLn.Addr().String()
}

// dialGroup opens a raw connection to a Raft port for group and reads the
// node's challenge.
func dialGroup(t *testing.T, addr, group string) (net.Conn, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hdr := []byte{'H', 1}
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(group)))
	hdr = append(hdr, group...)
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(hdr); err != nil {
		t.Fatalf("write header for %s: %v", group, err)
	}
	nonce := make([]byte, 32)
	if _, err := io.ReadFull(conn, nonce); err != nil {
		t.Fatalf("read the challenge for %s: %v", group, err)
	}
	return conn, nonce
}

func TestSecurityNodeAuthentication(t *testing.T) {
	t.Parallel()
	secretA, secretB := newSecret(t), newSecret(t)
	a := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2, Secret: secretA})
	b := clustertest.New(t, clustertest.Options{Nodes: 1, Partitions: 1, Secret: secretB})
	a.WaitSettled(30 * time.Second)
	target := a.Member(0)
	ctx := context.Background()

	t.Run("internal RPCs need the cluster key", func(t *testing.T) {
		for name, h := range map[string]headerInterceptor{
			"no header":                staticHeader(""),
			"other cluster's":          signedBy(t, secretB, target.ID),
			"garbage":                  staticHeader("not-a-token"),
			"garbage in the form":      staticHeader("v2.eDk.bjE.1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
			"key, not a credential":    staticHeader(hex.EncodeToString(cluster.DeriveKey(secretA, rpcAuthLabel))),
			"the former static bearer": staticHeader(rpcToken(secretA)),
			"keyed for the raft handshake": headerInterceptor{func(p string, m proto.Message) string {
				return credential(t, cluster.DeriveKey(secretA, nodeAuthLabel), "x9", target.ID, p, m)
			}},
		} {
			c := rawClient(target.HTTP, h)
			_, err := c.Hello(ctx, &clusterv1.HelloRequest{Node: &heraldv1.Node{Id: "x9", HttpAddr: "127.0.0.1:1"}})
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("Hello with %s token: got %v, want unauthenticated", name, err)
			}
			_, err = c.Join(ctx, &clusterv1.JoinRequest{Node: &heraldv1.Node{Id: "x9", RaftAddr: "127.0.0.1:1"}})
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("Join with %s token: got %v, want unauthenticated", name, err)
			}
			stream, err := c.Snapshot(ctx, &clusterv1.SnapshotRequest{Partition: 0})
			if err == nil {
				for stream.Receive() {
					t.Errorf("Snapshot with %s token: got a message, want none", name)
				}
				err = stream.Err()
				stream.Close()
			}
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("Snapshot with %s token: got %v, want unauthenticated", name, err)
			}
		}
		// The other cluster refuses this one's key as well.
		_, err := rawClient(b.Member(0).HTTP, signedBy(t, secretA, "")).Hello(ctx, &clusterv1.HelloRequest{})
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("Hello to the other cluster with this one's token: got %v, want unauthenticated", err)
		}
		// The right credential works, so the refusals above are about the
		// key.
		good := rawClient(target.HTTP, signedBy(t, secretA, target.ID))
		resp, err := good.Hello(ctx, &clusterv1.HelloRequest{})
		if err != nil || !resp.GetBootstrapped() || resp.GetClusterId() != target.Cluster().Meta().State().GetClusterId() {
			t.Errorf("Hello with the cluster's credential: got %v, %v; want the cluster's answer", resp, err)
		}
		// A stream too, from the leader that serves it.
		leader, _ := leaderAndOthers(t, a, 0)
		stream, err := rawClient(leader.HTTP, signedBy(t, secretA, leader.ID)).Snapshot(ctx, &clusterv1.SnapshotRequest{Partition: 0})
		if err != nil {
			t.Fatalf("Snapshot with the cluster's credential: %v", err)
		}
		got := 0
		for stream.Receive() {
			got++
		}
		if err := stream.Err(); err != nil || got == 0 {
			t.Errorf("Snapshot with the cluster's credential: %d messages, %v; want the snapshot", got, err)
		}
		stream.Close()
		// Made out to another node, it is refused even with the key.
		_, err = rawClient(target.HTTP, signedBy(t, secretA, a.Member(1).ID)).Join(ctx,
			&clusterv1.JoinRequest{Node: &heraldv1.Node{Id: "x9", RaftAddr: "127.0.0.1:1"}})
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("Join with a credential for %s sent to %s: got %v, want unauthenticated", a.Member(1).ID, target.ID, err)
		}
	})

	t.Run("wrong secret cannot join", func(t *testing.T) {
		var join []string
		for _, m := range a.Members() {
			join = append(join, m.HTTP)
		}
		stranger, _ := startLoneNode(t, "x1", secretB, join)
		knows := func(n *cluster.Node) bool {
			return slices.ContainsFunc(n.Meta().State().GetNodes(), func(x *heraldv1.Node) bool { return x.GetId() == "x1" })
		}
		// Several discovery rounds (every 250 ms) go by.
		holdFor(t, 2*time.Second, 50*time.Millisecond, "x1 stays out of the cluster", func() bool {
			if stranger.Partitions() != 0 || stranger.Ready() {
				return false
			}
			for _, n := range a.Running() {
				if knows(n) {
					return false
				}
			}
			return true
		})
		resp, err := a.Node(1).ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, node := range resp.GetNodes() {
			if node.GetId() == "x1" {
				t.Errorf("ListNodes lists x1, which has another cluster's secret")
			}
		}
	})

	t.Run("right secret joins", func(t *testing.T) {
		begin := time.Now()
		added := a.AddNode()
		clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, added.ID+" ready and known to every node", func() bool {
			if n := added.Cluster(); !n.Ready() || n.Partitions() != 2 {
				return false
			}
			for _, n := range a.Running() {
				if !slices.ContainsFunc(n.Meta().State().GetNodes(), func(x *heraldv1.Node) bool { return x.GetId() == added.ID }) {
					return false
				}
			}
			return true
		})
		t.Logf("%s joined and is ready after %v", added.ID, time.Since(begin).Round(time.Millisecond))
	})

	t.Run("raft handshake", func(t *testing.T) {
		key := cluster.DeriveKey(secretA, nodeAuthLabel)
		// The right answer opens the stream: the node waits for an RPC.
		conn, nonce := dialGroup(t, target.Raft, "meta")
		if _, err := conn.Write(hmacOf(key, nonce)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		var ne net.Error
		if _, err := conn.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("after the right answer: got %v, want the connection open (read timeout)", err)
		}
		for _, group := range []string{"meta", "p0"} {
			conn, nonce := dialGroup(t, target.Raft, group)
			wrong := hmacOf(cluster.DeriveKey(secretB, nodeAuthLabel), nonce)
			if _, err := conn.Write(wrong); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := conn.Read(make([]byte, 1))
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("group %s, wrong answer: got %v, want the connection closed", group, err)
			}
			t.Logf("group %s, wrong answer: connection closed after %v (%v)", group, time.Since(begin).Round(time.Millisecond), err)
		}
		// The node keeps working.
		ch := channelIn("sec", 0, 2)
		createChannels(t, target.Cluster(), []string{ch})
		post(t, target.Cluster(), ch, "after-handshakes")
		settledRingVia(t, target.Cluster())
	})
}

// capturedRPC is one internal RPC as it arrived at a node.
type capturedRPC struct {
	node   string // the node it was sent to
	path   string
	header http.Header
	body   []byte
}

// applyRecorder records the internal Apply calls nodes receive whose
// command posts a given text: what anyone on the network between nodes
// could capture without TLS.
type applyRecorder struct {
	text string

	mu  sync.Mutex // guards following
	got []capturedRPC
}

func (rec *applyRecorder) wrap(id string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == clusterv1connect.ClusterServiceApplyProcedure {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req clusterv1.ApplyRequest
			if proto.Unmarshal(body, &req) == nil && req.GetCommand().GetPostMessage().GetText() == rec.text {
				rec.mu.Lock()
				rec.got = append(rec.got, capturedRPC{node: id, path: r.URL.Path, header: r.Header.Clone(), body: body})
				rec.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (rec *applyRecorder) captured() []capturedRPC {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.got)
}

// replay sends a captured request again, as it was, to node to with a
// plain HTTP client, and returns the status and the Connect error code and
// message of the answer ("" for a success).
func replay(t *testing.T, c *clustertest.Cluster, rpc capturedRPC, to string) (int, string, string) {
	t.Helper()
	var addr string
	for _, m := range c.Members() {
		if m.ID == to {
			addr = m.HTTP
		}
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+rpc.path, bytes.NewReader(rpc.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = rpc.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("replay to %s: %v", rpc.node, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("replay to %s: read the answer: %v", rpc.node, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", ""
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("replay to %s: status %d, body %q: not a Connect error", rpc.node, resp.StatusCode, body)
	}
	return resp.StatusCode, e.Code, e.Message
}

// TestSecurityRPCReplayRefused captures a real internal Apply one node
// forwards to a partition's leader and sends it again: the credential it
// carries must not post the message a second time.
func TestSecurityRPCReplayRefused(t *testing.T) {
	t.Parallel()
	rec := &applyRecorder{text: "posted once"}
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 2, Secret: newSecret(t), WrapHTTP: rec.wrap})
	c.WaitSettled(30 * time.Second)
	ch := channelIn("replay", 0, 2)
	leader, others := leaderAndOthers(t, c, 0)
	via := others[0].Cluster()
	createChannels(t, via, []string{ch})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := via.Apply(ctx, clustertest.Post(ch, rec.text, "")); err != nil {
		t.Fatalf("post via %s: %v", via.ID(), err)
	}
	got := rec.captured()
	if len(got) != 1 {
		t.Fatalf("captured %d forwarded Apply calls of the post via %s (leader %s), want 1", len(got), via.ID(), leader.ID)
	}
	rpc := got[0]
	t.Logf("captured %s -> %s: %s %q", via.ID(), rpc.node, rpc.path, rpc.header.Get(cluster.NodeAuthHeader))
	count := func() int {
		n := 0
		for _, m := range readAll(t, via, ch) {
			if m.GetText() == rec.text {
				n++
			}
		}
		return n
	}
	if k := count(); k != 1 {
		t.Fatalf("before the replay: %d messages %q, want 1", k, rec.text)
	}

	status, code, msg := replay(t, c, rpc, rpc.node)
	t.Logf("replayed at once: status %d, code %q, message %q", status, code, msg)
	if status != http.StatusUnauthorized || code != connect.CodeUnauthenticated.String() {
		t.Errorf("replayed at once: status %d, code %q; want 401 unauthenticated", status, code)
	}
	// Every node keeps its own memory of the credentials it saw: one sent
	// to another node must not be good here.
	for _, m := range c.Members() {
		if m.ID == via.ID() || m.ID == rpc.node {
			continue
		}
		status, code, msg := replay(t, c, rpc, m.ID)
		t.Logf("replayed at %s, which it was not sent to: status %d, code %q, message %q", m.ID, status, code, msg)
		if status != http.StatusUnauthorized || code != connect.CodeUnauthenticated.String() {
			t.Errorf("replayed at %s: status %d, code %q; want 401 unauthenticated", m.ID, status, code)
		}
	}
	// Later, once its time is out of the receiver's clock window.
	receiver := c.Node(slices.IndexFunc(c.Members(), func(m *clustertest.Node) bool { return m.ID == rpc.node }))
	cluster.SkewRPCClock(receiver, cluster.RPCClockWindow+time.Second)
	status, code, msg = replay(t, c, rpc, rpc.node)
	cluster.SkewRPCClock(receiver, 0)
	t.Logf("replayed %v later: status %d, code %q, message %q", cluster.RPCClockWindow+time.Second, status, code, msg)
	if status != http.StatusUnauthorized || code != connect.CodeUnauthenticated.String() || !strings.Contains(msg, "expired") {
		t.Errorf("replayed after the window: status %d, code %q, message %q; want 401 unauthenticated, expired", status, code, msg)
	}
	if k := count(); k != 1 {
		t.Errorf("after the replays: %d messages %q, want 1", k, rec.text)
	}
}
