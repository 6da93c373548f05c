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
// per HTTP address. It is safe for concurrent use.
type peers struct {
	n      *Node
	client *http.Client
	scheme string // "http://", or "https://" with TLS

	mu      sync.Mutex // guards following
	clients map[string]clusterv1connect.ClusterServiceClient
}

func newPeers(n *Node) *peers {
	tr := &http.Transport{
		// HTTP/2 only, cleartext (h2c) or over TLS: many concurrent RPCs
		// and streams on one connection per peer.
		Protocols: new(http.Protocols),
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
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
		clients: make(map[string]clusterv1connect.ClusterServiceClient)}
}

// httpAddr returns the HTTP address to dial for a node id, or "".
func (p *peers) httpAddr(id string) string {
	if a, ok := p.n.cfg.PeerMap[id]; ok && a.HTTP != "" {
		return a.HTTP
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
	return p.at(addr), nil
}

// at returns the client for an HTTP address.
func (p *peers) at(addr string) clusterv1connect.ClusterServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clients[addr]
	if c == nil {
		c = clusterv1connect.NewClusterServiceClient(p.client, p.scheme+addr,
			connect.WithInterceptors(authInterceptor{p.n.auth}))
		p.clients[addr] = c
	}
	return c
}

func (p *peers) close() {
	p.client.CloseIdleConnections()
}

// authInterceptor adds the node's proof of the cluster key to every
// internal RPC it sends.
type authInterceptor struct{ a *nodeAuth }

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		i.a.set(req.Header())
		return next(ctx, req)
	}
}

func (i authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		i.a.set(conn.RequestHeader())
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
