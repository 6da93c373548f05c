package meta

import (
	"cmp"
	"slices"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// InitialPlacement spreads partitions × replication replicas over nodes
// (sorted and deduplicated here). The replicas of a partition are on
// distinct nodes; every node holds within one replica of every other; and
// the preferred leaders (replicas[0]) are spread so that every node is
// preferred leader of within one partition of every other. With fewer nodes
// than replication, each partition gets every node. The result is
// deterministic: the same input gives the same placements. Epochs are left
// 0; InitCluster sets them to 1. It is a pure function, safe from any
// goroutine.
//
// Row j of the placement (the j-th replica of every partition) is a
// round-robin over the n nodes starting at offset s_j, with s_0 = 0, so the
// preferred leaders are round-robin. Past its last full lap, row j gives
// one more replica to the P mod n nodes from s_j on; s_j = j·(P mod n)
// makes those runs tile the ring, so the totals stay within one. Each time
// the tiling comes back to where it started it shifts by one, which keeps
// the offsets, and hence a partition's replicas, distinct.
func InitialPlacement(partitions, replication uint32, nodes []string) []*clusterv1.Placement {
	ids := slices.Clone(nodes)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	n := len(ids)
	r := min(int(replication), n)
	offsets := rowOffsets(int(partitions%uint32(max(n, 1))), r, n)
	out := make([]*clusterv1.Placement, partitions)
	for p := range partitions {
		reps := make([]string, r)
		for j, off := range offsets {
			reps[j] = ids[(off+int(p%uint32(n)))%n]
		}
		out[p] = &clusterv1.Placement{Partition: p, Replicas: reps}
	}
	return out
}

// rowOffsets returns r distinct offsets in [0, n) whose runs of rem
// consecutive nodes cover the ring evenly (see InitialPlacement).
func rowOffsets(rem, r, n int) []int {
	if r == 0 {
		return nil
	}
	lap := n / gcd(n, rem) // rows before the tiling returns to its start
	offs := make([]int, r)
	for j := range offs {
		offs[j] = (j/lap + (j%lap)*rem) % n
	}
	return offs
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Counts returns, per node id, how many replicas it holds and of how many
// partitions it is the preferred leader (replicas[0]), in s's desired
// placement. Every node of s appears, with zeros if it holds nothing, as
// does any id a placement names. It is a pure function.
func Counts(s *clusterv1.MetaState) (replicas, leaders map[string]int) {
	replicas = make(map[string]int, len(s.GetNodes()))
	leaders = make(map[string]int, len(s.GetNodes()))
	for _, n := range s.GetNodes() {
		replicas[n.GetId()] = 0
		leaders[n.GetId()] = 0
	}
	for _, p := range s.GetPlacements() {
		for i, id := range p.GetReplicas() {
			replicas[id]++
			if i == 0 {
				leaders[id]++
			} else if _, ok := leaders[id]; !ok {
				leaders[id] = 0
			}
		}
	}
	return replicas, leaders
}

// Plan returns the next placement changes for s: at most one change per
// partition, and only for partitions for which settled reports true (nil
// means all). A change swaps one replica for another, reorders the replicas
// to move the preferred leader, adds one to a partition short of replicas,
// or drops one that has nowhere to go (a removed node's) or is surplus (a
// draining node's, in a partition that gained a replica to take over its
// leadership). Each returned placement has ExpectEpoch set to the
// partition's current epoch and Epoch 0, ready for SetPlacement; a
// placement may still name a REMOVED node the partition already has (Apply
// accepts that), since replicas are replaced one at a time. Plan returns
// nil when nothing needs to change. It is a pure, deterministic function
// (partitions in order, ties broken by node id), safe from any goroutine;
// s is not modified.
//
// A node without the channel role (HoldsReplicas) is planned as DRAINING
// whatever its state: it never gains a replica, and any it holds (it was
// restarted without the role) move off as a drain's do.
//
// The concerns, in order, each taking only partitions no earlier one
// changed in this call:
//
//  1. A replica on a REMOVED (or unknown) node is replaced in place by the
//     least-loaded ACTIVE node not in the set; with none free it is dropped
//     if the partition keeps min(replication, active) replicas (and one).
//     A partition with fewer than min(replication, active) replicas gains
//     the least-loaded ACTIVE node not in the set.
//  2. Drain moves leaderships, then replicas. A DRAINING preferred leader
//     gives way to the partition's ACTIVE replica that leads the fewest
//     partitions (a partition with no ACTIVE replica first gains one). A
//     DRAINING replica that is not first is replaced like a removed one (or
//     dropped, if the partition has more than replication replicas), but
//     only once no partition of s has that node first, and only while there
//     are at least replication ACTIVE nodes: otherwise there is nowhere to
//     move it.
//  3. Replicas: while an ACTIVE node holds two or more replicas more than
//     another, one of its replicas (preferably not a preferred leader's)
//     moves to that node, if it is not in the set. Counts are updated as
//     the plan grows, so one call does not overshoot.
//  4. Preferred leaders: while an ACTIVE node is preferred leader of two or
//     more partitions more than an ACTIVE node it can reach (A reaches B
//     when A leads a partition B has a replica of, and so on), one
//     leadership moves along the shortest such chain, one reorder per
//     partition. With no such chain left, the leader counts are as even as
//     the replica sets of the settled partitions allow.
//
// Repeated application, with every partition settled, reaches a fixed
// point: each concern strictly reduces its own measure (replicas on gone
// nodes, missing replicas, drained leaders, drained replicas, the
// imbalance of replica counts, the imbalance of leader counts) without
// raising an earlier one.
func Plan(s *clusterv1.MetaState, settled func(partition uint32) bool) []*clusterv1.Placement {
	pl := newPlanner(s, settled)
	pl.replaceGone()
	pl.fillShort()
	pl.drainLeaders()
	pl.drainReplicas()
	pl.balanceReplicas()
	pl.balanceLeaders()
	var out []*clusterv1.Placement
	for i, cur := range s.GetPlacements() {
		if pl.changed[i] {
			out = append(out, &clusterv1.Placement{
				Partition:   cur.GetPartition(),
				Replicas:    pl.reps[i],
				ExpectEpoch: cur.GetEpoch(),
				Generation:  cur.GetGeneration(),
			})
		}
	}
	return out
}

// planner is the working state of one Plan call. It is owned by that call.
type planner struct {
	replication int
	state       map[string]heraldv1.Node_State
	active      []string // ACTIVE node ids, sorted

	reps     [][]string // planned replicas; a changed partition's are a new slice
	eligible []bool     // settled and not changed in this call
	changed  []bool

	replicas   map[string]int // planned counts over every partition
	leaders    map[string]int
	drainLeads map[string]int // preferred leaderships in s, not planned
}

func newPlanner(s *clusterv1.MetaState, settled func(uint32) bool) *planner {
	n := len(s.GetPlacements())
	pl := &planner{
		replication: int(s.GetReplication()),
		state:       make(map[string]heraldv1.Node_State, len(s.GetNodes())),
		reps:        make([][]string, n),
		eligible:    make([]bool, n),
		changed:     make([]bool, n),
	}
	for _, node := range s.GetNodes() {
		st := node.GetState()
		if st == heraldv1.Node_STATE_UNSPECIFIED {
			st = heraldv1.Node_STATE_ACTIVE // Apply never stores it; read it as the default
		}
		if st == heraldv1.Node_STATE_ACTIVE && !HoldsReplicas(node) {
			// Restarted without the channel role: plan it as draining, so
			// that its replicas and leaderships move off as a drain's do.
			st = heraldv1.Node_STATE_DRAINING
		}
		pl.state[node.GetId()] = st
		if st == heraldv1.Node_STATE_ACTIVE {
			pl.active = append(pl.active, node.GetId())
		}
	}
	slices.Sort(pl.active)
	pl.active = slices.Compact(pl.active)
	for i, p := range s.GetPlacements() {
		pl.reps[i] = p.GetReplicas()
		pl.eligible[i] = settled == nil || settled(p.GetPartition())
	}
	pl.replicas, pl.leaders = Counts(s)
	pl.drainLeads = make(map[string]int)
	for id, n := range pl.leaders {
		if pl.is(id, heraldv1.Node_STATE_DRAINING) {
			pl.drainLeads[id] = n
		}
	}
	return pl
}

// is reports whether node id is in state st; unknown nodes are REMOVED.
func (pl *planner) is(id string, st heraldv1.Node_State) bool {
	got, ok := pl.state[id]
	if !ok {
		got = heraldv1.Node_STATE_REMOVED
	}
	return got == st
}

// change records p's new replicas and updates the counts.
func (pl *planner) change(p int, reps []string) {
	for i, id := range pl.reps[p] {
		pl.replicas[id]--
		if i == 0 {
			pl.leaders[id]--
		}
	}
	for i, id := range reps {
		pl.replicas[id]++
		if i == 0 {
			pl.leaders[id]++
		}
	}
	pl.reps[p] = reps
	pl.eligible[p] = false
	pl.changed[p] = true
}

// leastLoaded returns the ACTIVE node not in set with the fewest planned
// replicas (ties by id), or "" if there is none.
func (pl *planner) leastLoaded(set []string) string {
	best := ""
	for _, id := range pl.active {
		if slices.Contains(set, id) {
			continue
		}
		if best == "" || pl.replicas[id] < pl.replicas[best] {
			best = id
		}
	}
	return best
}

// target is how many replicas a partition should have at least.
func (pl *planner) target() int { return min(pl.replication, len(pl.active)) }

func replaced(reps []string, i int, id string) []string {
	out := slices.Clone(reps)
	out[i] = id
	return out
}

// replaceGone is concern 1: replicas on REMOVED or unknown nodes.
func (pl *planner) replaceGone() {
	for p, reps := range pl.reps {
		if !pl.eligible[p] {
			continue
		}
		i := slices.IndexFunc(reps, func(id string) bool { return pl.is(id, heraldv1.Node_STATE_REMOVED) })
		if i < 0 {
			continue
		}
		if c := pl.leastLoaded(reps); c != "" {
			pl.change(p, replaced(reps, i, c))
		} else if len(reps)-1 >= max(1, pl.target()) {
			pl.change(p, slices.Delete(slices.Clone(reps), i, i+1))
		}
	}
}

// fillShort is the rest of concern 1: partitions with too few replicas.
func (pl *planner) fillShort() {
	for p, reps := range pl.reps {
		if !pl.eligible[p] || len(reps) >= pl.target() {
			continue
		}
		if c := pl.leastLoaded(reps); c != "" {
			pl.change(p, append(slices.Clone(reps), c))
		}
	}
}

// drainLeaders is the first half of concern 2: DRAINING preferred leaders.
func (pl *planner) drainLeaders() {
	for p, reps := range pl.reps {
		if !pl.eligible[p] || len(reps) == 0 || !pl.is(reps[0], heraldv1.Node_STATE_DRAINING) {
			continue
		}
		best := -1
		for i := 1; i < len(reps); i++ {
			if !pl.is(reps[i], heraldv1.Node_STATE_ACTIVE) {
				continue
			}
			if best < 0 || cmp.Or(cmp.Compare(pl.leaders[reps[i]], pl.leaders[reps[best]]),
				cmp.Compare(reps[i], reps[best])) < 0 {
				best = i
			}
		}
		if best >= 0 {
			next := slices.Clone(reps)
			next[0], next[best] = next[best], next[0]
			pl.change(p, next)
		} else if c := pl.leastLoaded(reps); c != "" {
			// No replica can take over: add one that can, next time.
			pl.change(p, append(slices.Clone(reps), c))
		}
	}
}

// drainReplicas is the second half of concern 2: the other replicas of
// DRAINING nodes that no longer lead anywhere.
func (pl *planner) drainReplicas() {
	if len(pl.active) < pl.replication {
		return
	}
	for p, reps := range pl.reps {
		if !pl.eligible[p] {
			continue
		}
		for i := 1; i < len(reps); i++ {
			id := reps[i]
			if !pl.is(id, heraldv1.Node_STATE_DRAINING) || pl.drainLeads[id] > 0 {
				continue
			}
			if len(reps) > pl.replication {
				pl.change(p, slices.Delete(slices.Clone(reps), i, i+1))
			} else if c := pl.leastLoaded(reps); c != "" {
				pl.change(p, replaced(reps, i, c))
			}
			break
		}
	}
}

// balanceReplicas is concern 3.
func (pl *planner) balanceReplicas() {
	byLoad := slices.Clone(pl.active)
	for {
		slices.SortFunc(byLoad, func(a, b string) int {
			return cmp.Or(cmp.Compare(pl.replicas[a], pl.replicas[b]), cmp.Compare(a, b))
		})
		if !pl.moveOneReplica(byLoad) {
			return
		}
	}
}

// moveOneReplica moves one replica from the most loaded ACTIVE node that
// can give one to the least loaded that can take it; byLoad is the ACTIVE
// nodes by ascending load. It reports whether it moved one.
func (pl *planner) moveOneReplica(byLoad []string) bool {
	for si := len(byLoad) - 1; si >= 0; si-- {
		src := byLoad[si]
		for _, dst := range byLoad {
			if pl.replicas[src]-pl.replicas[dst] < 2 {
				break
			}
			if p, i := pl.findMove(src, dst); p >= 0 {
				pl.change(p, replaced(pl.reps[p], i, dst))
				return true
			}
		}
	}
	return false
}

// findMove returns the first eligible partition with a replica on src and
// none on dst, and src's index there, preferring partitions src does not
// lead; -1 if there is none.
func (pl *planner) findMove(src, dst string) (int, int) {
	lead := -1
	for p, reps := range pl.reps {
		if !pl.eligible[p] || slices.Contains(reps, dst) {
			continue
		}
		switch i := slices.Index(reps, src); {
		case i > 0:
			return p, i
		case i == 0 && lead < 0:
			lead = p
		}
	}
	return lead, 0
}

// balanceLeaders is concern 4.
func (pl *planner) balanceLeaders() {
	if len(pl.active) < 2 {
		return
	}
	byLeads := slices.Clone(pl.active)
	for {
		slices.SortFunc(byLeads, func(a, b string) int {
			return cmp.Or(cmp.Compare(pl.leaders[b], pl.leaders[a]), cmp.Compare(a, b))
		})
		least := pl.leaders[byLeads[len(byLeads)-1]]
		moved := false
		for _, src := range byLeads {
			if pl.leaders[src]-least < 2 {
				break
			}
			if pl.shiftLeadership(src) {
				moved = true
				break
			}
		}
		if !moved {
			return
		}
	}
}

// hop is one step of a leadership chain: partition p's preferred leader
// becomes to.
type hop struct {
	p  int
	to string
}

// shiftLeadership finds the shortest chain of eligible partitions along
// which one preferred leadership can move from src to an ACTIVE node that
// leads at least two fewer, and applies it. It reports whether it did.
func (pl *planner) shiftLeadership(src string) bool {
	want := pl.leaders[src] - 2
	led := make(map[string][]int) // eligible partitions by preferred leader
	for p, reps := range pl.reps {
		if pl.eligible[p] && len(reps) > 0 {
			led[reps[0]] = append(led[reps[0]], p)
		}
	}
	via := map[string]hop{src: {p: -1}}
	queue := []string{src}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for _, p := range led[u] {
			for _, v := range pl.reps[p][1:] {
				if _, seen := via[v]; seen || !pl.is(v, heraldv1.Node_STATE_ACTIVE) {
					continue
				}
				via[v] = hop{p: p, to: v}
				if pl.leaders[v] <= want {
					pl.applyChain(via, v)
					return true
				}
				queue = append(queue, v)
			}
		}
	}
	return false
}

// applyChain walks back from end to the chain's start, moving each
// partition's preferred leader to the next node of the chain.
func (pl *planner) applyChain(via map[string]hop, end string) {
	for h := via[end]; h.p >= 0; {
		reps := pl.reps[h.p]
		from := reps[0]
		next := slices.Clone(reps)
		i := slices.Index(next, h.to)
		next[0], next[i] = next[i], next[0]
		pl.change(h.p, next)
		h = via[from]
	}
}
