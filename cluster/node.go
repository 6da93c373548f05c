package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/cluster/transport"
)

// DefaultPartitions is the partition count of a new cluster.
const DefaultPartitions = 16

// Config configures a Node.
type Config struct {
	// NodeID names the node; it is every local replica's Raft server id.
	NodeID string
	// DataDir holds node.json and one directory per replica.
	DataDir string
	// RaftListener is the node's one Raft port, shared by all its groups.
	RaftListener net.Listener
	// AdvertiseRaft is the Raft address peers dial; empty means the
	// listener's address.
	AdvertiseRaft string
	// Partitions is the partition count of a new data directory; 0 means
	// what the directory says, or DefaultPartitions for a new one.
	Partitions uint32
	// RequestTimeout bounds requests that arrive without a deadline; 0
	// means 10 s.
	RequestTimeout time.Duration
	// Partition is the template for every replica's configuration (timers,
	// storage options); its ID, NodeID, Dir, Bootstrap and Logger are set
	// per replica.
	Partition partition.Config
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
	case c.RaftListener == nil:
		return errors.New("cluster: RaftListener is required")
	case c.RequestTimeout < 0:
		return fmt.Errorf("cluster: RequestTimeout %v is negative", c.RequestTimeout)
	}
	return nil
}

// Node is one Herald node's cluster role: its partition replicas, their
// shared Raft transport, and the router that sends each request to the
// partition that owns its channel. Today every partition has its single
// replica on this node; the router's contract (any request, any node) is
// the one the multi-node cluster keeps. Methods are safe for concurrent
// use; Close is idempotent.
type Node struct {
	cfg        Config
	log        *slog.Logger
	partitions uint32
	mux        *transport.Mux
	replicas   []*partition.Partition // index = partition number

	closed    atomic.Bool // set by Close: requests fail fast with ErrClosed
	closeOnce sync.Once
	closeErr  error
}

// New opens the data directory and starts every replica. A new directory
// bootstraps each partition as a group of one.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
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
	log := cfg.Logger.With("node", cfg.NodeID)
	mux, err := transport.New(transport.Config{
		Listener:  cfg.RaftListener,
		Advertise: cfg.AdvertiseRaft,
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, partitions: id.Partitions, mux: mux}
	start := time.Now()
	for p := range id.Partitions {
		r, err := n.openReplica(p)
		if err != nil {
			return nil, errors.Join(err, n.Close())
		}
		n.replicas = append(n.replicas, r)
	}
	log.Info("opened replicas", "partitions", id.Partitions, "took", time.Since(start).Round(time.Millisecond))
	return n, nil
}

func (n *Node) openReplica(p uint32) (*partition.Partition, error) {
	group := fmt.Sprintf("p%d", p)
	trans, err := n.mux.NewTransport(group, raftlog.New(n.log.With("partition", p)))
	if err != nil {
		return nil, err
	}
	pc := n.cfg.Partition
	pc.ID = p
	pc.NodeID = n.cfg.NodeID
	pc.Dir = filepath.Join(n.cfg.DataDir, "partitions", fmt.Sprintf("%03d", p))
	pc.Logger = n.log
	pc.Bootstrap = []raft.Server{{
		Suffrage: raft.Voter,
		ID:       raft.ServerID(n.cfg.NodeID),
		Address:  raft.ServerAddress(n.mux.Addr().String()),
	}}
	r, err := partition.New(pc, trans)
	if err != nil {
		_ = trans.Close() // best effort: report the replica error
		return nil, err
	}
	return r, nil
}

// Partitions returns the partition count.
func (n *Node) Partitions() uint32 { return n.partitions }

// Replica returns the local replica of partition p, or nil.
func (n *Node) Replica(p uint32) *partition.Partition {
	if int(p) >= len(n.replicas) {
		return nil
	}
	return n.replicas[p]
}

// PartitionOf returns the partition that owns a channel.
func (n *Node) PartitionOf(channelID string) uint32 {
	return ring.Partition(channelID, n.partitions)
}

// Ready reports whether every local replica has a leader and is caught up.
func (n *Node) Ready() bool {
	for _, r := range n.replicas {
		if !r.Ready() {
			return false
		}
	}
	return len(n.replicas) > 0
}

// Close shuts every replica down, then the transport. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		var wg sync.WaitGroup
		errs := make([]error, len(n.replicas))
		for i, r := range n.replicas {
			wg.Go(func() { errs[i] = r.Close() })
		}
		wg.Wait()
		n.closeErr = errors.Join(append(errs, n.mux.Close())...)
	})
	return n.closeErr
}
