package cluster

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// Defaults of SpaceConfig.
const (
	DefaultMinFreeDisk        = 1 << 30 // 1 GiB
	DefaultStateQuota         = 8 << 30 // 8 GiB
	DefaultSpaceCheckInterval = time.Second
)

// SpaceConfig says when a node's replicas are out of space. While a
// replica of a partition's group is, the partition's leader refuses writes
// (ErrNoSpace) and reads go on; writes resume by themselves once there is
// space again.
type SpaceConfig struct {
	// MinFreeDisk is the free-space reserve, in bytes, of the filesystem
	// holding DataDir: below it, every partition with a replica on this
	// node refuses writes. It must leave room for what is in flight and
	// for the Raft logs, whose write errors are fatal. 0 means
	// DefaultMinFreeDisk; negative turns the reserve off.
	MinFreeDisk int64
	// StateQuota caps, in bytes, the data in one replica's state file
	// (storage.DB.Size): past it, the replica's partition refuses writes.
	// It also sets the file's hard limit, Partition.Storage.MaxSize (when
	// that is 0), to StateQuota plus headroom, so that the quota is always
	// reached first. 0 means DefaultStateQuota; negative turns the quota
	// off.
	StateQuota int64
	// CheckInterval is how often the node measures its disk and state
	// files and asks the nodes it shares groups with for theirs; 0 means
	// DefaultSpaceCheckInterval.
	CheckInterval time.Duration
}

// withDefaults fills in SpaceConfig's defaults and derives the state
// file's MaxSize from the quota, unless so sets one.
func (c SpaceConfig) withDefaults(so storage.Options) (SpaceConfig, storage.Options) {
	if c.MinFreeDisk == 0 {
		c.MinFreeDisk = DefaultMinFreeDisk
	}
	if c.StateQuota == 0 {
		c.StateQuota = DefaultStateQuota
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = DefaultSpaceCheckInterval
	}
	if so.MaxSize == 0 && c.StateQuota > 0 {
		so.MaxSize = stateMaxSize(c.StateQuota)
	}
	return c, so
}

// stateMaxSize is bbolt's hard limit for a state file with quota: the
// quota plus a quarter, at least 256 MiB more. Between a check and the
// next the file grows by what is applied meanwhile; bbolt grows it 16 MiB
// ahead of use, and a long snapshot read keeps pages it frees from reuse.
func stateMaxSize(quota int64) int {
	size := quota + max(quota/4, 256<<20)
	if size > math.MaxInt || size < quota {
		return math.MaxInt
	}
	return int(size)
}

// spaceTTL is how many check intervals a peer's space status counts after
// it was heard; an unreachable node's stops counting then.
const spaceTTL = 10

// space is what a node knows of the space of its replicas and of the
// nodes it shares groups with. One goroutine (Node.watchSpace) measures
// and asks; the write path reads what it found. Mutex-guarded.
type space struct {
	cfg SpaceConfig

	mu        sync.Mutex // guards following
	local     *clusterv1.SpaceStatus
	peers     map[string]peerSpace
	low       bool            // local disk below the reserve, as last logged
	overQuota map[uint32]bool // local replicas over the quota, as last logged
	noStatfs  bool            // free space could not be measured, as last logged
}

type peerSpace struct {
	st *clusterv1.SpaceStatus
	at time.Time
}

func newSpace(cfg SpaceConfig) *space {
	return &space{cfg: cfg, peers: map[string]peerSpace{}, overQuota: map[uint32]bool{}}
}

// localStatus returns this node's last measurement, nil before the first.
func (s *space) localStatus() *clusterv1.SpaceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
}

// status returns what is known of node id's space: this node's own
// measurement, or a peer's heard within spaceTTL intervals; nil if none.
func (s *space) status(self, id string) *clusterv1.SpaceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == self {
		return s.local
	}
	p, ok := s.peers[id]
	if !ok || time.Since(p.at) > spaceTTL*s.cfg.CheckInterval {
		return nil
	}
	return p.st
}

// watchSpace checks space every CheckInterval until the node closes.
func (n *Node) watchSpace() {
	t := time.NewTicker(n.space.cfg.CheckInterval)
	defer t.Stop()
	for {
		n.measureSpace()
		n.askPeersSpace(n.ctx)
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measureSpace measures the data directory's free space and every local
// replica's state, and logs when the node goes below its reserve or a
// replica over its quota, and back.
func (n *Node) measureSpace() {
	s, cfg := n.space, n.space.cfg
	free, ferr := storage.DiskFree(n.cfg.DataDir)
	st := &clusterv1.SpaceStatus{FreeBytes: free}
	if cfg.MinFreeDisk > 0 && ferr == nil {
		st.MinFreeBytes = uint64(cfg.MinFreeDisk)
	}
	if cfg.StateQuota > 0 {
		st.StateQuotaBytes = uint64(cfg.StateQuota)
	}
	for _, r := range n.reps.all() {
		if size, err := r.DB().Size(); err == nil { // a closing replica has none
			st.Replicas = append(st.Replicas, &clusterv1.ReplicaSpace{Partition: r.ID(), StateBytes: uint64(size)})
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.local = st
	if (ferr != nil) != s.noStatfs {
		s.noStatfs = ferr != nil
		if ferr != nil && cfg.MinFreeDisk > 0 {
			n.log.Warn("cannot measure free disk space; the free-disk reserve is not enforced", "err", ferr)
		}
	}
	if low := st.MinFreeBytes > 0 && free < st.MinFreeBytes; low != s.low {
		s.low = low
		if low {
			n.log.Warn("free disk space below the reserve; partitions with a replica here refuse writes",
				"dir", n.cfg.DataDir, "free", formatBytes(free), "reserve", formatBytes(st.MinFreeBytes))
		} else {
			n.log.Info("free disk space back above the reserve; writes resume",
				"dir", n.cfg.DataDir, "free", formatBytes(free), "reserve", formatBytes(st.MinFreeBytes))
		}
	}
	over := map[uint32]bool{}
	for _, rs := range st.Replicas {
		if q := st.StateQuotaBytes; q > 0 && rs.GetStateBytes() > q {
			over[rs.GetPartition()] = true
			if !s.overQuota[rs.GetPartition()] {
				n.log.Warn("replica state over the quota; its partition refuses writes", "partition", rs.GetPartition(),
					"state", formatBytes(rs.GetStateBytes()), "quota", formatBytes(q))
			}
		}
	}
	for p := range s.overQuota {
		if !over[p] {
			n.log.Info("replica state back under the quota", "partition", p)
		}
	}
	s.overQuota = over
}

// askPeersSpace asks every node that shares a partition group with this
// one for its space status, in parallel.
func (n *Node) askPeersSpace(ctx context.Context) {
	ids := map[string]bool{}
	for _, r := range n.reps.all() {
		cfg, err := r.Configuration()
		if err != nil {
			continue
		}
		for _, m := range cfg.Members {
			if m.ID != n.cfg.NodeID {
				ids[m.ID] = true
			}
		}
	}
	var wg sync.WaitGroup
	for id := range ids {
		wg.Go(func() {
			resp, err := n.nodeStatus(ctx, id)
			if err != nil {
				return
			}
			n.reach.heard(id, resp.GetUnreachable())
			if resp.GetSpace() == nil {
				return
			}
			n.space.mu.Lock()
			n.space.peers[id] = peerSpace{st: resp.GetSpace(), at: time.Now()}
			n.space.mu.Unlock()
		})
	}
	wg.Wait()
	n.space.mu.Lock()
	for id := range n.space.peers {
		if !ids[id] {
			delete(n.space.peers, id)
		}
	}
	n.space.mu.Unlock()
}

// propose proposes cmd on r, this node's replica of its partition. It is
// the one place both the local write path (Apply) and forwarded writes
// (rpcServer.Apply) propose: while r leads and a replica of its group is
// out of space it refuses with a *NoSpaceError, nothing proposed.
// TrimEvents, which frees space, always passes. Errors are Propose's
// otherwise.
func (n *Node) propose(ctx context.Context, r *partition.Partition, cmd *clusterv1.Command) (*storage.Result, error) {
	if err := n.writeRefusal(r, cmd); err != nil {
		return nil, err
	}
	return r.Propose(ctx, cmd)
}

// writeRefusal returns why r refuses cmd for want of space, or nil:
// TrimEvents, which frees space, always passes, and only a leader judges.
func (n *Node) writeRefusal(r *partition.Partition, cmd *clusterv1.Command) error {
	if cmd.GetTrimEvents() != nil || !r.IsLeader() {
		return nil
	}
	return n.spaceRefusal(r)
}

// spaceRefusal returns why r's partition refuses writes, or nil.
func (n *Node) spaceRefusal(r *partition.Partition) error {
	cfg, err := r.Configuration()
	if err != nil {
		return nil
	}
	for _, m := range cfg.Members {
		if err := judgeSpace(r.ID(), m.ID, n.space.status(n.cfg.NodeID, m.ID)); err != nil {
			return err
		}
	}
	return nil
}

// judgeSpace returns why partition p refuses writes given node's space
// status st (nil: unknown, no refusal), or nil.
func judgeSpace(p uint32, node string, st *clusterv1.SpaceStatus) *NoSpaceError {
	if st == nil {
		return nil
	}
	if min := st.GetMinFreeBytes(); min > 0 && st.GetFreeBytes() < min {
		return &NoSpaceError{Partition: p, Reason: fmt.Sprintf(
			"partition %d refuses writes: node %s has %s free on its data disk, below its reserve of %s "+
				"(--min-free-disk); free disk space on %s and writes resume by themselves. Nothing was applied; reads still work",
			p, node, formatBytes(st.GetFreeBytes()), formatBytes(min), node)}
	}
	if q := st.GetStateQuotaBytes(); q > 0 {
		for _, rs := range st.GetReplicas() {
			if rs.GetPartition() == p && rs.GetStateBytes() > q {
				return &NoSpaceError{Partition: p, Reason: fmt.Sprintf(
					"partition %d refuses writes: its state on node %s holds %s, over the quota of %s "+
						"(--state-quota); restart %s with a larger --state-quota to resume. Nothing was applied; reads still work",
					p, node, formatBytes(rs.GetStateBytes()), formatBytes(q), node)}
			}
		}
	}
	return nil
}

// noSpaceToWire is a refusal's answer to a forwarded write.
func noSpaceToWire(e *NoSpaceError) *clusterv1.ApplyResponse {
	return &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_Failed{Failed: &clusterv1.Outcome{
		Reason: e.Reason, NoSpace: true}}}
}

// noSpaceFromWire turns a forwarded write's refusal back into a
// *NoSpaceError; nil if o is no refusal.
func noSpaceFromWire(p uint32, o *clusterv1.Outcome) error {
	if !o.GetNoSpace() {
		return nil
	}
	return &NoSpaceError{Partition: p, Reason: o.GetReason()}
}

// formatBytes prints b in binary units: "900 B", "1.5 KiB", "512 MiB".
func formatBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	suffix := "KMGTPE"[exp : exp+1]
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f %siB", v, suffix)
	}
	return fmt.Sprintf("%.1f %siB", v, suffix)
}
