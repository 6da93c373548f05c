package clustertest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/cluster/check"
	"github.com/heraldhq/herald/cluster/schedule"
)

// nemesis runs a schedule's faults against a cluster with Options.Faults.
// Each fault's links are tracked on their own, so that healing one fault
// leaves the others in force.
//
// It is mutex-guarded; run's goroutines exit once every fault has healed.
type nemesis struct {
	c     *Cluster
	rec   *check.Recorder
	begin time.Time

	mu     sync.Mutex // guards following
	active map[int]links
}

// links are the link faults of one fault.
type links struct {
	cut, stall []pair
	delay      map[pair]time.Duration
}

type pair struct{ from, to string }

// run starts each fault at its offset from begin and heals it after its
// duration, and returns when every fault has healed. A fault waits, past
// its offset, for the faults that were to heal before it started, so
// that a slow restart never leaves more than a minority down.
func (m *nemesis) run(ctx context.Context, s schedule.Schedule) {
	begin := m.begin
	healed := make([]chan struct{}, len(s.Faults))
	var wg sync.WaitGroup
	for i, f := range s.Faults {
		healed[i] = make(chan struct{})
		if !sleepUntil(ctx, begin.Add(f.At)) {
			close(healed[i])
			continue
		}
		for j, g := range s.Faults[:i] {
			if g.End() <= f.At {
				<-healed[j]
			}
		}
		heal := m.start(i, f)
		wg.Go(func() {
			defer close(healed[i])
			sleepUntil(ctx, time.Now().Add(f.For))
			heal()
		})
	}
	wg.Wait()
}

// sleepUntil waits until t, a fault's scheduled time, and reports false
// if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// start puts fault i in force and returns what heals it.
func (m *nemesis) start(i int, f schedule.Fault) (heal func()) {
	ids := m.c.ids()
	others := func(nodes ...string) []string {
		return slices.DeleteFunc(slices.Clone(ids), func(n string) bool { return slices.Contains(nodes, n) })
	}
	var l links
	what := f.String()
	switch f.Kind {
	case schedule.Partition:
		for _, a := range f.Nodes {
			for _, b := range others(f.Nodes...) {
				l.cut = append(l.cut, pair{a, b}, pair{b, a})
			}
		}
	case schedule.IsolateLeader:
		leader := m.c.leaderOf(f.Partition)
		if leader == "" {
			m.note(what + ": partition has no leader now; nothing cut")
			return func() {}
		}
		what += " → " + leader
		for _, b := range others(leader) {
			l.cut = append(l.cut, pair{leader, b}, pair{b, leader})
		}
	case schedule.OneWay:
		l.cut = []pair{{f.Nodes[0], f.Nodes[1]}}
	case schedule.Pause:
		for _, b := range others(f.Nodes[0]) {
			l.stall = append(l.stall, pair{f.Nodes[0], b}, pair{b, f.Nodes[0]})
		}
	case schedule.Slow:
		l.delay = map[pair]time.Duration{}
		for _, b := range others(f.Nodes[0]) {
			l.delay[pair{f.Nodes[0], b}] = f.Delay
			l.delay[pair{b, f.Nodes[0]}] = f.Delay
		}
	case schedule.Kill:
		n := m.c.member(f.Nodes[0])
		if n == nil {
			m.note(what + ": no such node; nothing killed")
			return func() {}
		}
		m.note("start " + what)
		n.Kill()
		return func() {
			n.Restart()
			m.note("healed " + what + ": restarted")
		}
	}
	m.set(i, &l)
	m.note("start " + what)
	return func() {
		m.set(i, nil)
		m.note("healed " + what)
	}
}

// set puts fault i's links in force (l) or heals them (nil), then makes
// the Net match the union of the faults in force.
func (m *nemesis) set(i int, l *links) {
	m.mu.Lock()
	defer m.mu.Unlock()
	before := m.unionLocked()
	if l == nil {
		delete(m.active, i)
	} else {
		m.active[i] = *l
	}
	after := m.unionLocked()
	net := m.c.Net
	for p := range before.cut {
		if !after.cut[p] {
			net.Uncut(p.from, p.to)
		}
	}
	for p := range after.cut {
		if !before.cut[p] {
			net.Cut(p.from, p.to)
		}
	}
	for p := range before.stall {
		if !after.stall[p] {
			net.Unstall(p.from, p.to)
		}
	}
	for p := range after.stall {
		if !before.stall[p] {
			net.Stall(p.from, p.to)
		}
	}
	for p := range before.delay {
		if _, ok := after.delay[p]; !ok {
			net.Delay(p.from, p.to, 0)
		}
	}
	for p, d := range after.delay {
		if before.delay[p] != d {
			net.Delay(p.from, p.to, d)
		}
	}
}

type linkSet struct {
	cut, stall map[pair]bool
	delay      map[pair]time.Duration
}

func (m *nemesis) unionLocked() linkSet {
	u := linkSet{cut: map[pair]bool{}, stall: map[pair]bool{}, delay: map[pair]time.Duration{}}
	for _, l := range m.active {
		for _, p := range l.cut {
			u.cut[p] = true
		}
		for _, p := range l.stall {
			u.stall[p] = true
		}
		for p, d := range l.delay {
			u.delay[p] = max(u.delay[p], d)
		}
	}
	return u
}

// ids returns every node's id.
func (c *Cluster) ids() []string {
	var out []string
	for _, m := range c.Members() {
		out = append(out, m.ID)
	}
	return out
}

// member returns the node with id, or nil.
func (c *Cluster) member(id string) *Node {
	for _, m := range c.Members() {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// leaderOf returns the id of the running node whose replica of p leads,
// waiting up to two election timeouts for one; "" if none does.
func (c *Cluster) leaderOf(p uint32) string {
	deadline := time.Now().Add(2 * ElectionTimeout)
	for {
		for _, m := range c.Members() {
			if n := m.Cluster(); n != nil && n.Replica(p) != nil && n.Replica(p).IsLeader() {
				return m.ID
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(10 * time.Millisecond) // polling for a leader
	}
}

// note records and logs a fault's start or end.
func (m *nemesis) note(what string) {
	m.rec.Note(what)
	m.c.t.Logf("clustertest: %v: %s", time.Since(m.begin).Round(time.Millisecond), what)
}
