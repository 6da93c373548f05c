package schedule

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

// Fault kinds.
const (
	// Partition cuts a group of nodes off from the others, both ways.
	Partition Kind = "partition"
	// OneWay cuts one direction of one link: Nodes[0] cannot reach
	// Nodes[1], while connections Nodes[1] opens still work.
	OneWay Kind = "oneway"
	// IsolateLeader cuts the node that leads partition Fault.Partition
	// when the fault starts off from every other node, both ways; the
	// runner resolves and records which node that was.
	IsolateLeader Kind = "isolate-leader"
	// Kill crashes a node and restarts it from its data after Fault.For.
	Kill Kind = "kill"
	// Pause stalls every byte to and from a node for Fault.For, as a
	// stopped process looks to its peers.
	Pause Kind = "pause"
	// Slow delays every chunk of bytes on a node's links, both ways, by
	// Fault.Delay. The node stays up: it does not count towards the
	// minority that may be down.
	Slow Kind = "slow"
)

// PowerLoss crashes a node, throws away every write its disk had not
// fsynced (torn at a random point), and restarts it after Fault.For. Only
// a runner whose nodes keep their data on a power-loss filesystem
// (herald torture --faults powerloss) can run it, so Kinds leaves it out.
const PowerLoss Kind = "powerloss"

// Snapshot makes every replica of partition Fault.Partition take a Raft
// snapshot (AdminService.CompactLog), truncating their logs, so that a
// replica behind catches up by InstallSnapshot. It takes nothing down.
const Snapshot Kind = "snapshot"

// Membership drains a node (its replicas move to the others), then, at
// the fault's end, starts it again as an active node and rebalances the
// replicas back: membership changes while the other faults go on.
const Membership Kind = "membership"

// Transfer moves the leadership of partition Fault.Partition to another
// of its replicas (AdminService.TransferLeadership). It takes nothing
// down.
const Transfer Kind = "transfer"

// Kinds are the kinds of fault every runner can run, in a fixed order:
// the default.
var Kinds = []Kind{Partition, OneWay, IsolateLeader, Kill, Pause, Slow}

// AllKinds are Kinds and the kinds only herald torture's process runner
// can run: PowerLoss, Snapshot, Membership and Transfer.
var AllKinds = append(slices.Clone(Kinds), PowerLoss, Snapshot, Membership, Transfer)

// Config is what a schedule is a function of.
type Config struct {
	// Seed picks the schedule.
	Seed int64
	// Nodes are the ids of the cluster's nodes, at least 3.
	Nodes []string
	// Partitions is the cluster's partition count, from which
	// IsolateLeader picks; 0 means 1.
	Partitions uint32
	// Duration is how long the faults go on; every fault starts and ends
	// within it.
	Duration time.Duration
	// Kinds are the kinds of fault to draw from; nil means Kinds.
	Kinds []Kind
}

// Validate reports what is wrong with c, naming the field.
func (c Config) Validate() error {
	if len(c.Nodes) < 3 {
		return fmt.Errorf("schedule: Nodes: got %d nodes, want at least 3 so that one can fail", len(c.Nodes))
	}
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if n == "" || seen[n] {
			return fmt.Errorf("schedule: Nodes: %q is empty or repeated", n)
		}
		seen[n] = true
	}
	if c.Duration < minFault {
		return fmt.Errorf("schedule: Duration: got %v, want at least %v", c.Duration, minFault)
	}
	for _, k := range c.Kinds {
		if !slices.Contains(AllKinds, k) {
			return fmt.Errorf("schedule: Kinds: unknown kind %q; known: %v", k, AllKinds)
		}
	}
	return nil
}

// Fault is one timed fault.
type Fault struct {
	// At is when the fault starts, from the start of the run; For is how
	// long it lasts.
	At, For time.Duration
	Kind    Kind
	// Nodes are its targets: the group cut off (Partition), the node
	// (Kill, Pause, Slow), from and to (OneWay); none for IsolateLeader.
	Nodes []string
	// Partition is the partition whose leader IsolateLeader cuts off.
	Partition uint32
	// Delay is Slow's added delay.
	Delay time.Duration
}

// End is when the fault heals.
func (f Fault) End() time.Duration { return f.At + f.For }

func (f Fault) String() string {
	s := fmt.Sprintf("at %v %s", f.At, f.Kind)
	switch f.Kind {
	case IsolateLeader, Snapshot, Transfer:
		s += fmt.Sprintf(" of partition %d", f.Partition)
	case OneWay:
		s += " " + strings.Join(f.Nodes, "→")
	default:
		s += " " + strings.Join(f.Nodes, ",")
	}
	if f.Kind == Slow {
		s += fmt.Sprintf(" by %v", f.Delay)
	}
	return s + fmt.Sprintf(" for %v", f.For)
}

// down reports how many nodes the fault takes out of the majority, and
// whether it needs the whole minority to itself (its target is only known
// when it starts).
func (f Fault) down() (nodes []string, exclusive bool) {
	switch f.Kind {
	case IsolateLeader:
		return nil, true
	case Slow, Snapshot, Transfer:
		return nil, false
	case OneWay:
		return f.Nodes[:1], false
	default:
		return f.Nodes, false
	}
}

// Schedule is a list of faults ordered by start.
type Schedule struct {
	Config Config
	Faults []Fault
}

func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %d nodes, %d partitions, %v, %d faults", s.Config.Seed, len(s.Config.Nodes),
		s.Config.Partitions, s.Config.Duration, len(s.Faults))
	for _, f := range s.Faults {
		fmt.Fprintf(&b, "\n  %s", f)
	}
	return b.String()
}

// Timing of generated faults, in whole milliseconds so that JSON keeps
// them exactly.
const (
	minFault = 300 * time.Millisecond
	maxFault = 2000 * time.Millisecond
	minGap   = 100 * time.Millisecond
	maxGap   = 800 * time.Millisecond
	minDelay = 5 * time.Millisecond
	maxDelay = 50 * time.Millisecond
)

// Generate returns the schedule of c. The same Config always gives the
// same schedule.
func Generate(c Config) (Schedule, error) {
	if err := c.Validate(); err != nil {
		return Schedule{}, err
	}
	c.Nodes = slices.Clone(c.Nodes)
	if c.Partitions == 0 {
		c.Partitions = 1
	}
	if len(c.Kinds) == 0 {
		c.Kinds = slices.Clone(Kinds)
	}
	c.Duration = c.Duration.Truncate(time.Millisecond)
	rng := rand.New(rand.NewPCG(uint64(c.Seed), 0x68657261_6c640000))
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64((hi-lo)/time.Millisecond)+1))*time.Millisecond
	}
	minority := (len(c.Nodes) - 1) / 2
	s := Schedule{Config: c}
	for at := between(minGap, maxGap); at+minFault <= c.Duration; {
		f := Fault{At: at, Kind: c.Kinds[rng.IntN(len(c.Kinds))], For: min(between(minFault, maxFault), c.Duration-at)}
		busy, exclusive := s.downAt(at)
		free := slices.DeleteFunc(slices.Clone(c.Nodes), func(n string) bool { return slices.Contains(busy, n) })
		room := minority - len(busy)
		if exclusive {
			room = 0
		}
		switch f.Kind {
		case Slow:
			f.Nodes = []string{c.Nodes[rng.IntN(len(c.Nodes))]}
			f.Delay = between(minDelay, maxDelay)
		case Snapshot, Transfer:
			f.Partition = uint32(rng.IntN(int(c.Partitions)))
		case IsolateLeader:
			if len(busy) > 0 || exclusive {
				room = 0
			}
			f.Partition = uint32(rng.IntN(int(c.Partitions)))
		case Partition:
			if room > 0 {
				rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
				f.Nodes = free[:1+rng.IntN(room)]
				slices.SortFunc(f.Nodes, func(a, b string) int { return slices.Index(c.Nodes, a) - slices.Index(c.Nodes, b) })
			}
		case OneWay:
			if room > 0 {
				from := free[rng.IntN(len(free))]
				others := slices.DeleteFunc(slices.Clone(c.Nodes), func(n string) bool { return n == from })
				f.Nodes = []string{from, others[rng.IntN(len(others))]}
			}
		case Kill, Pause, PowerLoss, Membership:
			if room > 0 {
				f.Nodes = []string{free[rng.IntN(len(free))]}
			}
		}
		if room <= 0 && f.Kind != Slow && f.Kind != Snapshot && f.Kind != Transfer {
			at = s.nextEnd(at) + minGap // wait for room
			continue
		}
		s.Faults = append(s.Faults, f)
		at += between(minGap, maxGap)
	}
	return s, nil
}

// Prefix returns the schedule cut at d: the faults that start before d,
// each ending by d at the latest, and d as the duration (s itself if d is
// not shorter).
func (s Schedule) Prefix(d time.Duration) Schedule {
	if d >= s.Config.Duration {
		return s
	}
	out := Schedule{Config: s.Config}
	out.Config.Duration = d
	for _, f := range s.Faults {
		if f.At < d {
			f.For = min(f.For, d-f.At)
			out.Faults = append(out.Faults, f)
		}
	}
	return out
}

// downAt returns the nodes that the faults in force at t take out of the
// majority, and whether one of them needs the minority to itself.
func (s Schedule) downAt(t time.Duration) ([]string, bool) {
	var out []string
	exclusive := false
	for _, f := range s.Faults {
		if f.At <= t && t < f.End() {
			nodes, ex := f.down()
			out = append(out, nodes...)
			exclusive = exclusive || ex
		}
	}
	return out, exclusive
}

// nextEnd returns the first end of a fault in force at t.
func (s Schedule) nextEnd(t time.Duration) time.Duration {
	next := time.Duration(-1)
	for _, f := range s.Faults {
		if f.At <= t && t < f.End() && (next < 0 || f.End() < next) {
			next = f.End()
		}
	}
	if next < 0 {
		return t + minGap
	}
	return next
}

// Check reports whether s is well formed: faults in order of start,
// within the duration, on known nodes, and never more than a minority of
// the nodes down at once. Generate's schedules are; Check is for
// schedules read back.
func (s Schedule) Check() error {
	if err := s.Config.Validate(); err != nil {
		return err
	}
	minority := (len(s.Config.Nodes) - 1) / 2
	for i, f := range s.Faults {
		if i > 0 && f.At < s.Faults[i-1].At {
			return fmt.Errorf("schedule: fault %d (%s) starts before fault %d", i, f, i-1)
		}
		if f.For <= 0 || f.End() > s.Config.Duration {
			return fmt.Errorf("schedule: fault %d (%s) does not end within the duration %v", i, f, s.Config.Duration)
		}
		want := map[Kind]int{OneWay: 2, Kill: 1, Pause: 1, PowerLoss: 1, Membership: 1, Slow: 1, IsolateLeader: 0, Snapshot: 0, Transfer: 0}
		if n, ok := want[f.Kind]; ok && len(f.Nodes) != n || f.Kind == Partition && len(f.Nodes) == 0 {
			return fmt.Errorf("schedule: fault %d (%s) has %d target nodes", i, f, len(f.Nodes))
		}
		if !slices.Contains(AllKinds, f.Kind) {
			return fmt.Errorf("schedule: fault %d: unknown kind %q", i, f.Kind)
		}
		for _, n := range f.Nodes {
			if !slices.Contains(s.Config.Nodes, n) {
				return fmt.Errorf("schedule: fault %d (%s) names node %q, not one of %v", i, f, n, s.Config.Nodes)
			}
		}
		if (f.Kind == IsolateLeader || f.Kind == Snapshot || f.Kind == Transfer) && f.Partition >= max(s.Config.Partitions, 1) {
			return fmt.Errorf("schedule: fault %d (%s): partition %d of %d", i, f, f.Partition, s.Config.Partitions)
		}
		down, exclusive := s.downAt(f.At)
		distinct := map[string]bool{}
		for _, n := range down {
			distinct[n] = true
		}
		if len(distinct) > minority || len(down) > len(distinct) || exclusive && len(down) > 0 || exclusive && s.overlapsExclusive(i) {
			return fmt.Errorf("schedule: at %v more than a minority (%d of %d nodes) is down: %v", f.At, minority, len(s.Config.Nodes), down)
		}
	}
	return nil
}

// overlapsExclusive reports whether two leader isolations are in force
// when fault i starts.
func (s Schedule) overlapsExclusive(i int) bool {
	n := 0
	for _, f := range s.Faults[:i+1] {
		if f.Kind == IsolateLeader && f.At <= s.Faults[i].At && s.Faults[i].At < f.End() {
			n++
		}
	}
	return n > 1
}
