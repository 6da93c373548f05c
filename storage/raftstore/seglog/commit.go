package seglog

import (
	"fmt"
	"os"
)

// commit writes the records of reqs to the active segment with one write
// and one fdatasync (plus a directory fsync when the segment is new), then
// points the index at them. It runs on the flusher only, which is the one
// goroutine that changes segs, so it reads them without the lock. A
// failure is sticky: every later commit and submit returns it.
func (l *Log) commit(reqs []*request) error {
	if err := l.refusal(); err != nil {
		return err
	}
	total := 0
	for _, r := range reqs {
		total += len(r.buf)
	}
	active := l.segs[len(l.segs)-1]
	if active.size > int64(segHeader) && active.size+int64(total) > l.segSize {
		s, err := createSegment(l.dir, active.seq+1)
		if err != nil {
			return l.fail(fmt.Errorf("segment log %s: create segment: %w", l.dir, err))
		}
		l.mu.Lock()
		l.segs = append(l.segs, s)
		l.mu.Unlock()
		active = s
	}
	fresh := active.size == 0
	w := make([]byte, 0, total+segHeader)
	if fresh {
		w = appendSegHeader(w, active.seq)
	}
	base := active.size + int64(len(w))
	for _, r := range reqs {
		w = append(w, r.buf...)
	}
	if _, err := active.f.WriteAt(w, active.size); err != nil {
		return l.fail(fmt.Errorf("segment log: write %d bytes: %w", len(w), err))
	}
	l.writes.Add(1)
	if err := datasync(active.f); err != nil {
		return l.fail(fmt.Errorf("segment log: %w", err))
	}
	l.syncs.Add(1)
	if fresh {
		if err := syncDir(l.dir); err != nil {
			return l.fail(fmt.Errorf("segment log: sync dir %s: %w", l.dir, err))
		}
		l.syncs.Add(1)
	}

	l.mu.Lock()
	active.size += int64(len(w))
	deleted := false
	off := base
	for _, r := range reqs {
		for _, o := range r.ops {
			l.applyLocked(o, loc{seg: active, off: off + int64(o.off), n: o.n})
			deleted = deleted || o.kind == kindDelete
		}
		l.records.Add(uint64(len(r.ops)))
		off += int64(len(r.buf))
	}
	var drop []*segment
	if deleted {
		drop = l.compactLocked()
	}
	l.mu.Unlock()
	removeSegments(drop)
	return nil
}

// applyLocked applies one record's op to the index; at is the record.
func (l *Log) applyLocked(o op, at loc) {
	x := l.groups[o.group]
	switch o.kind {
	case kindEntry:
		if x == nil {
			x = new(index)
			l.groups[o.group] = x
		}
		x.put(o.a, at)
	case kindDelete:
		if x == nil {
			return
		}
		x.del(o.a, o.b)
		if len(x.locs) == 0 {
			delete(l.groups, o.group)
		}
	}
}

// compactLocked detaches the segments at the head that no entry points
// into, never the active one, and returns them for removeSegments. Only
// whole segments at the head go: a marker deletes only entries written
// before it, so once every segment up to a marker's is gone, so is every
// entry it deleted, and replay cannot bring one back.
func (l *Log) compactLocked() []*segment {
	var drop []*segment
	for len(l.segs) > 1 && l.segs[0].live == 0 {
		drop = append(drop, l.segs[0])
		l.segs = l.segs[1:]
	}
	return drop
}

// removeSegments closes and removes detached segments, oldest first. It is
// best effort: a segment left behind holds no live entry, and the next
// Open removes it (it is at the head again, or before a gap).
func removeSegments(segs []*segment) {
	for _, s := range segs {
		_ = s.f.Close()       // best effort, see above
		_ = os.Remove(s.path) // best effort, see above
	}
}
