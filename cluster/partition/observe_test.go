package partition_test

import (
	"context"
	"sync"
	"testing"

	"github.com/heraldhq/herald/cluster/partition"
)

// recorder is an Observer and a Counter that keeps what it was given.
type recorder struct {
	mu    sync.Mutex
	vals  []float64
	count int
}

func (r *recorder) Observe(s float64) {
	r.mu.Lock()
	r.vals = append(r.vals, s)
	r.mu.Unlock()
}

func (r *recorder) Inc() {
	r.mu.Lock()
	r.count++
	r.mu.Unlock()
}

func (r *recorder) observed() (n int, total float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.vals {
		total += v
	}
	return len(r.vals), total
}

func (r *recorder) counted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// A replica measures its apply batches, its snapshots and the leader
// changes it sees, for metrics.
func TestObservers(t *testing.T) {
	type obs struct{ apply, snap, leader recorder }
	byNode := map[string]*obs{}
	var mu sync.Mutex
	g := newGroup(t, 3, func(c *partition.Config) {
		o := &obs{}
		mu.Lock()
		byNode[c.NodeID] = o
		mu.Unlock()
		c.Observe = partition.Observers{Apply: &o.apply, Snapshot: &o.snap, LeaderChange: &o.leader}
	})
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	postN(t, leader.p, "general", "m", 5)
	g.waitConverged()
	for id, o := range byNode {
		if n, total := o.apply.observed(); n == 0 || total <= 0 {
			t.Errorf("%s: %d apply batches observed taking %v s, want some", id, n, total)
		}
		if c := o.leader.counted(); c < 1 {
			t.Errorf("%s: saw %d leader changes, want the first election", id, c)
		}
		if n, _ := o.snap.observed(); n != 0 {
			t.Errorf("%s: %d snapshots observed before any was taken", id, n)
		}
	}
	lo := byNode[leader.id]
	before := lo.leader.counted()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := leader.p.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if n, total := lo.snap.observed(); n != 1 || total <= 0 {
		t.Errorf("leader: %d snapshots observed taking %v s, want 1", n, total)
	}
	if err := leader.p.TransferLeadership(ctx, "", ""); err != nil {
		t.Fatal(err)
	}
	next := g.waitLeader()
	propose(t, next.p, createCmd("random"))
	if c := lo.leader.counted(); c <= before {
		t.Errorf("old leader saw %d leader changes after a transfer, %d before", c, before)
	}
}
