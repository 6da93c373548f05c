package gateway

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// Admin is what the gateway needs from the cluster to serve
// herald.v1.AdminService. *cluster.Node implements it.
type Admin interface {
	GetRing(ctx context.Context) (*heraldv1.GetRingResponse, error)
	LookupChannel(ctx context.Context, channel string) (*heraldv1.LookupChannelResponse, error)
	ListNodes(ctx context.Context) (*heraldv1.ListNodesResponse, error)
	DrainNode(ctx context.Context, id string) (*heraldv1.Node, error)
	RemoveNode(ctx context.Context, id string) (*heraldv1.RemoveNodeResponse, error)
	TransferLeadership(ctx context.Context, partition uint32, id string) (*heraldv1.Partition, error)
	Rebalance(ctx context.Context) (uint32, error)
	ReplicaDigest(ctx context.Context, partition uint32, id string) (*heraldv1.GetReplicaDigestResponse, error)
	CompactLog(ctx context.Context, partition uint32, id string) (*heraldv1.CompactLogResponse, error)
	RecoverPartition(ctx context.Context, partition uint32, from string) (*heraldv1.Partition, error)
	SaveSnapshot(ctx context.Context, partition uint32, w io.Writer) (uint64, error)
	RestoreSnapshot(ctx context.Context, partition uint32, r io.Reader) (uint64, error)
}

// snapshotChunk is the size of one streamed snapshot message.
const snapshotChunk = 1 << 20

// adminService implements herald.v1.AdminService. Every method needs an
// admin caller.
type adminService struct {
	s *Server
	a Admin
}

func (h *adminService) check(ctx context.Context) error {
	if !h.s.caller(ctx).Admin {
		return connect.NewError(connect.CodePermissionDenied, errors.New("the admin API needs an admin token"))
	}
	return nil
}

func (h *adminService) GetRing(ctx context.Context, _ *heraldv1.GetRingRequest) (*heraldv1.GetRingResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	resp, err := h.a.GetRing(ctx)
	return resp, h.err(err)
}

func (h *adminService) LookupChannel(ctx context.Context, req *heraldv1.LookupChannelRequest) (*heraldv1.LookupChannelResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	resp, err := h.a.LookupChannel(ctx, req.GetChannelId())
	return resp, h.err(err)
}

func (h *adminService) ListNodes(ctx context.Context, _ *heraldv1.ListNodesRequest) (*heraldv1.ListNodesResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	resp, err := h.a.ListNodes(ctx)
	return resp, h.err(err)
}

func (h *adminService) DrainNode(ctx context.Context, req *heraldv1.DrainNodeRequest) (*heraldv1.DrainNodeResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	node, err := h.a.DrainNode(ctx, req.GetNodeId())
	if err != nil {
		return nil, h.err(err)
	}
	return &heraldv1.DrainNodeResponse{Node: node}, nil
}

func (h *adminService) RemoveNode(ctx context.Context, req *heraldv1.RemoveNodeRequest) (*heraldv1.RemoveNodeResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	resp, err := h.a.RemoveNode(ctx, req.GetNodeId())
	if err != nil {
		return nil, h.err(err)
	}
	return resp, nil
}

func (h *adminService) TransferLeadership(ctx context.Context, req *heraldv1.TransferLeadershipRequest) (*heraldv1.TransferLeadershipResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	p, err := h.a.TransferLeadership(ctx, req.GetPartition(), req.GetNodeId())
	if err != nil {
		return nil, h.err(err)
	}
	return &heraldv1.TransferLeadershipResponse{Partition: p}, nil
}

func (h *adminService) Rebalance(ctx context.Context, _ *heraldv1.RebalanceRequest) (*heraldv1.RebalanceResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	moves, err := h.a.Rebalance(ctx)
	if err != nil {
		return nil, h.err(err)
	}
	return &heraldv1.RebalanceResponse{Moves: moves}, nil
}

func (h *adminService) GetReplicaDigest(ctx context.Context, req *heraldv1.GetReplicaDigestRequest) (*heraldv1.GetReplicaDigestResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	resp, err := h.a.ReplicaDigest(ctx, req.GetPartition(), req.GetNodeId())
	return resp, h.err(err)
}

func (h *adminService) CompactLog(ctx context.Context, req *heraldv1.CompactLogRequest) (*heraldv1.CompactLogResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	resp, err := h.a.CompactLog(ctx, req.GetPartition(), req.GetNodeId())
	return resp, h.err(err)
}

func (h *adminService) RecoverPartition(ctx context.Context, req *heraldv1.RecoverPartitionRequest) (*heraldv1.RecoverPartitionResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	p, err := h.a.RecoverPartition(ctx, req.GetPartition(), req.GetFromNodeId())
	if err != nil {
		return nil, h.err(err)
	}
	return &heraldv1.RecoverPartitionResponse{Partition: p}, nil
}

func (h *adminService) SaveSnapshot(ctx context.Context, req *heraldv1.SaveSnapshotRequest, stream *connect.ServerStream[heraldv1.SaveSnapshotResponse]) error {
	if err := h.check(ctx); err != nil {
		return err
	}
	w := &snapshotWriter{stream: stream, partition: req.GetPartition()}
	index, err := h.a.SaveSnapshot(ctx, req.GetPartition(), w)
	if err != nil {
		return h.err(err)
	}
	w.index = index
	return w.flush()
}

// snapshotWriter streams what is written to it in chunks; the last
// message, sent by flush, carries the applied index.
type snapshotWriter struct {
	stream    *connect.ServerStream[heraldv1.SaveSnapshotResponse]
	partition uint32
	index     uint64
	buf       []byte
}

func (w *snapshotWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for len(w.buf) > snapshotChunk {
		if err := w.stream.Send(&heraldv1.SaveSnapshotResponse{Partition: w.partition, Data: w.buf[:snapshotChunk]}); err != nil {
			return 0, err
		}
		w.buf = w.buf[snapshotChunk:]
	}
	return len(b), nil
}

func (w *snapshotWriter) flush() error {
	return w.stream.Send(&heraldv1.SaveSnapshotResponse{Partition: w.partition, AppliedIndex: w.index, Data: w.buf})
}

func (h *adminService) RestoreSnapshot(ctx context.Context, stream *connect.ClientStream[heraldv1.RestoreSnapshotRequest]) (*heraldv1.RestoreSnapshotResponse, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, invalid("restore: the stream is empty; send the snapshot SaveSnapshot wrote")
	}
	p := stream.Msg().GetPartition()
	pr, pw := io.Pipe()
	go func() { // feeds the pipe from the request stream; ends with it
		if _, err := pw.Write(stream.Msg().GetData()); err != nil {
			return
		}
		for stream.Receive() {
			if _, err := pw.Write(stream.Msg().GetData()); err != nil {
				return
			}
		}
		pw.CloseWithError(stream.Err())
	}()
	index, err := h.a.RestoreSnapshot(ctx, p, pr)
	_ = pr.CloseWithError(io.ErrClosedPipe) // unblocks the feeder if the restore stopped early
	if err != nil {
		return nil, h.err(err)
	}
	return &heraldv1.RestoreSnapshotResponse{Partition: p, AppliedIndex: index}, nil
}

func (h *adminService) err(err error) error {
	if err == nil {
		return nil
	}
	return connectError(h.s.log, err)
}
