package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// snapshotChunk is the size of one streamed snapshot message.
const snapshotChunk = 1 << 20

// SaveSnapshot writes a snapshot of partition p's state to w, taken on the
// partition's leader (here, or streamed from its node). It returns the
// snapshot's applied index.
func (n *Node) SaveSnapshot(ctx context.Context, p uint32, w io.Writer) (uint64, error) {
	st, err := n.requireMeta()
	if err != nil {
		return 0, err
	}
	if p >= st.GetPartitions() {
		return 0, notFoundf("partition %d does not exist; the cluster has %d", p, st.GetPartitions())
	}
	var index uint64
	err = n.routeAny(ctx, p, true, func(target string) error {
		if r := n.Replica(p); target == n.cfg.NodeID && r != nil {
			if !r.IsLeader() {
				return &partition.NotLeaderError{Partition: p}
			}
			var err error
			index, err = writeSnapshot(r, w)
			return err
		}
		c, err := n.peers.to(target)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
		stream, err := c.Snapshot(ctx, &clusterv1.SnapshotRequest{Partition: p})
		if err != nil {
			return rpcOutcome(err)
		}
		defer stream.Close()
		first := true
		for stream.Receive() {
			if first {
				index, first = stream.Msg().GetAppliedIndex(), false
			}
			if _, err := w.Write(stream.Msg().GetData()); err != nil {
				return err
			}
		}
		if err := stream.Err(); err != nil {
			if first && connect.CodeOf(err) == connect.CodeFailedPrecondition {
				return &partition.NotLeaderError{Partition: p} // nothing written yet: try the leader
			}
			return err
		}
		return nil
	})
	return index, err
}

// writeSnapshot writes a local replica's snapshot to w.
func writeSnapshot(r *partition.Partition, w io.Writer) (uint64, error) {
	s, err := r.DB().Snapshot()
	if err != nil {
		return 0, err
	}
	defer s.Release()
	index, _ := s.Index()
	_, err = s.WriteTo(w)
	return index, err
}

// chunkWriter sends what is written to it as SnapshotResponse messages.
type chunkWriter struct {
	stream *connect.ServerStream[clusterv1.SnapshotResponse]
	index  uint64
	buf    []byte
}

func (c *chunkWriter) Write(b []byte) (int, error) {
	c.buf = append(c.buf, b...)
	for len(c.buf) >= snapshotChunk {
		if err := c.flush(snapshotChunk); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (c *chunkWriter) flush(n int) error {
	err := c.stream.Send(&clusterv1.SnapshotResponse{AppliedIndex: c.index, Data: c.buf[:n]})
	c.buf = c.buf[n:]
	return err
}

func (s *rpcServer) Snapshot(_ context.Context, req *clusterv1.SnapshotRequest, stream *connect.ServerStream[clusterv1.SnapshotResponse]) error {
	r := s.n.Replica(req.GetPartition())
	if r == nil || !r.IsLeader() {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"node %s does not lead partition %d", s.n.cfg.NodeID, req.GetPartition()))
	}
	snap, err := r.DB().Snapshot()
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer snap.Release()
	index, _ := snap.Index()
	cw := &chunkWriter{stream: stream, index: index}
	if _, err := snap.WriteTo(cw); err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	if len(cw.buf) > 0 {
		return cw.flush(len(cw.buf))
	}
	return nil
}

// RestoreSnapshot replaces partition p's state with a snapshot that
// SaveSnapshot wrote, on every replica (through the leader's Raft log, as
// a user snapshot). It is meant for a fresh cluster with the same
// partition count: whatever the partition held before is replaced. It
// returns the applied index the restored state records (rebased past the
// partition's own log).
func (n *Node) RestoreSnapshot(ctx context.Context, p uint32, r io.Reader) (uint64, error) {
	st, err := n.requireMeta()
	if err != nil {
		return 0, err
	}
	if p >= st.GetPartitions() {
		return 0, notFoundf("partition %d does not exist; the cluster has %d", p, st.GetPartitions())
	}
	f, err := spool(r)
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, _, err := storage.VerifySnapshot(f); err != nil {
		return 0, &storage.Error{Kind: storage.ErrInvalidArgument, Msg: err.Error()}
	}
	var index uint64
	err = n.routeAny(ctx, p, false, func(target string) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if rep := n.Replica(p); target == n.cfg.NodeID && rep != nil {
			var err error
			index, err = restoreLocal(ctx, rep, f)
			return err
		}
		c, err := n.peers.to(target)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
		stream, err := c.Restore(ctx)
		if err != nil {
			return rpcOutcome(err)
		}
		buf := make([]byte, snapshotChunk)
		for {
			k, rerr := f.Read(buf)
			if k > 0 {
				if err := stream.Send(&clusterv1.RestoreRequest{Partition: p, Data: buf[:k]}); err != nil {
					break // the answer says why
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return rerr
			}
		}
		resp, err := stream.CloseAndReceive()
		if err != nil {
			return rpcOutcome(err)
		}
		switch {
		case resp.GetError() != nil:
			return domainError(resp.GetError())
		case resp.GetNotLeader() != nil:
			return &partition.NotLeaderError{Partition: p, LeaderID: resp.GetNotLeader().GetLeaderId()}
		}
		index = resp.GetAppliedIndex()
		return nil
	})
	return index, err
}

// spool copies a snapshot stream to a temporary file.
func spool(r io.Reader) (*os.File, error) {
	f, err := os.CreateTemp("", "herald-restore-*")
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

// restoreLocal restores a verified snapshot file through a local leader
// replica. The snapshot is first rebased past the partition's applied
// index, so that it replaces the state on every replica and the log's next
// entries are never taken as already applied; raft.Restore then stores it
// as a snapshot past the log, applies it here and installs it on every
// follower.
func restoreLocal(ctx context.Context, r *partition.Partition, f *os.File) (uint64, error) {
	if !r.IsLeader() {
		return 0, &partition.NotLeaderError{Partition: r.ID()}
	}
	cur, _, err := r.DB().AppliedIndex()
	if err != nil {
		return 0, err
	}
	rebased, err := os.CreateTemp("", "herald-restore-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(rebased.Name())
	defer rebased.Close()
	index, term, err := storage.RebaseSnapshot(f, rebased, max(cur+1, r.Raft().LastIndex()+1))
	if err != nil {
		return 0, &storage.Error{Kind: storage.ErrInvalidArgument, Msg: err.Error()}
	}
	size, err := rebased.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := rebased.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index, Term: term, Size: size}
	timeout := 5 * time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := r.Raft().Restore(meta, rebased, timeout); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, &partition.NotLeaderError{Partition: r.ID()}
		}
		return 0, fmt.Errorf("restore partition %d: %w", r.ID(), err)
	}
	return index, nil
}

func (s *rpcServer) Restore(ctx context.Context, stream *connect.ClientStream[clusterv1.RestoreRequest]) (*clusterv1.RestoreResponse, error) {
	var p uint32
	pr, pw := io.Pipe()
	go func() { // feeds the pipe from the request stream; ends with it
		first := true
		for stream.Receive() {
			if first {
				p, first = stream.Msg().GetPartition(), false
			}
			if _, err := pw.Write(stream.Msg().GetData()); err != nil {
				return
			}
		}
		pw.CloseWithError(stream.Err())
	}()
	f, err := spool(pr)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	r := s.n.Replica(p)
	if r == nil {
		return &clusterv1.RestoreResponse{NotLeader: s.notLeader(p)}, nil
	}
	index, err := restoreLocal(ctx, r, f)
	if w, ok := toWire(err); ok {
		return &clusterv1.RestoreResponse{Error: w}, nil
	}
	var nle *partition.NotLeaderError
	if errors.As(err, &nle) {
		return &clusterv1.RestoreResponse{NotLeader: s.notLeader(p)}, nil
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return &clusterv1.RestoreResponse{AppliedIndex: index}, nil
}
