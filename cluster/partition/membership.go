package partition

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/future"
)

// Member is one server of the replica's Raft configuration.
type Member struct {
	ID    string
	Voter bool
}

// Configuration is the replica's latest Raft configuration, which may
// include a change not yet committed, and the log index it was set at:
// membership changes are conditional on it.
type Configuration struct {
	Index   uint64
	Members []Member
}

// Has reports whether id is in the configuration, and whether as a voter.
func (c Configuration) Has(id string) (in, voter bool) {
	for _, m := range c.Members {
		if m.ID == id {
			return true, m.Voter
		}
	}
	return false, false
}

// Configuration returns the replica's latest Raft configuration. It returns
// ErrClosed once the replica has shut down.
func (p *Partition) Configuration() (Configuration, error) {
	f := p.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return Configuration{}, ErrClosed
		}
		return Configuration{}, fmt.Errorf("partition %d: configuration: %w", p.cfg.ID, err)
	}
	c := Configuration{Index: f.Index()}
	for _, s := range f.Configuration().Servers {
		c.Members = append(c.Members, Member{ID: string(s.ID), Voter: s.Suffrage == raft.Voter})
	}
	return c, nil
}

// Leader returns the id of the leader this replica knows (itself if it
// leads), or "".
func (p *Partition) Leader() string {
	_, id := p.raft.LeaderWithID()
	return string(id)
}

// Removed reports whether Raft has shut the replica down, as it does to a
// replica removed from its group (or after Close).
func (p *Partition) Removed() bool { return p.raft.State() == raft.Shutdown }

// AddNonvoter adds a replica that receives the log but does not vote, if
// the configuration is still the one at prevIndex. Leader only; the
// membership methods return once the change is committed, or an error:
// *NotLeaderError, or the change failed (it may still commit if the error
// says the leadership was lost).
func (p *Partition) AddNonvoter(ctx context.Context, id, addr string, prevIndex uint64) error {
	return p.change(ctx, func(d time.Duration) raft.IndexFuture {
		return p.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), prevIndex, d)
	})
}

// AddVoter adds a voter, or promotes a non-voter, if the configuration is
// still the one at prevIndex. See AddNonvoter.
func (p *Partition) AddVoter(ctx context.Context, id, addr string, prevIndex uint64) error {
	return p.change(ctx, func(d time.Duration) raft.IndexFuture {
		return p.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), prevIndex, d)
	})
}

// RemoveServer removes a replica from the group, if the configuration is
// still the one at prevIndex. A leader that removes itself steps down. See
// AddNonvoter.
func (p *Partition) RemoveServer(ctx context.Context, id string, prevIndex uint64) error {
	return p.change(ctx, func(d time.Duration) raft.IndexFuture {
		return p.raft.RemoveServer(raft.ServerID(id), prevIndex, d)
	})
}

func (p *Partition) change(ctx context.Context, start func(time.Duration) raft.IndexFuture) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !p.IsLeader() {
		return p.notLeader()
	}
	err := future.Wait(ctx, start(future.EnqueueTimeout(ctx)))
	if errors.Is(err, raft.ErrNotLeader) {
		return p.notLeader()
	}
	return err
}

// TransferLeadership hands the leadership to the replica id at addr, or,
// with id "", to the most up-to-date other voter, and waits until the
// transfer is done or failed. Leader only.
func (p *Partition) TransferLeadership(ctx context.Context, id, addr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !p.IsLeader() {
		return p.notLeader()
	}
	var f raft.Future
	if id == "" {
		f = p.raft.LeadershipTransfer()
	} else {
		f = p.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	err := future.Wait(ctx, f)
	if errors.Is(err, raft.ErrNotLeader) {
		return p.notLeader()
	}
	return err
}

// Snapshot makes the replica take a snapshot now, and waits for it.
func (p *Partition) Snapshot(ctx context.Context) error {
	return future.Wait(ctx, p.raft.Snapshot())
}

// LastSnapshotIndex returns the index of the replica's latest snapshot, or
// 0 before the first.
func (p *Partition) LastSnapshotIndex() uint64 {
	var index uint64
	_, _ = fmt.Sscan(p.raft.Stats()["last_snapshot_index"], &index) // 0 if absent
	return index
}
