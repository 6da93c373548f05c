package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
)

// How fast a peer that cannot be reached is given up on.
const (
	peerDialTimeout = 2 * time.Second
	peerPingAfter   = time.Second // without a frame from the peer
	peerPingTimeout = time.Second
)

// PeerAddrs are the addresses to dial for one node.
type PeerAddrs struct {
	Raft string `json:"raft"`
	HTTP string `json:"http"`
}

// LoadPeerMap reads a --peer-map file: a JSON object from node id to
// {"raft": "host:port", "http": "host:port"}. The addresses replace what
// the metadata says, for this process only (fault-injection proxies use
// it to sit between nodes).
func LoadPeerMap(path string) (map[string]PeerAddrs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read peer map: %w", err)
	}
	m := map[string]PeerAddrs{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("peer map %s: %w", path, err)
	}
	return m, nil
}

// peers resolves node ids to addresses and keeps one internal RPC client
// per HTTP address and node id. It is safe for concurrent use.
type peers struct {
	n      *Node
	client *http.Client
	scheme string // "http://", or "https://" with TLS

	mu      sync.Mutex // guards following
	clients map[peerKey]clusterv1connect.ClusterServiceClient
}

// peerKey names an internal RPC client: the address it dials and the node
// its credentials are made out to ("" if not known).
type peerKey struct{ addr, id string }

func newPeers(n *Node) *peers {
	tr := &http.Transport{
		// HTTP/2 only, cleartext (h2c) or over TLS: many concurrent RPCs
		// and streams on one connection per peer.
		Protocols: new(http.Protocols),
		DialContext: (&net.Dialer{
			Timeout:   peerDialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout: peerDialTimeout,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		// A connection that goes quiet is checked with a ping and dropped
		// if the peer does not answer: a node that is paused, partitioned
		// away or gone fails the requests waiting on it within about two
		// seconds, not at their deadline, so the router can try elsewhere.
		HTTP2: &http.HTTP2Config{SendPingTimeout: peerPingAfter, PingTimeout: peerPingTimeout},
	}
	scheme := "http://"
	if n.cfg.TLS != nil {
		// The transport edits its TLS config (NextProtos): give it a copy.
		// An empty ServerName makes it verify the host dialed.
		tr.TLSClientConfig = n.cfg.TLS.Peer.Clone()
		tr.Protocols.SetHTTP2(true)
		scheme = "https://"
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &peers{n: n, client: &http.Client{Transport: tr}, scheme: scheme,
		clients: make(map[peerKey]clusterv1connect.ClusterServiceClient)}
}

// httpAddr returns the HTTP address this node dials for a node id: the
// peer map's, if it names one, else the advertised address; "" if none is
// known.
func (p *peers) httpAddr(id string) string {
	if a, ok := p.n.cfg.PeerMap[id]; ok && a.HTTP != "" {
		return a.HTTP
	}
	return p.advertisedHTTP(id)
}

// advertisedHTTP returns the HTTP address node id advertises (as the
// metadata, or a Hello, has it), or "". It is what this node tells others:
// the peer map is this process's own view, and another node must resolve
// the id through its own.
func (p *peers) advertisedHTTP(id string) string {
	if id == "" {
		return ""
	}
	if id == p.n.cfg.NodeID {
		return p.n.cfg.HTTPAddr
	}
	for _, node := range p.n.meta.State().GetNodes() {
		if node.GetId() == id {
			return node.GetHttpAddr()
		}
	}
	if node := p.n.heardOf(id); node != nil {
		return node.GetHttpAddr()
	}
	return ""
}

// ServerAddr resolves a Raft server id for the transports
// (raft.ServerAddressProvider).
func (p *peers) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if a, ok := p.n.cfg.PeerMap[string(id)]; ok && a.Raft != "" {
		return raft.ServerAddress(a.Raft), nil
	}
	if string(id) == p.n.cfg.NodeID {
		// Raft asks for this node's own address in the header of its first
		// answers, possibly while New is still storing the metadata replica
		// in n.meta: answer without reading it.
		return raft.ServerAddress(p.n.mux.Addr().String()), nil
	}
	for _, node := range p.n.meta.State().GetNodes() {
		if node.GetId() == string(id) {
			return raft.ServerAddress(node.GetRaftAddr()), nil
		}
	}
	if node := p.n.heardOf(string(id)); node != nil {
		return raft.ServerAddress(node.GetRaftAddr()), nil
	}
	return "", fmt.Errorf("cluster: no address known for node %q", id)
}

// raftAddr is ServerAddr for callers that want a string.
func (p *peers) raftAddr(id string) string {
	a, err := p.ServerAddr(raft.ServerID(id))
	if err != nil {
		return ""
	}
	return string(a)
}

// to returns the client for a node id.
func (p *peers) to(id string) (clusterv1connect.ClusterServiceClient, error) {
	addr := p.httpAddr(id)
	if addr == "" {
		return nil, fmt.Errorf("cluster: no HTTP address known for node %q", id)
	}
	return p.clientFor(peerKey{addr, id}), nil
}

// at returns the client for an HTTP address whose node is not known (yet),
// for Hello and Join.
func (p *peers) at(addr string) clusterv1connect.ClusterServiceClient {
	return p.clientFor(peerKey{addr: addr})
}

func (p *peers) clientFor(k peerKey) clusterv1connect.ClusterServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clients[k]
	if c == nil {
		c = clusterv1connect.NewClusterServiceClient(p.client, p.scheme+k.addr,
			connect.WithInterceptors(authInterceptor{a: p.n.auth, from: p.n.cfg.NodeID, to: k.id}))
		p.clients[k] = c
	}
	return c
}

func (p *peers) close() {
	p.client.CloseIdleConnections()
}

// authInterceptor puts a fresh credential (nodeAuth.sign) on every
// internal RPC this node, from, sends to node to.
type authInterceptor struct {
	a        *nodeAuth
	from, to string
}

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if i.a != nil {
			digest, err := requestDigest(req.Any())
			if err != nil {
				return nil, err
			}
			i.a.sign(req.Header(), i.from, i.to, req.Spec().Procedure, digest)
		}
		return next(ctx, req)
	}
}

func (i authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		i.a.sign(conn.RequestHeader(), i.from, i.to, spec.Procedure, nil)
		return conn
	}
}

func (i authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// notSent reports whether an RPC error means the request never reached the
// peer (it could not be dialed), so a write it carried was not applied.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// peerAnswered reports whether an RPC error is an answer the peer sent:
// connect-go gives such errors the response's headers as metadata.
func peerAnswered(err error) bool {
	ce, ok := errors.AsType[*connect.Error](err)
	return ok && len(ce.Meta()) > 0
}

// connectionFailed reports whether an RPC error came from the connection
// rather than from the peer: it broke, timed out or was dropped after a
// ping went unanswered. connect-go reports those as unavailable without
// any response metadata; an error the peer sent carries its response
// headers. A request the connection carried may have reached the peer.
func connectionFailed(err error) bool {
	ce, ok := errors.AsType[*connect.Error](err)
	if !ok {
		var ne net.Error
		return errors.As(err, &ne)
	}
	return ce.Code() == connect.CodeUnavailable && len(ce.Meta()) == 0
}
