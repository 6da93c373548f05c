package cluster

import (
	"cmp"
	"slices"
	"sync"

	"github.com/heraldhq/herald/cluster/partition"
)

// replicaSet is the registry of a node's partition replicas: the open
// replica of each partition and the placement generation it was made for,
// the partitions whose replica is being recovered or retired (busy: no
// replica is opened for them meanwhile), and which follower replicas have
// caught up with their leader.
//
// It is mutex-guarded, and its methods never block on a replica: callers
// take a replica out and then open, close or ask it.
type replicaSet struct {
	mu       sync.Mutex // guards following
	replicas map[uint32]*replicaEntry
	busy     map[uint32]bool
}

type replicaEntry struct {
	r        *partition.Partition
	gen      uint64
	caughtUp bool // a follower seen within caughtUpLag of its leader's commit index
}

func newReplicaSet() *replicaSet {
	return &replicaSet{replicas: make(map[uint32]*replicaEntry), busy: make(map[uint32]bool)}
}

// get returns partition p's replica, or nil.
func (s *replicaSet) get(p uint32) *partition.Partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.replicas[p]; e != nil {
		return e.r
	}
	return nil
}

// lookup returns p's replica (or nil), its generation, whether it has
// caught up, and whether p is busy.
func (s *replicaSet) lookup(p uint32) (r *partition.Partition, gen uint64, caughtUp, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.replicas[p]; e != nil {
		r, gen, caughtUp = e.r, e.gen, e.caughtUp
	}
	return r, gen, caughtUp, s.busy[p]
}

// all returns every replica, by partition.
func (s *replicaSet) all() []*partition.Partition {
	s.mu.Lock()
	out := make([]*partition.Partition, 0, len(s.replicas))
	for _, e := range s.replicas {
		out = append(out, e.r)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *partition.Partition) int { return cmp.Compare(a.ID(), b.ID()) })
	return out
}

// leading returns the replicas that believe they lead, by partition.
func (s *replicaSet) leading() []*partition.Partition {
	return slices.DeleteFunc(s.all(), func(r *partition.Partition) bool { return !r.IsLeader() })
}

// add registers r as p's replica of generation gen.
func (s *replicaSet) add(p uint32, r *partition.Partition, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas[p] = &replicaEntry{r: r, gen: gen}
}

// take unregisters p's replica and marks p busy, if r is still p's replica
// (any replica if r is nil) and p is not busy already. It returns the
// replica taken, or nil. The caller closes it and calls release.
func (s *replicaSet) take(p uint32, r *partition.Partition) *partition.Partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.replicas[p]
	if e == nil || s.busy[p] || (r != nil && e.r != r) {
		return nil
	}
	delete(s.replicas, p)
	s.busy[p] = true
	return e.r
}

// release ends what take began.
func (s *replicaSet) release(p uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, p)
}

// setCaughtUp records whether p's replica, if it is still r, has caught
// up with its leader.
func (s *replicaSet) setCaughtUp(p uint32, r *partition.Partition, caughtUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.replicas[p]; e != nil && e.r == r {
		e.caughtUp = caughtUp
	}
}
