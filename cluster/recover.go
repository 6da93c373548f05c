package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/partition"
)

// generationFile records, in a replica directory, the placement generation
// the replica was made for.
const generationFile = "generation"

func (n *Node) readGeneration(p uint32) uint64 {
	b, err := os.ReadFile(filepath.Join(n.replicaDir(p), generationFile))
	if err != nil {
		return 0
	}
	g, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return g
}

func (n *Node) writeGeneration(p uint32, g uint64) error {
	if err := os.MkdirAll(n.replicaDir(p), 0o700); err != nil {
		return err
	}
	return writeFileSync(filepath.Join(n.replicaDir(p), generationFile), []byte(strconv.FormatUint(g, 10)+"\n"))
}

// RecoverPartition restarts partition p from the replica on node from,
// after the partition lost its quorum: that replica's group becomes a group
// of one, the other replicas are discarded, and the placement re-replicates
// it. Writes acknowledged by the lost majority but missing from that
// replica are lost.
func (n *Node) RecoverPartition(ctx context.Context, p uint32, from string) (*heraldv1.Partition, error) {
	st, err := n.requireMeta()
	if err != nil {
		return nil, err
	}
	pl := placementOf(st, p)
	if pl == nil {
		return nil, notFoundf("partition %d does not exist; the cluster has %d", p, st.GetPartitions())
	}
	if _, err := n.node(st, from); err != nil {
		return nil, err
	}
	// The recovered placement must be recorded, or the other replicas,
	// when they return, would meet a survivor that no longer belongs to
	// their group. So first make sure the metadata can take a change (its
	// leader is reachable and has a quorum) and that the placement is still
	// the one read here, with a change that changes nothing.
	_, err = n.proposeMeta(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
		SetPlacement: &clusterv1.SetPlacement{Placements: []*clusterv1.Placement{{
			Partition: p, Replicas: pl.GetReplicas(), ExpectEpoch: pl.GetEpoch(), Generation: pl.GetGeneration()}}}}})
	if err != nil {
		return nil, fmt.Errorf("partition %d not recovered: the metadata group cannot record it (it needs its own quorum): %w", p, err)
	}
	next := pl.GetGeneration() + 1
	if _, err := n.replicaOpAt(ctx, from, &clusterv1.ReplicaOpRequest{Partition: p,
		Op: &clusterv1.ReplicaOpRequest_Recover{Recover: &clusterv1.RecoverOp{Generation: next}}}); err != nil {
		return nil, err
	}
	_, err = n.proposeMeta(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_SetPlacement{
		SetPlacement: &clusterv1.SetPlacement{Placements: []*clusterv1.Placement{{
			Partition: p, Replicas: []string{from}, ExpectEpoch: pl.GetEpoch(), Generation: next}}}}})
	if err != nil {
		return nil, fmt.Errorf("record the recovered placement: %w", err)
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	for {
		parts := n.ring(n.meta.State(), n.allStatus(ctx))
		if parts[p].GetLeader() == from {
			return parts[p], nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("partition %d: recovered replica on %s does not lead yet: %w", p, from, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// recoverLocal rewrites this node's replica of p into a group of one, for
// generation g, and reopens it.
func (n *Node) recoverLocal(_ context.Context, p uint32, g uint64) error {
	r, old, _, busy := n.reps.lookup(p)
	switch {
	case busy:
		return preconditionf("partition %d is already being recovered here", p)
	case r == nil:
		return notFoundf("node %s holds no replica of partition %d", n.cfg.NodeID, p)
	}
	if n.reps.take(p, r) == nil {
		return preconditionf("partition %d is already being recovered here", p)
	}
	defer n.reps.release(p)
	if err := r.Close(); err != nil {
		n.log.Warn("close replica for recovery", "partition", p, "err", err)
	}
	trans, err := n.mux.NewTransport(groupName(p, g), raftlog.New(n.log.With("partition", p)))
	if err != nil {
		return err
	}
	pc := n.replicaConfig(p)
	me := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeID), Address: raft.ServerAddress(n.mux.Addr().String())}
	err = partition.Recover(pc, trans, []raft.Server{me})
	err = errors.Join(err, trans.Close())
	if err != nil {
		return err
	}
	if err := n.writeGeneration(p, g); err != nil {
		return err
	}
	if err := n.ledger.setHeld(p, g, true); err != nil {
		return err
	}
	if err := n.ledger.setHeld(p, old, false); err != nil {
		return err
	}
	return n.ctl.startReplica(p, g, nil, true)
}
