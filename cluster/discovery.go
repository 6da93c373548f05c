package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
)

// discoverInterval is how often a node that has not joined yet asks its
// peers again.
const discoverInterval = 250 * time.Millisecond

// discover makes the metadata replica part of a cluster: a node that
// already is (it restarted) goes on; otherwise it asks the --join peers
// who they know. If one of them belongs to a cluster, it joins it; if
// BootstrapExpect nodes know of each other and none belongs to a cluster,
// the first BootstrapExpect of them by id found it together, each
// bootstrapping the metadata group with the identical configuration.
func (n *Node) discover(ctx context.Context) error {
	has, err := n.meta.HasState()
	if err != nil {
		return err
	}
	if has {
		return nil
	}
	n.log.Info("looking for the cluster", "join", n.cfg.Join, "bootstrap_expect", n.cfg.BootstrapExpect)
	t := time.NewTicker(discoverInterval)
	defer t.Stop()
	lastLog := time.Time{}
	for {
		known, bootstrapped := n.hello(ctx)
		switch {
		case bootstrapped != "":
			return n.join(ctx, bootstrapped)
		case n.cfg.BootstrapExpect > 0 && len(known) >= n.cfg.BootstrapExpect:
			founders := known[:n.cfg.BootstrapExpect]
			// Only the voting founders bootstrap (raft refuses a non-voter);
			// the others are in the configuration they bootstrap, and wait
			// below for the leader to replicate it to them.
			i := slices.IndexFunc(founders, func(x *heraldv1.Node) bool { return x.GetId() == n.cfg.NodeID })
			if i >= 0 && i < n.cfg.MetaVoters {
				return n.found(founders)
			}
		}
		if time.Since(lastLog) > 5*time.Second {
			ids := make([]string, len(known))
			for i, k := range known {
				ids[i] = k.GetId()
			}
			n.log.Warn("waiting for peers", "know", strings.Join(ids, ","), "bootstrap_expect", n.cfg.BootstrapExpect)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if has, err := n.meta.HasState(); err == nil && has {
			return nil // a founder or the metadata leader added this node
		}
	}
}

// hello asks every --join peer for the nodes it knows. It returns all
// known nodes sorted by id (this one included) and the HTTP address of a
// peer that belongs to a cluster, if any.
func (n *Node) hello(ctx context.Context) (known []*heraldv1.Node, bootstrapped string) {
	n.noteHeard(n.self())
	for _, addr := range n.cfg.Join {
		if addr == n.cfg.HTTPAddr {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := n.peers.at(addr).Hello(cctx, &clusterv1.HelloRequest{Node: n.self()})
		cancel()
		if err != nil {
			n.log.Debug("hello failed", "peer", addr, "err", err)
			continue
		}
		if resp.GetBootstrapped() {
			bootstrapped = addr
		}
		n.noteHeard(resp.GetNode())
		for _, k := range resp.GetKnown() {
			n.noteHeard(k)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range n.heard {
		known = append(known, k)
	}
	slices.SortFunc(known, func(a, b *heraldv1.Node) int { return strings.Compare(a.GetId(), b.GetId()) })
	return known, bootstrapped
}

// noteHeard records a node met through Hello.
func (n *Node) noteHeard(node *heraldv1.Node) {
	if node.GetId() == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.heard[node.GetId()] = proto.CloneOf(node)
}

// heardOf returns a node met through Hello, or nil.
func (n *Node) heardOf(id string) *heraldv1.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.heard[id]
}

// found bootstraps the metadata group with the founders: the first
// MetaVoters of them vote, the rest follow as non-voters.
func (n *Node) found(founders []*heraldv1.Node) error {
	servers := make([]raft.Server, len(founders))
	for i, f := range founders {
		servers[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(f.GetId()),
			Address: raft.ServerAddress(f.GetRaftAddr())}
		if i >= n.cfg.MetaVoters {
			servers[i].Suffrage = raft.Nonvoter
		}
	}
	n.log.Info("founding the cluster", "nodes", len(founders))
	return n.meta.Bootstrap(servers)
}

// join asks a member of the cluster to add this node, following hints to
// the metadata leader, until it succeeds or ctx ends.
func (n *Node) join(ctx context.Context, addr string) error {
	n.log.Info("joining the cluster", "via", addr)
	t := time.NewTicker(discoverInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := n.peers.at(addr).Join(cctx, &clusterv1.JoinRequest{Node: n.self()})
		cancel()
		switch {
		case err != nil:
			n.log.Debug("join failed", "via", addr, "err", err)
		case resp.GetNotLeader() != nil && resp.GetNotLeader().GetLeaderHttp() != "":
			addr = resp.GetNotLeader().GetLeaderHttp()
			continue
		case resp.GetNotLeader() == nil:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if has, err := n.meta.HasState(); err == nil && has {
			return nil
		}
	}
}

// admit adds a node to the cluster: records it in the metadata and adds
// it to the metadata group, as a voter while there are fewer than
// MetaVoters. It runs on the metadata leader.
func (n *Node) admit(ctx context.Context, node *heraldv1.Node) (*clusterv1.MetaState, error) {
	servers, err := n.meta.Configuration()
	if err != nil {
		return nil, err
	}
	voters, member := 0, false
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		member = member || string(s.ID) == node.GetId()
	}
	node = proto.CloneOf(node)
	if !member {
		if voters < n.cfg.MetaVoters {
			node.MetaVoter = true
			err = n.meta.AddVoter(ctx, node.GetId(), node.GetRaftAddr())
		} else {
			err = n.meta.AddNonvoter(ctx, node.GetId(), node.GetRaftAddr())
		}
		if err != nil {
			return nil, err
		}
		n.log.Info("node joined", "joiner", node.GetId(), "meta_voter", node.GetMetaVoter())
	}
	return n.meta.Propose(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_UpsertNode{
		UpsertNode: &clusterv1.UpsertNode{Node: node}}})
}

// register makes sure the metadata records this node with its current
// addresses; a founder registers itself this way.
func (n *Node) register(ctx context.Context) {
	me := n.self()
	for _, node := range n.meta.State().GetNodes() {
		if node.GetId() == me.GetId() {
			if node.GetHttpAddr() == me.GetHttpAddr() && node.GetRaftAddr() == me.GetRaftAddr() &&
				node.GetRegion() == me.GetRegion() {
				return
			}
			break
		}
	}
	cmd := &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_UpsertNode{UpsertNode: &clusterv1.UpsertNode{Node: me}}}
	if _, err := n.proposeMeta(ctx, cmd); err != nil {
		n.log.Debug("register with the metadata leader", "err", err)
	}
}

// proposeMeta applies a metadata command on the metadata leader, here or
// through an internal RPC.
func (n *Node) proposeMeta(ctx context.Context, cmd *clusterv1.MetaCommand) (*clusterv1.MetaState, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	for {
		if n.meta.IsLeader() {
			return n.meta.Propose(ctx, cmd)
		}
		id, _ := n.meta.Leader()
		if id != "" {
			c, err := n.peers.to(id)
			if err != nil {
				return nil, err
			}
			resp, err := c.MetaPropose(ctx, &clusterv1.MetaProposeRequest{Command: cmd})
			switch {
			case err != nil && connect.CodeOf(err) != connect.CodeUnavailable:
				return nil, fmt.Errorf("propose to metadata leader %s: %w", id, err)
			case err == nil && resp.GetError() != nil:
				return nil, domainError(resp.GetError())
			case err == nil && resp.GetNotLeader() == nil:
				return resp.GetState(), nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no metadata leader: %w", ErrNoLeader, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// initCluster founds the partitions once every founder has registered:
// the metadata leader proposes the partition count and the first
// placement.
func (c *controller) initCluster(ctx context.Context) {
	n := c.n
	st := n.meta.State()
	if st.GetPartitions() != 0 {
		return
	}
	servers, err := n.meta.Configuration()
	if err != nil {
		return
	}
	nodes := st.GetNodes()
	if len(nodes) < len(servers) {
		return // a founder has not registered yet
	}
	ids := make([]string, len(nodes))
	for i, node := range nodes {
		ids[i] = node.GetId()
	}
	replication := min(n.cfg.Replication, uint32(len(ids)))
	init := &clusterv1.InitCluster{
		ClusterId:   fmt.Sprintf("herald-%x", time.Now().UnixNano()),
		Partitions:  n.cfg.Partitions,
		Replication: replication,
		Nodes:       nodes,
		Placements:  meta.InitialPlacement(n.cfg.Partitions, replication, ids),
	}
	_, err = n.meta.Propose(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_InitCluster{InitCluster: init}})
	if err != nil && !errors.Is(err, meta.ErrNotLeader) {
		n.log.Warn("initialise the cluster", "err", err)
		return
	}
	if err == nil {
		n.log.Info("cluster initialised", "partitions", init.Partitions, "replication", replication, "nodes", len(ids))
	}
}
