package seglog

// loc is where an entry's record is; seg nil is a hole (an index never
// written, or deleted from the middle).
type loc struct {
	seg *segment
	off int64
	n   int
}

// index is one group's entries, first to first+len(locs)-1. Its first and
// last locs are never holes. raft appends after the last entry and deletes
// a prefix or a suffix; anything else (a gap after a snapshot install, a
// rewrite in place) is kept as it was done, as a key-value store would.
type index struct {
	first uint64
	locs  []loc
}

func (x *index) last() uint64 {
	if len(x.locs) == 0 {
		return 0
	}
	return x.first + uint64(len(x.locs)) - 1
}

func (x *index) get(i uint64) (loc, bool) {
	if len(x.locs) == 0 || i < x.first || i > x.last() {
		return loc{}, false
	}
	l := x.locs[i-x.first]
	return l, l.seg != nil
}

// put points entry i at l, replacing any earlier record of it.
func (x *index) put(i uint64, l loc) {
	l.seg.live++
	switch {
	case len(x.locs) == 0:
		x.first, x.locs = i, append(x.locs[:0], l)
	case i < x.first:
		locs := make([]loc, x.first-i, uint64(len(x.locs))+x.first-i)
		locs[0] = l
		x.first, x.locs = i, append(locs, x.locs...)
	case i > x.last():
		x.locs = append(x.locs, make([]loc, i-x.last()-1)...)
		x.locs = append(x.locs, l)
	default:
		if old := x.locs[i-x.first]; old.seg != nil {
			old.seg.live--
		}
		x.locs[i-x.first] = l
	}
}

// del deletes entries from to to, inclusive.
func (x *index) del(from, to uint64) {
	if len(x.locs) == 0 || from > to {
		return
	}
	lo, hi := max(from, x.first), min(to, x.last())
	for i := lo; i <= hi && lo <= hi; i++ {
		if l := &x.locs[i-x.first]; l.seg != nil {
			l.seg.live--
			*l = loc{}
		}
	}
	for len(x.locs) > 0 && x.locs[0].seg == nil {
		x.locs = x.locs[1:]
		x.first++
	}
	for len(x.locs) > 0 && x.locs[len(x.locs)-1].seg == nil {
		x.locs = x.locs[:len(x.locs)-1]
	}
	if len(x.locs) == 0 {
		x.first, x.locs = 0, nil
	}
}
