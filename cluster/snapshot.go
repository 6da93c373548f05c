package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
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
			index, err = writeSnapshot(ctx, r, w)
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

// writeSnapshot writes a local replica's snapshot to w, from a copy on
// disk (storage.DB.SaveSnapshot): however slowly w takes it, the state
// file is not held. It stops when ctx ends.
func writeSnapshot(ctx context.Context, r *partition.Partition, w io.Writer) (uint64, error) {
	f, err := r.DB().SaveSnapshot()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	index, _ := f.Index()
	return index, copyContext(ctx, w, f)
}

// copyContext copies r to w in snapshot chunks until EOF, checking ctx
// before each chunk.
func copyContext(ctx context.Context, w io.Writer, r io.Reader) error {
	buf := make([]byte, snapshotChunk)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := io.ReadFull(r, buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF, rerr == io.ErrUnexpectedEOF:
			return nil
		case rerr != nil:
			return rerr
		}
	}
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

func (s *rpcServer) Snapshot(ctx context.Context, req *clusterv1.SnapshotRequest, stream *connect.ServerStream[clusterv1.SnapshotResponse]) error {
	r := s.n.Replica(req.GetPartition())
	if r == nil || !r.IsLeader() {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"node %s does not lead partition %d", s.n.cfg.NodeID, req.GetPartition()))
	}
	f, err := r.DB().SaveSnapshot()
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer f.Close()
	index, _ := f.Index()
	cw := &chunkWriter{stream: stream, index: index}
	if err := copyContext(ctx, cw, f); err != nil {
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
// partition count: whatever the partition held before is replaced. Writes
// to the partition are refused as not applied while it runs (the router
// retries them until it is over). It returns the applied index the
// restored state records (placed past the partition's own log) once every
// replica of the group has that state, and fails with an error saying
// which replica differs if one does not get there.
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
			index, err = n.restoreLocal(ctx, rep, f)
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
// replica (partition.RestoreUserSnapshot: proposals held off, the snapshot
// placed at the index raft gives it, installed on every replica) and
// reports success only once every replica of the group has it.
func (n *Node) restoreLocal(ctx context.Context, r *partition.Partition, f *os.File) (uint64, error) {
	return r.RestoreUserSnapshot(ctx, f, func(ctx context.Context, index uint64, servers []string) error {
		return n.confirmRestore(ctx, r.ID(), index, servers)
	})
}

// restoreConfirmWait bounds how long a restore waits for every replica to
// install the snapshot, and restoreSilenceWait how long for a replica that
// does not answer at all (its node is down or cut off).
const (
	restoreConfirmWait = time.Minute
	restoreSilenceWait = 3 * time.Second
)

// confirmRestore waits until every replica of partition p in servers has
// applied the snapshot restored at index: all at one applied index, at
// least index, with one digest. Proposals are held off meanwhile, so only a
// membership change can move them past index. It fails with a
// failed-precondition error naming a replica that differs when that does
// not happen within restoreConfirmWait, or that did not answer for
// restoreSilenceWait.
func (n *Node) confirmRestore(ctx context.Context, p uint32, index uint64, servers []string) error {
	ctx, cancel := context.WithTimeout(ctx, restoreConfirmWait)
	defer cancel()
	begin := time.Now()
	var silentSince time.Time
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		differs, silent := n.restoreDiffers(ctx, p, index, servers)
		switch {
		case differs == "":
			n.log.Info("restored snapshot confirmed on every replica", "partition", p, "index", index,
				"replicas", len(servers), "took", time.Since(begin).Round(time.Millisecond))
			return nil
		case !silent:
			silentSince = time.Time{}
		case silentSince.IsZero():
			silentSince = time.Now()
		}
		failed := preconditionf("partition %d was restored at index %d, but %s; check `herald admin digest %d` "+
			"and restore again once every replica is up", p, index, differs, p)
		if silent && time.Since(silentSince) > restoreSilenceWait {
			return failed
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return failed
		case <-t.C:
		}
	}
}

// restoreDiffers returns "" when every replica in servers reports the
// same applied index, at least index, and the same digest; else what
// differs, and whether that is a replica that did not answer.
func (n *Node) restoreDiffers(ctx context.Context, p uint32, index uint64, servers []string) (string, bool) {
	var first *heraldv1.GetReplicaDigestResponse
	for _, id := range servers {
		d, err := n.ReplicaDigest(ctx, p, id)
		switch {
		case err != nil:
			return fmt.Sprintf("replica %s did not answer: %v", id, err), true
		case d.GetAppliedIndex() < index:
			return fmt.Sprintf("replica %s is at index %d", id, d.GetAppliedIndex()), false
		case first == nil:
			first = d
		case d.GetAppliedIndex() != first.GetAppliedIndex() || !bytes.Equal(d.GetSha256(), first.GetSha256()):
			return fmt.Sprintf("replica %s is at index %d with digest %x, replica %s at %d with %x", id,
				d.GetAppliedIndex(), d.GetSha256()[:min(8, len(d.GetSha256()))], first.GetNodeId(),
				first.GetAppliedIndex(), first.GetSha256()[:min(8, len(first.GetSha256()))]), false
		}
	}
	return "", false
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
	index, err := s.n.restoreLocal(ctx, r, f)
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
