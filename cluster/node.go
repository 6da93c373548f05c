package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/cluster/transport"
	"github.com/heraldhq/herald/storage/raftstore"
)

// Defaults for a new cluster.
const (
	DefaultPartitions  = 16
	DefaultReplication = 3
	DefaultMetaVoters  = 3
	// DefaultRequestTimeout is Config.RequestTimeout's default: well under
	// the 10-30 s clients commonly wait, and above the two or three
	// election timeouts a failover takes.
	DefaultRequestTimeout = 5 * time.Second
)

// Config configures a Node.
type Config struct {
	// NodeID names the node; it is its Raft server id in every group.
	NodeID string
	// DataDir holds node.json, the metadata replica and one directory per
	// partition replica.
	DataDir string
	// HTTPAddr is the host:port clients and peers reach the node's HTTP
	// API at (its advertised address).
	HTTPAddr string
	// RaftListener is the node's one Raft port, shared by all its groups.
	RaftListener net.Listener
	// AdvertiseRaft is the Raft address peers dial; empty means the
	// listener's address.
	AdvertiseRaft string
	// Join lists peers' HTTP addresses to find the cluster through. The
	// node's own address may be among them.
	Join []string
	// BootstrapExpect, if not 0, lets the node found a cluster: the first
	// BootstrapExpect nodes that find each other bootstrap it together. 0
	// means join an existing cluster through Join.
	BootstrapExpect int
	// Partitions, Replication and MetaVoters shape a new cluster; 0 means
	// 16, 3 (at most the founding nodes) and 3.
	Partitions  uint32
	Replication uint32
	MetaVoters  int
	// Region is recorded in the metadata.
	Region string
	// Roles are the roles the node serves (meta.AllRoles: edge, admin,
	// channel, gateway), recorded in the metadata; nil means all of them.
	// Placement puts replicas only on nodes with the channel role; a node
	// restarted without it hands its replicas over as a drain does.
	Roles []string
	// Secret is the cluster secret; node-to-node traffic is authenticated
	// with a key derived from it. Empty means no authentication.
	Secret []byte
	// TLS, if non-nil, turns TLS on for node-to-node traffic: the Raft
	// listener is wrapped with TLS.Raft (peers must present a certificate
	// from the CA), peers are dialed with TLS.Peer, and internal RPCs go
	// to https:// addresses and need a verified client certificate. The
	// HTTP server that mounts RPCHandler must then serve TLS with
	// TLS.HTTP. Nil means plaintext.
	TLS *TLSConfigs
	// PeerMap overrides the addresses dialed for given node ids.
	PeerMap map[string]PeerAddrs
	// RequestTimeout bounds every request: one that cannot reach its
	// partition's leader comes back unavailable (or indeterminate, if it
	// may have applied) within it, and sooner when the caller's own
	// deadline is nearer. 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// ReconcileInterval is how often placement and membership are
	// reconciled; 0 means 500 ms.
	ReconcileInterval time.Duration
	// Partition is the template for every replica's configuration (timers,
	// storage options).
	Partition partition.Config
	// Meta is the template for the metadata replica's configuration.
	Meta meta.Config
	// Space says when replicas are out of space and writes are refused.
	Space SpaceConfig
	// Defects plants known bugs, for herald torture's canaries only.
	Defects Defects
	// Logger receives state transitions; nil discards them.
	Logger *slog.Logger
}

// Validate reports the first missing or bad field.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("cluster: NodeID is required")
	case c.DataDir == "":
		return errors.New("cluster: DataDir is required")
	case c.HTTPAddr == "":
		return errors.New("cluster: HTTPAddr is required")
	case c.RaftListener == nil:
		return errors.New("cluster: RaftListener is required")
	case c.TLS != nil && (c.TLS.HTTP == nil || c.TLS.Raft == nil || c.TLS.Peer == nil):
		return errors.New("cluster: TLS needs its HTTP, Raft and Peer configurations")
	case c.RequestTimeout < 0:
		return fmt.Errorf("cluster: RequestTimeout %v is negative", c.RequestTimeout)
	case c.BootstrapExpect < 0:
		return fmt.Errorf("cluster: BootstrapExpect %d is negative", c.BootstrapExpect)
	case c.MetaVoters != 0 && c.MetaVoters != 1 && c.MetaVoters != 3 && c.MetaVoters != 5:
		return fmt.Errorf("cluster: MetaVoters %d: want 1, 3 or 5", c.MetaVoters)
	}
	if c.Roles != nil {
		if err := meta.CheckRoles(c.Roles); err != nil {
			return fmt.Errorf("cluster: Roles: %w", err)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Roles == nil {
		c.Roles = meta.AllRoles
	}
	c.Roles = meta.SortRoles(c.Roles)
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 500 * time.Millisecond
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replication == 0 {
		c.Replication = DefaultReplication
	}
	if c.MetaVoters == 0 {
		c.MetaVoters = DefaultMetaVoters
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Space, c.Partition.Storage = c.Space.withDefaults(c.Partition.Storage)
	return c
}

// Node is one Herald node's cluster role. It holds a replica of the
// metadata group and replicas of the partitions the placement gives it,
// all over one Raft port; it serves the internal ClusterService; and its
// router sends every request to the partition that owns its channel,
// locally or to the partition's leader on another node.
//
// Goroutines: one runs the node's life (joining, then reconciling
// placement, membership and, on the metadata leader, planning), owned by
// the Node and stopped by Close. Methods are safe for concurrent use; Close
// is idempotent.
type Node struct {
	cfg   Config
	log   *slog.Logger
	auth  *nodeAuth
	mux   *transport.Mux
	meta  *meta.Group
	peers *peers
	space *space

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reps      *replicaSet
	cur       *currency  // which replicas are current, for event streams
	ups       *upstreams // event streams from peers, one per partition
	ctl       *controller
	reach     *reachability
	fwd       *forwarders // ordered streams to peers, for posts with a client_msg_id
	ledger    *ledger
	shared    *raftstore.SharedLog // the Raft log of every partition replica
	metrics   *metrics
	sig       *signals
	metaTrans *transport.Transport
	// incarnation identifies the data directory (see identity).
	incarnation string
	// admitting is set when the node joined as a new member, until its
	// metadata replica has applied its admission (see register).
	admitting atomic.Bool

	failed   chan struct{} // closed by fail
	failOnce sync.Once
	failErr  error // set before failed is closed

	mu     sync.Mutex                // guards following
	hints  map[uint32]string         // partition → last known leader id
	heard  map[string]*heraldv1.Node // nodes heard of through Hello, before the metadata has them
	joined bool                      // the metadata replica belongs to a cluster

	closed    atomic.Bool
	closeOnce sync.Once
	// streamsEnd is closed when the node's HTTP server starts shutting
	// down (EndStreams): the streams peers hold to it end then.
	streamsEnd     chan struct{}
	streamsEndOnce sync.Once
	closeErr       error
}

// New opens the data directory, starts the Raft transport and the metadata
// replica, and starts the node's life goroutine, which finds or founds the
// cluster (so the HTTP API, which serves ClusterService, must be up soon
// after) and then opens the partition replicas the placement gives it.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	want := identity{NodeID: cfg.NodeID, Partitions: cfg.Partitions}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, identityFile)); err != nil && want.Partitions == 0 {
		want.Partitions = DefaultPartitions
	}
	id, err := loadIdentity(cfg.DataDir, want)
	if err != nil {
		return nil, err
	}
	cfg.Partitions = id.Partitions
	cfg = cfg.withDefaults()
	led, err := openLedger(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	shared, err := raftstore.OpenSharedLog(filepath.Join(cfg.DataDir, SharedLogDir), cfg.Partition.OnFatal)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	cfg.Defects.plant(&cfg, shared, log)
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: log, auth: newNodeAuth(cfg.Secret), ctx: ctx, cancel: cancel,
		incarnation: id.Incarnation, ledger: led, shared: shared, failed: make(chan struct{}),
		reps: newReplicaSet(), reach: newReachability(), hints: make(map[uint32]string), streamsEnd: make(chan struct{}),
		heard: make(map[string]*heraldv1.Node), space: newSpace(cfg.Space)}
	n.ctl = &controller{n: n}
	n.cur = newCurrency(n.current)
	n.ups = newUpstreams(n)
	n.metrics = newMetrics(n)
	n.sig = newSignals(n)
	shared.ObserveAppends(n.metrics.logAppend)
	n.fwd = &forwarders{ctx: ctx, log: log,
		to:   func(id string) (clusterv1connect.ClusterServiceClient, error) { return n.peers.to(id) },
		note: func(ctx context.Context, id string, err error) { n.reach.note(ctx, id, err, false) }}
	n.peers = newPeers(n)
	addrs := &startingProvider{peers: n.peers}
	tc := transport.Config{
		Listener:        cfg.RaftListener,
		Advertise:       cfg.AdvertiseRaft,
		Handshake:       n.auth.handshake,
		AddressProvider: addrs,
		Logger:          log,
	}
	if cfg.TLS != nil {
		tc.Listener = tls.NewListener(cfg.RaftListener, cfg.TLS.Raft)
		tc.DialTLS = cfg.TLS.Peer
	}
	mux, err := transport.New(tc)
	if err != nil {
		cancel()
		return nil, errors.Join(err, shared.Close())
	}
	n.mux = mux
	trans, err := mux.NewTransport("meta", raftlog.New(log.With("group", "meta")))
	if err != nil {
		cancel()
		return nil, errors.Join(err, mux.Close(), shared.Close())
	}
	// Until discovery has made sure that this node may take part in the
	// metadata group (it has state, founds the cluster, or joins with an id
	// the cluster does not know to have lost its state), peers cannot
	// reach its replica: one that forgot its votes must not be asked.
	trans.Refuse(true)
	n.metaTrans = trans
	mc := cfg.Meta
	mc.NodeID = cfg.NodeID
	mc.Dir = filepath.Join(cfg.DataDir, "meta")
	mc.Logger = log
	if n.meta, err = meta.New(mc, trans); err != nil {
		cancel()
		return nil, errors.Join(err, trans.Close(), mux.Close(), shared.Close())
	}
	if has, err := n.meta.HasState(); err == nil && has {
		trans.Refuse(false)
	}
	addrs.ready.Store(true)
	n.wg.Go(n.ctl.run)
	n.wg.Go(n.watchSpace)
	n.wg.Go(n.trackCurrency)
	return n, nil
}

// startingProvider resolves Raft server ids through peers once the
// metadata replica is set on the Node. The metadata replica's Raft
// instance starts inside meta.New and may resolve a peer (for a heartbeat
// that arrives at once) before New has stored it; until then raft falls
// back to the address it was given.
type startingProvider struct {
	peers *peers
	ready atomic.Bool
}

func (s *startingProvider) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if !s.ready.Load() {
		return "", fmt.Errorf("cluster: node %q: addresses not loaded yet", id)
	}
	return s.peers.ServerAddr(id)
}

// Failed returns a channel that is closed when the node has stopped
// serving for good by itself, for the reason Err gives: it found that it
// must not take part in the cluster (ErrStateLost, a removed node started
// with its old data). The node's owner should then Close it and exit.
func (n *Node) Failed() <-chan struct{} { return n.failed }

// Err returns why the node failed, once Failed is closed; nil before.
func (n *Node) Err() error {
	select {
	case <-n.failed:
		return n.failErr
	default:
		return nil
	}
}

// fail stops the node's life with err (see Failed). The first call counts.
func (n *Node) fail(err error) {
	n.failOnce.Do(func() {
		n.log.Error("node cannot continue", "err", err)
		n.failErr = err
		close(n.failed)
		n.cancel()
	})
}

// self returns this node as the metadata records it.
func (n *Node) self() *heraldv1.Node {
	return &heraldv1.Node{
		Id:          n.cfg.NodeID,
		HttpAddr:    n.cfg.HTTPAddr,
		RaftAddr:    n.mux.Addr().String(),
		Roles:       slices.Clone(n.cfg.Roles),
		Region:      n.cfg.Region,
		State:       heraldv1.Node_STATE_ACTIVE,
		Incarnation: n.incarnation,
	}
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Partitions returns the cluster's partition count, or 0 before the node
// has the metadata.
func (n *Node) Partitions() uint32 { return n.meta.State().GetPartitions() }

// PartitionOf returns the partition that owns a channel. It needs the
// metadata (Partitions() > 0).
func (n *Node) PartitionOf(channelID string) uint32 {
	return ring.Partition(channelID, n.Partitions())
}

// Replica returns the local replica of partition p, or nil.
func (n *Node) Replica(p uint32) *partition.Partition { return n.reps.get(p) }

// Meta returns the node's metadata replica.
func (n *Node) Meta() *meta.Group { return n.meta }

// Ready reports whether the node has the metadata and every replica the
// placement gives it is open and caught up.
func (n *Node) Ready() bool {
	st := n.meta.State()
	if !n.meta.Ready() || st.GetPartitions() == 0 {
		return false
	}
	for _, pl := range st.GetPlacements() {
		if !contains(pl.GetReplicas(), n.cfg.NodeID) {
			continue
		}
		r, _, caught, _ := n.reps.lookup(pl.GetPartition())
		if r == nil || !r.Ready() || !(r.IsLeader() || caught) {
			return false
		}
	}
	return true
}

// Close stops the node's life goroutine, shuts every replica down (leaders
// first hand their leadership over), then the metadata replica and the
// transport. It is idempotent.
func (n *Node) Close() error { return n.close(true) }

// Kill stops the node the way a crash would, as far as its peers can
// tell: its replicas hand no leadership over. For failover tests; Close
// after Kill is a no-op.
func (n *Node) Kill() error { return n.close(false) }

func (n *Node) close(graceful bool) error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		n.cancel()
		n.wg.Wait()
		replicas := n.reps.all()
		var wg sync.WaitGroup
		errs := make([]error, len(replicas))
		for i, r := range replicas {
			if graceful {
				wg.Go(func() { errs[i] = r.Close() })
			} else {
				wg.Go(func() { errs[i] = r.Kill() })
			}
		}
		wg.Wait()
		if graceful {
			errs = append(errs, n.meta.Close())
		} else {
			errs = append(errs, n.meta.Kill())
		}
		errs = append(errs, n.mux.Close(), n.shared.Close())
		n.peers.close()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// httpHandlerTimeout bounds internal RPCs that carry no deadline.
const httpHandlerTimeout = 30 * time.Second

var _ http.Handler = (*rpcServer)(nil)

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
