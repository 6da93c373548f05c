package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/check"
	"github.com/heraldhq/herald/cluster/schedule"
)

// Executed is one fault as it ran: when it started and healed, from the
// start of the run, and on which nodes (IsolateLeader's resolved).
type Executed struct {
	Kind      schedule.Kind `json:"kind"`
	Nodes     []string      `json:"nodes,omitempty"`
	Partition *uint32       `json:"partition,omitempty"`
	DelayMS   int64         `json:"delay_ms,omitempty"`
	StartMS   int64         `json:"start_ms"`
	HealMS    int64         `json:"heal_ms"`
	// RecoveryMS is how long after the heal the first post was
	// acknowledged; -1 if none was before the run ended.
	RecoveryMS int64  `json:"recovery_ms"`
	Note       string `json:"note,omitempty"`
}

// nemesis runs a schedule's faults against the cluster at their offsets.
type nemesis struct {
	c     *procs
	rec   *check.Recorder
	begin time.Time
	rng   *rand.Rand // power loss's choices, from the seed

	mu   sync.Mutex // guards done
	done []Executed
}

// run starts each fault at its offset and heals it at its end, returning
// when the last has healed or ctx ends.
func (m *nemesis) run(ctx context.Context, s schedule.Schedule) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, f := range s.Faults {
		if !m.sleepUntil(ctx, f.At) {
			return
		}
		ex, heal := m.inject(ctx, f)
		wg.Go(func() {
			m.sleepUntil(ctx, f.End()) // or ctx ended: heal at once
			heal()
			ex.HealMS = time.Since(m.begin).Milliseconds()
			m.rec.Note(fmt.Sprintf("heal %s %s", ex.Kind, strings.Join(ex.Nodes, ",")))
			m.mu.Lock()
			m.done = append(m.done, *ex)
			m.mu.Unlock()
		})
	}
}

func (m *nemesis) sleepUntil(ctx context.Context, at time.Duration) bool {
	t := time.NewTimer(time.Until(m.begin.Add(at)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// inject starts fault f and returns its record and how to heal it.
func (m *nemesis) inject(ctx context.Context, f schedule.Fault) (*Executed, func()) {
	ex := &Executed{Kind: f.Kind, Nodes: f.Nodes, StartMS: time.Since(m.begin).Milliseconds(), RecoveryMS: -1}
	node := func(id string) *proc { return m.c.byID(id) }
	heal := func() {}
	switch f.Kind {
	case schedule.Partition:
		var links [][2]string
		for _, a := range f.Nodes {
			for _, b := range m.c.nodes {
				if !slices.Contains(f.Nodes, b.id) {
					links = append(links, [2]string{a, b.id})
				}
			}
		}
		for _, l := range links {
			m.c.net.Partition(l[0], l[1])
		}
		heal = func() {
			for _, l := range links {
				m.c.net.Uncut(l[0], l[1])
				m.c.net.Uncut(l[1], l[0])
			}
		}
	case schedule.OneWay:
		m.c.net.Cut(f.Nodes[0], f.Nodes[1])
		heal = func() { m.c.net.Uncut(f.Nodes[0], f.Nodes[1]) }
	case schedule.IsolateLeader:
		p := f.Partition
		ex.Partition = &p
		leader := m.leaderOf(ctx, p)
		if leader == "" {
			ex.Note = "no leader known; nothing isolated"
			break
		}
		ex.Nodes = []string{leader}
		for _, b := range m.c.nodes {
			if b.id != leader {
				m.c.net.Partition(leader, b.id)
			}
		}
		heal = func() {
			for _, b := range m.c.nodes {
				m.c.net.Uncut(leader, b.id)
				m.c.net.Uncut(b.id, leader)
			}
		}
	case schedule.Kill:
		p := node(f.Nodes[0])
		p.kill()
		heal = func() { m.restart(p, ex) }
	case schedule.PowerLoss:
		p := node(f.Nodes[0])
		report, err := p.powerLoss(m.rng)
		if err != nil {
			ex.Note = "power loss failed: " + err.Error()
		} else {
			ex.Note = report.String()
		}
		heal = func() { m.restart(p, ex) }
	case schedule.Pause:
		p := node(f.Nodes[0])
		p.signal(true)
		heal = func() { p.signal(false) }
	case schedule.Snapshot:
		p := f.Partition
		ex.Partition = &p
		ex.Note = m.compact(ctx, p)
	case schedule.Transfer:
		p := f.Partition
		ex.Partition = &p
		ex.Note = m.transfer(ctx, p)
	case schedule.Membership:
		id := f.Nodes[0]
		if err := m.admin(ctx, func(ctx context.Context, a heraldv1connect.AdminServiceClient) error {
			_, err := a.DrainNode(ctx, &heraldv1.DrainNodeRequest{NodeId: id})
			return err
		}); err != nil {
			ex.Note = "drain refused: " + err.Error()
			break
		}
		heal = func() {
			// A drained node that starts again goes back to active; then
			// the replicas are spread over every node again.
			p := node(id)
			p.kill()
			m.restart(p, ex)
			var err error
			for range 5 { // a placement changed meanwhile: plan again
				if err = m.admin(ctx, func(ctx context.Context, a heraldv1connect.AdminServiceClient) error {
					_, err := a.Rebalance(ctx, &heraldv1.RebalanceRequest{})
					return err
				}); err == nil || !strings.Contains(err.Error(), "placement changed") {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				ex.Note = strings.TrimSpace(ex.Note + "; rebalance failed: " + err.Error())
			}
		}
	case schedule.Slow:
		ex.DelayMS = f.Delay.Milliseconds()
		id := f.Nodes[0]
		for _, b := range m.c.nodes {
			if b.id != id {
				m.c.net.Delay(id, b.id, f.Delay)
				m.c.net.Delay(b.id, id, f.Delay)
			}
		}
		heal = func() {
			for _, b := range m.c.nodes {
				m.c.net.Delay(id, b.id, 0)
				m.c.net.Delay(b.id, id, 0)
			}
		}
	}
	m.rec.Note(fmt.Sprintf("start %s %s", ex.Kind, strings.Join(ex.Nodes, ",")))
	return ex, heal
}

func (m *nemesis) restart(p *proc, ex *Executed) {
	if err := m.c.start(p); err != nil {
		ex.Note = strings.TrimSpace(ex.Note + "; restart failed: " + err.Error())
	}
}

// admin runs call against the nodes' AdminService in turn until one
// answers without error, for up to 10 s. It returns an error whenever call
// did not succeed: the last answer, or why no node was asked.
func (m *nemesis) admin(ctx context.Context, call func(context.Context, heraldv1connect.AdminServiceClient) error) error {
	deadline := time.Now().Add(10 * time.Second)
	err := errors.New("no node was running to ask")
	for k := 0; time.Now().Before(deadline) && ctx.Err() == nil; k++ {
		n := m.c.nodes[k%len(m.c.nodes)]
		if !n.running() {
			if k%len(m.c.nodes) == len(m.c.nodes)-1 {
				time.Sleep(100 * time.Millisecond) // none may be: do not spin
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = call(cctx, heraldv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+n.http, connect.WithProtoJSON()))
		cancel()
		if err == nil {
			return nil
		}
		if code := connect.CodeOf(err); code == connect.CodeFailedPrecondition || code == connect.CodeInvalidArgument {
			return err // said no for good
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
	}
	return err
}

// transfer moves partition p's leadership to another of its replicas,
// picked by the seed, and says how that went.
func (m *nemesis) transfer(ctx context.Context, p uint32) string {
	part, err := m.partition(ctx, p, func(part *heraldv1.Partition) bool {
		return part.GetLeader() != "" && len(otherVoters(part)) > 0
	})
	if err != nil {
		return fmt.Sprintf("no replica to move the leadership to (%v)", err)
	}
	others := otherVoters(part)
	to := others[m.rng.IntN(len(others))]
	if err := m.admin(ctx, func(ctx context.Context, a heraldv1connect.AdminServiceClient) error {
		_, err := a.TransferLeadership(ctx, &heraldv1.TransferLeadershipRequest{Partition: p, NodeId: to})
		return err
	}); err != nil {
		return "to " + to + ": " + err.Error()
	}
	return "to " + to
}

// otherVoters are part's voters but its leader.
func otherVoters(part *heraldv1.Partition) []string {
	var out []string
	for _, r := range part.GetReplicas() {
		if r.GetNodeId() != part.GetLeader() && r.GetVoter() {
			out = append(out, r.GetNodeId())
		}
	}
	return out
}

// compact makes every replica of partition p take a snapshot, and says
// how that went.
func (m *nemesis) compact(ctx context.Context, p uint32) string {
	part, err := m.partition(ctx, p, func(part *heraldv1.Partition) bool { return len(part.GetReplicas()) > 0 })
	if err != nil {
		return "no ring: " + err.Error()
	}
	var out []string
	for _, r := range part.GetReplicas() {
		id := r.GetNodeId()
		err := m.admin(ctx, func(ctx context.Context, a heraldv1connect.AdminServiceClient) error {
			resp, err := a.CompactLog(ctx, &heraldv1.CompactLogRequest{Partition: p, NodeId: id})
			if err == nil {
				out = append(out, fmt.Sprintf("%s at %d", id, resp.GetSnapshotIndex()))
			}
			return err
		})
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", id, err))
		}
	}
	return "snapshots: " + strings.Join(out, ", ")
}

// leaderOf asks the nodes in turn which node leads partition p.
func (m *nemesis) leaderOf(ctx context.Context, p uint32) string {
	part, err := m.partition(ctx, p, func(part *heraldv1.Partition) bool { return part.GetLeader() != "" })
	if err != nil {
		return ""
	}
	return part.GetLeader()
}

// partition asks the nodes in turn for their view of partition p until
// one's view is usable: a node cut off or behind may know no leader or no
// replicas of it.
func (m *nemesis) partition(ctx context.Context, p uint32, usable func(*heraldv1.Partition) bool) (*heraldv1.Partition, error) {
	var found *heraldv1.Partition
	err := m.admin(ctx, func(ctx context.Context, a heraldv1connect.AdminServiceClient) error {
		ring, err := a.GetRing(ctx, &heraldv1.GetRingRequest{})
		if err != nil {
			return err
		}
		for _, part := range ring.GetPartitions() {
			if part.GetId() == p && usable(part) {
				found = part
				return nil
			}
		}
		return fmt.Errorf("partition %d: nothing usable known", p) // ask the next node
	})
	return found, err
}

// executed returns the faults run so far, in order of start.
func (m *nemesis) executed() []Executed {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.done)
	slices.SortFunc(out, func(a, b Executed) int { return int(a.StartMS - b.StartMS) })
	return out
}

func (c *procs) byID(id string) *proc {
	for _, p := range c.nodes {
		if p.id == id {
			return p
		}
	}
	return nil
}
