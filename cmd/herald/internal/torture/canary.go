package torture

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/cluster/schedule"
)

// Canary is a planted defect (herald server --test-defect) and a fixed
// scenario in which the checker CaughtBy must catch it, every time: the
// proof that the checkers can fail.
type Canary struct {
	Defect   string
	CaughtBy string
	// Blackout loses power on every node at once halfway through (the
	// data directories on power-loss filesystems).
	Blackout bool
	// RetryAcked sends every acknowledged post again with its id.
	RetryAcked bool
	// Isolate cuts the last node off both ways from a fifth of the run to
	// four fifths, while clients read through it.
	Isolate bool
	What    string
}

// Canaries by name.
var Canaries = map[string]Canary{
	"lost-writes": {Defect: "unsynced-log", CaughtBy: "lost", Blackout: true,
		What: "a Raft log that acknowledges appends before fsyncing them, and power lost on every node at once"},
	"duplicates": {Defect: "skip-dedup", CaughtBy: "duplicates", RetryAcked: true,
		What: "client_msg_id not looked up, and every acknowledged post sent again"},
	"gap": {Defect: "skip-event", CaughtBy: "subscribers",
		What: "every stream skipping the event with seq 5 of each channel"},
	"stale-reads": {Defect: "local-reads", CaughtBy: "stale-reads", Isolate: true,
		What: "linearizable reads served by the local replica, read through a node cut off from the others"},
}

func canaryNames() string {
	var names []string
	for n := range Canaries {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// schedule is the canary's fixed scenario.
func (c Canary) schedule(nodes []string, partitions uint32, d time.Duration) schedule.Schedule {
	s := schedule.Schedule{Config: schedule.Config{Nodes: nodes, Partitions: partitions, Duration: d}}
	if c.Isolate {
		s.Faults = []schedule.Fault{{At: d / 5, For: 3 * d / 5, Kind: schedule.Partition, Nodes: nodes[len(nodes)-1:]}}
	}
	return s
}

// blackout waits until at, then loses power on every node at once and
// starts them all again.
func (m *nemesis) blackout(ctx context.Context, at time.Duration) {
	if !m.sleepUntil(ctx, at) {
		return
	}
	ex := &Executed{Kind: schedule.PowerLoss, StartMS: time.Since(m.begin).Milliseconds(), RecoveryMS: -1}
	m.rec.Note("start blackout: power lost on every node")
	var wg sync.WaitGroup
	for _, p := range m.c.nodes {
		ex.Nodes = append(ex.Nodes, p.id)
		wg.Go(func() { p.kill() })
	}
	wg.Wait()
	for _, p := range m.c.nodes {
		r, err := p.fs.PowerLoss(m.rng)
		if err != nil {
			ex.Note += fmt.Sprintf("%s: power loss failed: %v; ", p.id, err)
		} else {
			ex.Note += fmt.Sprintf("%s: %s; ", p.id, strings.SplitN(r.String(), "\n", 2)[0])
		}
	}
	for _, p := range m.c.nodes {
		m.restart(p, ex)
	}
	ex.HealMS = time.Since(m.begin).Milliseconds()
	m.rec.Note("heal blackout: every node started again")
	m.mu.Lock()
	m.done = append(m.done, *ex)
	m.mu.Unlock()
}
