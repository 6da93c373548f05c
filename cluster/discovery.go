package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
// already is (it restarted) goes on, unless the cluster removed it; otherwise
// it asks the --join peers who they know. If one of them belongs to a
// cluster, it joins it; if BootstrapExpect nodes know of each other and
// none belongs to a cluster, the first BootstrapExpect of them by id found
// it together, each bootstrapping the metadata group with the identical
// configuration. A node whose metadata replica had state and lost it, or
// that finds its id in the cluster's metadata with another data directory
// (incarnation), returns ErrStateLost: it must not take part under that id.
func (n *Node) discover(ctx context.Context) error {
	has, err := n.meta.HasState()
	if err != nil {
		return err
	}
	if has {
		if err := n.ledger.setMetaHeld(); err != nil {
			return err
		}
		return n.checkNotRemoved(ctx)
	}
	if n.ledger.metaHeld() {
		return fmt.Errorf("%w: its metadata replica in %s has no Raft state; %s", ErrStateLost,
			filepath.Join(n.cfg.DataDir, "meta"), n.rejoinHint())
	}
	n.log.Info("looking for the cluster", "join", n.cfg.Join, "bootstrap_expect", n.cfg.BootstrapExpect)
	t := time.NewTicker(discoverInterval)
	defer t.Stop()
	lastLog := time.Time{}
	for {
		known, bootstrapped, you := n.hello(ctx)
		if err := n.checkIncarnation(you); err != nil {
			return err
		}
		switch {
		case bootstrapped != "":
			n.metaTrans.Refuse(false)
			return n.join(ctx, bootstrapped)
		case n.cfg.BootstrapExpect > 0 && len(known) >= n.cfg.BootstrapExpect:
			founders := known[:n.cfg.BootstrapExpect]
			// Only the voting founders bootstrap (raft refuses a non-voter);
			// the others are in the configuration they bootstrap, and wait
			// below for the leader to replicate it to them.
			i := slices.IndexFunc(founders, func(x *heraldv1.Node) bool { return x.GetId() == n.cfg.NodeID })
			if i >= 0 {
				n.metaTrans.Refuse(false)
			}
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

// rejoinHint says what an operator does with a node that lost its state.
func (n *Node) rejoinHint() string {
	return fmt.Sprintf("remove it from the cluster on a live node (herald admin remove %s), "+
		"then start it again with an empty data directory: it rejoins as a new member", n.cfg.NodeID)
}

// checkIncarnation returns ErrStateLost if you, the cluster's record of
// this node's id, is a member with another data directory.
func (n *Node) checkIncarnation(you *heraldv1.Node) error {
	switch you.GetState() {
	case heraldv1.Node_STATE_ACTIVE, heraldv1.Node_STATE_DRAINING:
	default:
		return nil
	}
	if you.GetIncarnation() != "" && you.GetIncarnation() == n.incarnation {
		return nil
	}
	return fmt.Errorf("%w: the cluster has node %q as a member, but not the data directory %s (it was lost or is new); %s",
		ErrStateLost, n.cfg.NodeID, n.cfg.DataDir, n.rejoinHint())
}

// checkNotRemoved asks the --join peers, briefly, whether the cluster has
// removed this node; a removed node started with its old data directory
// has nothing to rejoin with. Peers that do not answer are not waited for.
func (n *Node) checkNotRemoved(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _, you := n.hello(ctx)
	if you.GetState() == heraldv1.Node_STATE_REMOVED && you.GetIncarnation() == n.incarnation {
		return fmt.Errorf("node %q was removed from the cluster (herald admin remove); its data directory %s "+
			"holds its old membership: start it with an empty data directory to rejoin as a new member",
			n.cfg.NodeID, n.cfg.DataDir)
	}
	return nil
}

// hello asks every --join peer for the nodes it knows. It returns all
// known nodes sorted by id (this one included), the HTTP address of a peer
// that belongs to a cluster, if any, and such a peer's metadata record of
// this node's id (nil if none has one).
func (n *Node) hello(ctx context.Context) (known []*heraldv1.Node, bootstrapped string, you *heraldv1.Node) {
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
			if resp.GetYou() != nil {
				you = resp.GetYou()
			}
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
	return known, bootstrapped, you
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
		nl := resp.GetNotLeader()
		switch {
		case connect.CodeOf(err) == connect.CodeFailedPrecondition:
			// The metadata leader refuses this node for good.
			return fmt.Errorf("%w: %s", ErrStateLost, errorMessage(err))
		case err != nil:
			n.log.Debug("join failed", "via", addr, "err", err)
		case nl != nil && (nl.GetLeaderHttp() != "" || n.peers.httpAddr(nl.GetLeaderId()) != ""):
			// The leader's id, resolved as this node dials it, else the
			// address it advertises.
			if a := n.peers.httpAddr(nl.GetLeaderId()); a != "" {
				addr = a
			} else {
				addr = nl.GetLeaderHttp()
			}
			continue
		case nl == nil:
			n.admitting.Store(true)
			return n.noteFounder(resp.GetState())
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
	old, _ := n.node(n.meta.State(), node.GetId())
	rejoin := false
	switch old.GetState() {
	case heraldv1.Node_STATE_ACTIVE, heraldv1.Node_STATE_DRAINING:
		if old.GetIncarnation() == "" || old.GetIncarnation() != node.GetIncarnation() {
			return nil, preconditionf("node %q is a member of this cluster with another data directory: "+
				"the joining node has lost its state, or another node has its id. Remove it first "+
				"(herald admin remove %s), or start the joining node with another --node-id", node.GetId(), node.GetId())
		}
	case heraldv1.Node_STATE_REMOVED:
		if member {
			// Its old self is still in the metadata group: let the removal
			// commit first, or the new node would vote as the old one.
			return nil, fmt.Errorf("%w: node %q is still leaving the metadata group; retry", ErrNotApplied, node.GetId())
		}
		rejoin = true
	}
	node = proto.CloneOf(node)
	node.MetaVoter = !member && voters < n.cfg.MetaVoters
	// Recorded first (a removed node comes back ACTIVE with its new
	// incarnation): the metadata group's tending removes members it knows
	// as REMOVED.
	st, err := n.meta.Propose(ctx, &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_UpsertNode{
		UpsertNode: &clusterv1.UpsertNode{Node: node}}})
	if err != nil || member {
		return st, err
	}
	if node.GetMetaVoter() {
		err = n.meta.AddVoter(ctx, node.GetId(), node.GetRaftAddr())
	} else {
		err = n.meta.AddNonvoter(ctx, node.GetId(), node.GetRaftAddr())
	}
	if err != nil {
		return nil, err
	}
	n.log.Info("node joined", "joiner", node.GetId(), "meta_voter", node.GetMetaVoter(), "rejoined", rejoin)
	return n.meta.State(), nil
}

// register makes sure the metadata records this node with its current
// addresses; a founder registers itself this way.
func (n *Node) register(ctx context.Context) {
	me := n.self()
	st := n.meta.State()
	if err := n.noteFounder(st); err != nil {
		n.log.Error("record founding in the ledger", "err", err)
		return
	}
	for _, node := range st.GetNodes() {
		if node.GetId() == me.GetId() {
			if node.GetIncarnation() == me.GetIncarnation() {
				n.admitting.Store(false) // the replica has applied the admission
			}
			switch {
			case node.GetState() == heraldv1.Node_STATE_REMOVED && node.GetIncarnation() == me.GetIncarnation():
				n.fail(fmt.Errorf("node %q was removed from the cluster (herald admin remove); to rejoin, "+
					"start it again with an empty data directory", me.GetId()))
				return
			case node.GetState() == heraldv1.Node_STATE_REMOVED:
				return // rejoining: the metadata has not caught up with the admission yet
			case node.GetIncarnation() != "" && node.GetIncarnation() != me.GetIncarnation() && n.admitting.Load():
				// Admitted as a new member, this node's metadata replica is
				// still replaying the log from before its admission, which
				// records the id's old data directory: wait for it.
				return
			case node.GetIncarnation() != "" && node.GetIncarnation() != me.GetIncarnation():
				n.fail(fmt.Errorf("%w: the cluster has node %q with another data directory than %s; %s",
					ErrStateLost, me.GetId(), n.cfg.DataDir, n.rejoinHint()))
				return
			case node.GetHttpAddr() == me.GetHttpAddr() && node.GetRaftAddr() == me.GetRaftAddr() &&
				node.GetRegion() == me.GetRegion() && node.GetIncarnation() == me.GetIncarnation() &&
				slices.Equal(node.GetRoles(), me.GetRoles()):
				return
			}
			break
		}
	}
	cmd := &clusterv1.MetaCommand{Op: &clusterv1.MetaCommand_UpsertNode{UpsertNode: &clusterv1.UpsertNode{Node: me}}}
	st, err := n.proposeMeta(ctx, cmd)
	if err != nil {
		n.log.Debug("register with the metadata leader", "err", err)
		return
	}
	if err := n.noteFounder(st); err != nil {
		n.log.Error("record founding in the ledger", "err", err)
	}
}

// noteFounder records in the ledger that this node founded the cluster if
// st, a metadata state, records it (with this data directory) before the
// partitions were founded: the first placement is made of the nodes
// recorded then, and they alone bootstrap its groups. However a founder
// came in (bootstrapping the metadata group, or joining it while the
// founding was under way), it sees such a state: the one its own
// registration or admission returned.
func (n *Node) noteFounder(st *clusterv1.MetaState) error {
	if st.GetPartitions() != 0 {
		return nil
	}
	me, err := n.node(st, n.cfg.NodeID)
	if err != nil || me.GetIncarnation() != n.incarnation || me.GetState() != heraldv1.Node_STATE_ACTIVE {
		return nil
	}
	return n.ledger.setFounder()
}

// proposeMeta applies a metadata command on the metadata leader, here or
// through an internal RPC.
func (n *Node) proposeMeta(ctx context.Context, cmd *clusterv1.MetaCommand) (*clusterv1.MetaState, error) {
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	for {
		if n.meta.IsLeader() {
			st, err := n.meta.Propose(ctx, cmd)
			switch {
			case errors.Is(err, meta.ErrIndeterminate):
				return nil, fmt.Errorf("%w: %w", ErrIndeterminate, err)
			case ctx.Err() == nil && (errors.Is(err, meta.ErrNotLeader) || errors.Is(err, meta.ErrNotApplied)):
				// Not applied: leadership moved on; ask the next leader.
			default:
				return st, err
			}
		}
		id, _ := n.meta.Leader()
		if id != "" {
			c, err := n.peers.to(id)
			if err != nil {
				return nil, err
			}
			resp, err := c.MetaPropose(ctx, &clusterv1.MetaProposeRequest{Command: cmd})
			n.reach.note(ctx, id, err, false)
			switch {
			case err != nil && ctx.Err() == nil && peerAnswered(err) && connect.CodeOf(err) != connect.CodeUnavailable:
				// The leader answered with an error of its own; a
				// connection that failed (the leader died) is retried.
				return nil, fmt.Errorf("propose to metadata leader %s: %w", id, err)
			case err == nil && resp.GetError() != nil:
				return nil, domainError(resp.GetError())
			case err == nil && resp.GetNotLeader() == nil:
				return resp.GetState(), nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w: %w", ErrNoLeader, ErrNoMetaLeader, ctx.Err())
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
	var ids []string // the founders that hold replicas
	for _, node := range nodes {
		if meta.HoldsReplicas(node) {
			ids = append(ids, node.GetId())
		}
	}
	if len(ids) == 0 {
		n.log.Warn("cannot place the partitions: no founding node has the channel role")
		return
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
