package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/partition"
)

// replicaDir is where partition p's replica lives.
func (n *Node) replicaDir(p uint32) string {
	return filepath.Join(n.cfg.DataDir, "partitions", fmt.Sprintf("%03d", p))
}

// reconcileReplicas opens the replicas the placement gives this node and
// retires the ones that left their group: a replica in neither the
// placement nor its group's configuration shuts down and its files are
// deleted, and so is one made for an older generation of its partition
// (before a RecoverPartition).
//
// A replica this node holds (the ledger says it has state) is opened even
// when the placement has moved it away: the move may not have reached its
// group, whose quorum may need it, and only the group can hand its data to
// the new replicas. A node that stayed away while it was drained would
// otherwise leave its group one voter short for good, or without a quorum
// when two were. Once opened it is retired by the rules above, when its
// group no longer has it.
func (c *controller) reconcileReplicas(ctx context.Context) {
	n := c.n
	st := n.meta.State()
	status := n.statusCache(ctx)
	for _, pl := range st.GetPlacements() {
		p := pl.GetPartition()
		r, gen, _, busy := n.reps.lookup(p)
		if busy {
			continue
		}
		wanted := contains(pl.GetReplicas(), n.cfg.NodeID)
		switch {
		case r == nil && (wanted || n.ledger.held(p, pl.GetGeneration())):
			if !wanted {
				n.log.Info("opening a replica the placement moved away: its group may still count on it", "partition", p)
			}
			if err := c.openReplica(pl); err != nil {
				n.log.Error("open replica", "partition", p, "err", err)
			}
		case r == nil:
		case gen < pl.GetGeneration():
			n.log.Warn("discarding a replica of an earlier generation", "partition", p,
				"generation", gen, "current", pl.GetGeneration())
			c.retireReplica(p, r)
		case r.Removed():
			// Removed from its group (raft shuts a removed replica down).
			c.retireReplica(p, r)
		case !wanted && !inConfiguration(r, n.cfg.NodeID):
			c.retireReplica(p, r)
		case c.removedByLeader(r, pl.GetReplicas(), status):
			c.retireReplica(p, r)
		}
	}
}

// openReplica starts this node's replica of a partition. Only the first
// placement (epoch 1, generation 0) bootstraps a group, identically on
// every replica, and only on the nodes that founded the cluster (raft
// bootstraps only a replica without state); a replica placed later starts
// empty and waits for the leader to add it. A replica the ledger says had
// state must have it still, but for a bootstrap a crash cut short (else
// the node fails with ErrStateLost). Files left by an earlier generation
// are discarded.
func (c *controller) openReplica(pl *clusterv1.Placement) error {
	n := c.n
	p, g := pl.GetPartition(), pl.GetGeneration()
	if local := n.readGeneration(p); local < g {
		if err := n.ledger.setHeld(p, local, false); err != nil {
			return err
		}
		if err := n.removeReplicaDir(p); err != nil {
			return err
		}
	}
	if err := n.writeGeneration(p, g); err != nil {
		return err
	}
	held := n.ledger.held(p, g)
	var bootstrap []raft.Server
	if pl.GetEpoch() == 1 && g == 0 && n.ledger.founder() {
		for _, id := range pl.GetReplicas() {
			bootstrap = append(bootstrap, raft.Server{Suffrage: raft.Voter,
				ID: raft.ServerID(id), Address: raft.ServerAddress(n.peers.raftAddr(id))})
		}
	}
	err := c.startReplica(p, g, bootstrap, held)
	if errors.Is(err, partition.ErrStateLost) {
		n.fail(fmt.Errorf("%w: %w; %s", ErrStateLost, err, n.rejoinHint()))
	}
	return err
}

// recordHeld notes in the ledger each replica that has come to hold Raft
// state, so that it is never started again without it.
func (c *controller) recordHeld() {
	n := c.n
	for _, r := range n.reps.all() {
		_, g, _, _ := n.reps.lookup(r.ID())
		if !n.ledger.held(r.ID(), g) && r.HasState() {
			if err := n.ledger.setHeld(r.ID(), g, true); err != nil {
				n.log.Error("record replica", "partition", r.ID(), "err", err)
			}
		}
	}
}

// replicaConfig is the configuration of this node's replica of p.
func (n *Node) replicaConfig(p uint32) partition.Config {
	pc := n.cfg.Partition
	pc.ID = p
	pc.NodeID = n.cfg.NodeID
	pc.Dir = n.replicaDir(p)
	pc.Logger = n.log
	pc.SharedLog = n.shared
	pc.Observe = n.metrics.observers(p)
	return pc
}

// groupName is the transport group of partition p's replicas of
// generation g. Each generation has its own, so that a replica of an older
// generation (a node that was down during a RecoverPartition and has not
// yet learnt of it) cannot reach the recovered group: it would otherwise
// win its old peers' votes, depose the survivor and overwrite its log.
func groupName(p uint32, g uint64) string {
	if g == 0 {
		return fmt.Sprintf("p%d", p)
	}
	return fmt.Sprintf("p%d.g%d", p, g)
}

// startReplica opens the replica of p for generation g and registers it;
// requireState refuses to open it without Raft state.
func (c *controller) startReplica(p uint32, g uint64, bootstrap []raft.Server, requireState bool) error {
	n := c.n
	trans, err := n.mux.NewTransport(groupName(p, g), raftlog.New(n.log.With("partition", p)))
	if err != nil {
		return err
	}
	pc := n.replicaConfig(p)
	pc.Bootstrap = bootstrap
	pc.RequireState = requireState
	r, err := partition.New(pc, trans)
	if err != nil {
		_ = trans.Close() // best effort: report the replica error
		return err
	}
	n.reps.add(p, r, g)
	n.log.Info("opened replica", "partition", p, "generation", g, "bootstrap", len(bootstrap) > 0)
	return nil
}

// retireReplica closes a replica that left its group and deletes its files.
func (c *controller) retireReplica(p uint32, r *partition.Partition) {
	n := c.n
	_, g, _, _ := n.reps.lookup(p)
	if n.reps.take(p, r) == nil {
		return
	}
	defer n.reps.release(p)
	n.metrics.forget(p)
	if err := r.Close(); err != nil {
		n.log.Warn("close retired replica", "partition", p, "err", err)
	}
	// Out of the ledger before the files go: a crash in between leaves
	// files that are still safe to open, never a listed replica without
	// them.
	if err := n.ledger.setHeld(p, g, false); err != nil {
		n.log.Error("retire replica", "partition", p, "err", err)
		return
	}
	if err := n.removeReplicaDir(p); err != nil {
		n.log.Error("delete retired replica", "partition", p, "err", err)
		return
	}
	n.log.Info("retired replica", "partition", p)
}

// removedByLeader reports whether r was removed from its group without
// learning it: the leader stops replicating to a server it removes, so the
// removed replica may never apply its removal, and this node's metadata
// may lag (a drained node leaves the metadata group too). Only a replica
// that has a configuration but knows no leader asks; it asks the other
// members of its configuration and of the placement, and trusts a replica
// that leads the partition.
func (c *controller) removedByLeader(r *partition.Partition, placed []string,
	status func(string) *clusterv1.NodeStatusResponse) bool {
	n := c.n
	if r.Leader() != "" || r.IsLeader() {
		return false
	}
	cfg, err := r.Configuration()
	if err != nil || len(cfg.Members) == 0 {
		return false // unknown, or a new replica waiting to be added
	}
	var peers []string
	for _, m := range cfg.Members {
		peers = append(peers, m.ID)
	}
	for _, id := range append(peers, placed...) {
		if id == n.cfg.NodeID {
			continue
		}
		for _, rs := range status(id).GetReplicas() {
			if rs.GetPartition() != r.ID() || rs.GetState() != raft.Leader.String() {
				continue
			}
			return !slices.ContainsFunc(rs.GetConfiguration(), func(x *heraldv1.Replica) bool {
				return x.GetNodeId() == n.cfg.NodeID
			})
		}
	}
	return false
}

// inConfiguration reports whether id is in r's group configuration.
func inConfiguration(r *partition.Partition, id string) bool {
	cfg, err := r.Configuration()
	if err != nil {
		return true // unknown: keep it
	}
	in, _ := cfg.Has(id)
	return in
}

// placementOf returns partition p's placement, or nil.
func placementOf(st *clusterv1.MetaState, p uint32) *clusterv1.Placement {
	for _, pl := range st.GetPlacements() {
		if pl.GetPartition() == p {
			return pl
		}
	}
	return nil
}

// removeReplicaDir deletes the files of this node's replica of p: its
// entries in the shared log first (the directory names them), then the
// directory.
func (n *Node) removeReplicaDir(p uint32) error {
	dir := n.replicaDir(p)
	if err := n.shared.Drop(dir); err != nil {
		return fmt.Errorf("drop %s's entries from the shared raft log: %w", dir, err)
	}
	return os.RemoveAll(dir)
}
