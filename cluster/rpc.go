package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// watchBatch is how many events one Watch message carries at most.
const watchBatch = 256

// rpcServer serves ClusterService for one node.
type rpcServer struct {
	n       *Node
	handler http.Handler
}

// EndStreams ends the streams peers hold open to this node (forwarding
// and WatchPartition), so that its HTTP server can shut down: register it
// with the server's RegisterOnShutdown. Shutdown waits for every request
// to finish, and a peer's stream does not until it fails; a peer whose
// forwarding stream ends opens another, one whose watch stream ends reads
// from another replica. Close ends the forwarding streams too.
func (n *Node) EndStreams() { n.streamsEndOnce.Do(func() { close(n.streamsEnd) }) }

// RPCHandler returns the path and handler of the internal ClusterService,
// to mount on the node's HTTP server. Every call must carry the cluster
// key (when the node has a secret) and, with Config.TLS, come over TLS
// with a client certificate verified against the CA.
func (n *Node) RPCHandler() (string, http.Handler) {
	s := &rpcServer{n: n}
	path, h := clusterv1connect.NewClusterServiceHandler(s,
		connect.WithInterceptors(requireAuth{a: n.auth, self: n.cfg.NodeID, log: n.log}),
		connect.WithReadMaxBytes(8<<20),
		connect.WithCompressMinBytes(1024)) // small answers cost more to gzip than they save
	s.handler = h
	return path, s
}

func (s *rpcServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.n.cfg.TLS != nil && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		_ = connect.NewErrorWriter().Write(w, r, errNoNodeCert) // best effort: the caller is refused either way
		return
	}
	s.handler.ServeHTTP(w, r)
}

var errNoNodeCert = connect.NewError(connect.CodeUnauthenticated, errors.New("internal RPC without a node certificate"))

// requireAuth refuses internal RPCs without a valid credential for this
// node (nodeAuth.verify).
type requireAuth struct {
	a    *nodeAuth
	self string // this node's id
	log  *slog.Logger
}

func (i requireAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if i.a == nil {
			return next(ctx, req)
		}
		digest, err := requestDigest(req.Any())
		if err == nil {
			err = i.a.verify(req.Header(), i.self, req.Spec().Procedure, digest)
		}
		if err != nil {
			return nil, i.refuse(err, req.Spec().Procedure, req.Peer().Addr)
		}
		return next(ctx, req)
	}
}

func (i requireAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i requireAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := i.a.verify(conn.RequestHeader(), i.self, conn.Spec().Procedure, nil); err != nil {
			return i.refuse(err, conn.Spec().Procedure, conn.Peer().Addr)
		}
		return next(ctx, conn)
	}
}

// refuse returns the error to answer a refused call with. A credential
// made with the cluster key but expired, replayed or for another node
// means a node's clock is off or someone replays captured traffic: that
// is logged, at most once a clock window.
func (i requireAuth) refuse(err error, procedure, peer string) error {
	if err != errUnauthenticated && i.a.warnNow() {
		i.log.Warn("refused an internal RPC", "procedure", procedure, "peer", peer, "reason", err)
	}
	return err
}

// notLeader is the answer of a node that does not lead partition p.
func (s *rpcServer) notLeader(p uint32) *clusterv1.NotLeader {
	id := s.n.knownLeader(p)
	return &clusterv1.NotLeader{LeaderId: id, LeaderHttp: s.n.peers.advertisedHTTP(id)}
}

func (s *rpcServer) metaNotLeader() *clusterv1.NotLeader {
	id, _ := s.n.meta.Leader()
	return &clusterv1.NotLeader{LeaderId: id, LeaderHttp: s.n.peers.advertisedHTTP(id)}
}

func (s *rpcServer) Hello(_ context.Context, req *clusterv1.HelloRequest) (*clusterv1.HelloResponse, error) {
	s.n.noteHeard(req.GetNode())
	known, _ := s.n.knownNodes()
	s.n.mu.Lock()
	joined := s.n.joined
	s.n.mu.Unlock()
	you, _ := s.n.node(s.n.meta.State(), req.GetNode().GetId())
	return &clusterv1.HelloResponse{Node: s.n.self(), Known: known, Bootstrapped: joined,
		ClusterId: s.n.meta.State().GetClusterId(), You: you}, nil
}

func (s *rpcServer) Join(ctx context.Context, req *clusterv1.JoinRequest) (*clusterv1.JoinResponse, error) {
	if !s.n.meta.IsLeader() {
		return &clusterv1.JoinResponse{NotLeader: s.metaNotLeader()}, nil
	}
	if req.GetNode().GetId() == "" || req.GetNode().GetRaftAddr() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("join: node id and raft address are required"))
	}
	st, err := s.n.admit(ctx, req.GetNode())
	if errors.Is(err, meta.ErrNotLeader) {
		return &clusterv1.JoinResponse{NotLeader: s.metaNotLeader()}, nil
	}
	if errors.Is(err, storage.ErrFailedPrecondition) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(errorMessage(err)))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return &clusterv1.JoinResponse{State: st}, nil
}

func (s *rpcServer) MetaPropose(ctx context.Context, req *clusterv1.MetaProposeRequest) (*clusterv1.MetaProposeResponse, error) {
	if !s.n.meta.IsLeader() {
		return &clusterv1.MetaProposeResponse{NotLeader: s.metaNotLeader()}, nil
	}
	st, err := s.n.meta.Propose(ctx, req.GetCommand())
	if w, ok := toWire(err); ok {
		return &clusterv1.MetaProposeResponse{Error: w}, nil
	}
	if errors.Is(err, meta.ErrNotLeader) {
		return &clusterv1.MetaProposeResponse{NotLeader: s.metaNotLeader()}, nil
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return &clusterv1.MetaProposeResponse{State: st}, nil
}

func (s *rpcServer) Apply(ctx context.Context, req *clusterv1.ApplyRequest) (*clusterv1.ApplyResponse, error) {
	res, err := s.n.applyHere(ctx, req)
	return s.applyResponse(res, err), nil
}

// applyResponse puts the outcome of a forwarded command on the wire.
func (s *rpcServer) applyResponse(res *storage.Result, err error) *clusterv1.ApplyResponse {
	if err == nil {
		return &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_Ok{Ok: resultToWire(res)}}
	}
	if w, ok := toWire(err); ok {
		return &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_Error{Error: w}}
	}
	var nle *partition.NotLeaderError
	var nse *NoSpaceError
	switch {
	case errors.As(err, &nse):
		return noSpaceToWire(nse)
	case errors.As(err, &nle):
		return &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_NotLeader{NotLeader: &clusterv1.NotLeader{
			LeaderId: nle.LeaderID, LeaderHttp: s.n.peers.advertisedHTTP(nle.LeaderID)}}}
	case errors.Is(err, partition.ErrIndeterminate):
		return &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_Failed{Failed: &clusterv1.Outcome{
			MaybeApplied: true, Reason: err.Error()}}}
	default: // ErrNotApplied, ErrClosed: nothing was proposed
		return &clusterv1.ApplyResponse{Result: &clusterv1.ApplyResponse_Failed{Failed: &clusterv1.Outcome{
			Reason: err.Error()}}}
	}
}

func (s *rpcServer) Read(ctx context.Context, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	resp, err := s.n.readHere(ctx, req)
	if err == nil {
		return resp, nil
	}
	if w, ok := toWire(err); ok {
		return &clusterv1.ReadResponse{Result: &clusterv1.ReadResponse_Error{Error: w}}, nil
	}
	var nle *partition.NotLeaderError
	switch {
	case errors.As(err, &nle):
		return &clusterv1.ReadResponse{Result: &clusterv1.ReadResponse_NotLeader{NotLeader: &clusterv1.NotLeader{
			LeaderId: nle.LeaderID, LeaderHttp: s.n.peers.advertisedHTTP(nle.LeaderID)}}}, nil
	case errors.Is(err, partition.ErrTooStale):
		return &clusterv1.ReadResponse{Result: &clusterv1.ReadResponse_TooStale{TooStale: true}}, nil
	}
	return nil, connect.NewError(connect.CodeUnavailable, err)
}

// applyHere applies a forwarded command on this node's replica of its
// partition, or, for a relayed command that this node does not lead,
// forwards it once to the leader it knows.
func (n *Node) applyHere(ctx context.Context, req *clusterv1.ApplyRequest) (*storage.Result, error) {
	p := req.GetPartition()
	r := n.Replica(p)
	if req.GetRelay() && (r == nil || !r.IsLeader()) {
		leader := n.knownLeader(p)
		if leader == "" || leader == n.cfg.NodeID {
			return nil, &partition.NotLeaderError{Partition: p}
		}
		return n.applyRemote(ctx, leader, &clusterv1.ApplyRequest{Partition: p, Command: req.GetCommand()})
	}
	if r == nil {
		return nil, &partition.NotLeaderError{Partition: p, LeaderID: n.knownLeader(p)}
	}
	return n.propose(ctx, r, req.GetCommand())
}

// readHere serves a forwarded read from this node's replica, or, for a
// relayed read that this node cannot serve, forwards it once to the
// leader it knows.
func (n *Node) readHere(ctx context.Context, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	p := req.GetPartition()
	r := n.Replica(p)
	if req.GetRelay() && (r == nil || !r.IsLeader()) && (!req.GetStale() || r == nil || !n.servesStale(r)) {
		leader := n.knownLeader(p)
		if leader == "" || leader == n.cfg.NodeID {
			return nil, &partition.NotLeaderError{Partition: p}
		}
		fwd := proto.CloneOf(req)
		fwd.Relay = false
		return n.readRemote(ctx, leader, fwd)
	}
	if r == nil {
		return nil, &partition.NotLeaderError{Partition: p, LeaderID: n.knownLeader(p)}
	}
	return n.readLocal(ctx, r, req)
}

// execRead runs a read request against a local replica.
func execRead(ctx context.Context, r *partition.Partition, req *clusterv1.ReadRequest) (*clusterv1.ReadResponse, error) {
	c := storage.Caller{User: req.GetCaller().GetUser(), Admin: req.GetCaller().GetAdmin()}
	resp := &clusterv1.ReadResponse{}
	err := r.Read(ctx, req.GetStale(), func(rd *storage.Reader) error {
		switch q := req.GetQuery().(type) {
		case *clusterv1.ReadRequest_GetChannel:
			ch, member, err := rd.Channel(c, q.GetChannel.GetChannelId())
			if err != nil {
				return err
			}
			resp.Result = &clusterv1.ReadResponse_GetChannel{GetChannel: &heraldv1.GetChannelResponse{Channel: ch, IsMember: member}}
		case *clusterv1.ReadRequest_History:
			h, err := rd.History(c, q.History)
			if err != nil {
				return err
			}
			resp.Result = &clusterv1.ReadResponse_History{History: h}
		case *clusterv1.ReadRequest_Thread:
			t, err := rd.Thread(c, q.Thread)
			if err != nil {
				return err
			}
			resp.Result = &clusterv1.ReadResponse_Thread{Thread: t}
		case *clusterv1.ReadRequest_ListChannels:
			limit, err := storage.ValidateLimit(q.ListChannels.GetLimit())
			if err != nil {
				return err
			}
			chs, more, err := rd.ListChannels(c, q.ListChannels.GetCursor(), limit, q.ListChannels.GetExcludeArchived())
			if err != nil {
				return err
			}
			resp.Result = &clusterv1.ReadResponse_ListChannels{ListChannels: &clusterv1.ListChannelsPage{Channels: chs, More: more}}
		case *clusterv1.ReadRequest_Events:
			limit := int(min(max(q.Events.GetLimit(), 1), storage.MaxPageSize))
			evs, head, oldest, err := rd.Events(q.Events.GetChannelId(), q.Events.GetAfterSeq(), limit)
			if err != nil {
				return err
			}
			resp.Result = &clusterv1.ReadResponse_Events{Events: &clusterv1.EventsResponse{
				Events: evs, HeadSeq: head, OldestSeq: oldest}}
		default:
			return &storage.Error{Kind: storage.ErrInvalidArgument, Msg: "read request has no query"}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *rpcServer) Watch(ctx context.Context, req *clusterv1.WatchRequest, stream *connect.ServerStream[clusterv1.WatchResponse]) error {
	r := s.n.Replica(req.GetPartition())
	if r == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"node %s holds no replica of partition %d", s.n.cfg.NodeID, req.GetPartition()))
	}
	if err := s.n.leaderCursorAhead(ctx, r, req.GetChannelId(), req.GetAfterSeq()); err != nil {
		return watchError(err)
	}
	// A replica that is not current would serve late or never: the
	// watcher reads from another (watchStream), told so now or when this
	// one stops being current.
	lapsed, ok := s.n.cur.lease(r.ID(), r, 0)
	if !ok {
		return s.notCurrent(r)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(lapsed, cancel)()
	w := r.Feed().Watch(req.GetChannelId(), req.GetAfterSeq())
	defer w.Close()
	for {
		evs, err := w.Next(wctx, watchBatch)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case lapsed.Err() != nil:
				return s.notCurrent(r)
			}
			return watchError(err)
		}
		if err := stream.Send(&clusterv1.WatchResponse{Events: evs}); err != nil {
			return nil
		}
	}
}

// notCurrent is Watch's answer from a replica that is not current.
func (s *rpcServer) notCurrent(r *partition.Partition) error {
	err := s.n.current(r)
	if err == nil {
		err = fmt.Errorf("%w: partition %d stopped being current", partition.ErrNotCurrent, r.ID())
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

func (s *rpcServer) Signal(_ context.Context, req *clusterv1.SignalRequest) (*clusterv1.SignalResponse, error) {
	if err := s.n.sig.receive(req); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	return &clusterv1.SignalResponse{}, nil
}

func (s *rpcServer) NodeStatus(context.Context, *clusterv1.NodeStatusRequest) (*clusterv1.NodeStatusResponse, error) {
	return s.n.localStatus(), nil
}

func (s *rpcServer) ReplicaOp(ctx context.Context, req *clusterv1.ReplicaOpRequest) (*clusterv1.ReplicaOpResponse, error) {
	return s.n.replicaOp(ctx, req)
}

// watchError carries a stream's domain error over the wire, as a
// DomainError detail and in its code: out_of_range for a cursor past the
// retained events or the head, not_found for a missing channel.
func watchError(err error) error {
	switch {
	case errors.Is(err, storage.ErrCursorExpired), errors.Is(err, storage.ErrCursorAhead):
		return withDomainDetail(connect.CodeOutOfRange, err)
	case errors.Is(err, storage.ErrNotFound):
		return withDomainDetail(connect.CodeNotFound, err)
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

// leaderCursorAhead returns an ErrCursorAhead error when r leads its
// partition and the channel's head, read linearizably, is below after:
// the events up to the cursor were committed once, so they are gone (a
// partition recovered from a replica that lacked them, or a restored
// snapshot), and waiting would hand the stream other events under seqs it
// has delivered. A stream re-opened after its source failed comes here,
// to the leader. When the read cannot be made as the leader it returns
// nil, and the stream waits as usual.
func (n *Node) leaderCursorAhead(ctx context.Context, r *partition.Partition, channel string, after uint64) error {
	if after == 0 || !r.IsLeader() {
		return nil
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	var head uint64
	err := r.Read(ctx, false, func(rd *storage.Reader) error {
		var err error
		_, head, _, err = rd.Events(channel, math.MaxUint64, 0)
		return err
	})
	if err != nil || head >= after {
		return nil
	}
	return &storage.Error{Kind: storage.ErrCursorAhead, Msg: fmt.Sprintf(
		"channel %q ends at seq %d, before the last event delivered (%d): the events after %d were lost "+
			"or replaced (a recovered partition or a restored snapshot); subscribe again from the channel's head",
		channel, head, after, head)}
}
