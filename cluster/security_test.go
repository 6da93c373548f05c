package cluster_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/meta"
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

// rpcToken is the internal RPC bearer a node with secret sends.
func rpcToken(secret []byte) string {
	return hex.EncodeToString(hmacOf(cluster.DeriveKey(secret, nodeAuthLabel), []byte("rpc")))
}

// headerInterceptor sets the node auth header, if token is not empty, on
// every call.
type headerInterceptor struct{ token string }

func (i headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if i.token != "" {
			req.Header().Set(cluster.NodeAuthHeader, i.token)
		}
		return next(ctx, req)
	}
}

func (i headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if i.token != "" {
			conn.RequestHeader().Set(cluster.NodeAuthHeader, i.token)
		}
		return conn
	}
}

func (i headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// rawClient is a ClusterService client for addr that sends token ("" for
// no header).
func rawClient(addr, token string) clusterv1connect.ClusterServiceClient {
	return clusterv1connect.NewClusterServiceClient(http.DefaultClient, "http://"+addr,
		connect.WithInterceptors(headerInterceptor{token}))
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
		Meta: meta.Config{HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 20 * time.Millisecond}})
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
		for name, token := range map[string]string{
			"no header":          "",
			"other cluster's":    rpcToken(secretB),
			"garbage":            "not-a-token",
			"key, not the token": hex.EncodeToString(cluster.DeriveKey(secretA, nodeAuthLabel)),
		} {
			c := rawClient(target.HTTP, token)
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
		_, err := rawClient(b.Member(0).HTTP, rpcToken(secretA)).Hello(ctx, &clusterv1.HelloRequest{})
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("Hello to the other cluster with this one's token: got %v, want unauthenticated", err)
		}
		// The right token works, so the refusals above are about the key.
		resp, err := rawClient(target.HTTP, rpcToken(secretA)).Hello(ctx, &clusterv1.HelloRequest{})
		if err != nil || !resp.GetBootstrapped() || resp.GetClusterId() != target.Cluster().Meta().State().GetClusterId() {
			t.Errorf("Hello with the cluster's token: got %v, %v; want the cluster's answer", resp, err)
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
