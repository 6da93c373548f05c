package seglog

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// Group is one Raft group's log in the segment log, a raft.LogStore. Its
// writes return once durable, and fail for good after any failure of the
// log (see the package doc); it is safe for concurrent use.
type Group struct {
	l  *Log
	id uint64
}

var _ raft.LogStore = (*Group)(nil)

// FirstIndex returns the group's first index, 0 if it has no entries.
func (g *Group) FirstIndex() (uint64, error) {
	g.l.mu.RLock()
	defer g.l.mu.RUnlock()
	if x := g.l.groups[g.id]; x != nil {
		return x.first, nil
	}
	return 0, nil
}

// LastIndex returns the group's last index, 0 if it has no entries.
func (g *Group) LastIndex() (uint64, error) {
	g.l.mu.RLock()
	defer g.l.mu.RUnlock()
	if x := g.l.groups[g.id]; x != nil {
		return x.last(), nil
	}
	return 0, nil
}

// GetLog reads entry index into log, or returns raft.ErrLogNotFound.
func (g *Group) GetLog(index uint64, log *raft.Log) error {
	g.l.mu.RLock()
	if g.l.segs == nil {
		g.l.mu.RUnlock()
		return ErrClosed
	}
	var at loc
	var ok bool
	if x := g.l.groups[g.id]; x != nil {
		at, ok = x.get(index)
	}
	if !ok {
		g.l.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	rec := make([]byte, at.n)
	_, err := at.seg.f.ReadAt(rec, at.off)
	g.l.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("segment log: read entry %d of group %x: %w", index, g.id, err)
	}
	body, err := checkRecord(rec)
	if err == nil {
		err = decodeEntry(body, log)
	}
	if err == nil && log.Index != index {
		err = fmt.Errorf("record of entry %d", log.Index)
	}
	if err != nil {
		return fmt.Errorf("%w: entry %d of group %x: %v", ErrCorrupt, index, g.id, err)
	}
	return nil
}

// StoreLog appends one entry.
func (g *Group) StoreLog(log *raft.Log) error { return g.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends logs; they become durable in one of the flusher's
// commits, shared with whatever else was queued.
func (g *Group) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	size := 0
	for _, l := range logs {
		size += recordHeader + entryFixed + 10 + len(l.Data) + len(l.Extensions)
	}
	r := &request{buf: make([]byte, 0, size), ops: make([]op, 0, len(logs))}
	for _, l := range logs {
		var o op
		r.buf, o = appendEntry(r.buf, g.id, l)
		r.ops = append(r.ops, o)
	}
	return g.l.submit(r)
}

// DeleteRange deletes entries min to max inclusive, durably: raft deletes
// a prefix (compaction after a snapshot) or a suffix (entries a new leader
// overwrites). It writes a marker record, so a reopen replays the
// deletion; segments at the head left with no entry are removed.
func (g *Group) DeleteRange(min, max uint64) error {
	r := &request{}
	var o op
	r.buf, o = appendDelete(nil, g.id, min, max)
	r.ops = []op{o}
	return g.l.submit(r)
}
