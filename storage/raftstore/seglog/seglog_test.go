package seglog_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/storage/raftstore/seglog"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, dir string, segSize int64) *seglog.Log {
	t.Helper()
	l, err := seglog.Open(seglog.Config{Dir: dir, SegmentSize: segSize})
	must(t, err)
	t.Cleanup(func() { must(t, l.Close()) })
	return l
}

func entry(i, term, group uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "%d-%d-%d", group, i, term),
		AppendedAt: time.Unix(1700000000, int64(i))}
	if i%3 == 0 {
		l.Extensions = []byte("ext")
	}
	if i%7 == 0 {
		l.Type = raft.LogConfiguration
	}
	return l
}

func appendRange(t *testing.T, g raft.LogStore, first, last, term, group uint64) {
	t.Helper()
	var logs []*raft.Log
	for i := first; i <= last; i++ {
		logs = append(logs, entry(i, term, group))
	}
	must(t, g.StoreLogs(logs))
}

// span is a run of entries of one term, as entry makes them.
type span struct{ first, last, term uint64 }

// wantLog checks that g holds exactly the entries of spans, in order and
// without gaps between them, or nothing if spans is empty.
func wantLog(t *testing.T, what string, g raft.LogStore, group uint64, spans ...span) {
	t.Helper()
	var first, last uint64
	if len(spans) > 0 {
		first, last = spans[0].first, spans[len(spans)-1].last
	}
	f, err := g.FirstIndex()
	must(t, err)
	l, err := g.LastIndex()
	must(t, err)
	if f != first || l != last {
		t.Fatalf("%s: first %d last %d, want %d and %d", what, f, l, first, last)
	}
	for _, s := range spans {
		for i := s.first; i <= s.last; i++ {
			var got raft.Log
			must(t, g.GetLog(i, &got))
			want := entry(i, s.term, group)
			if got.Index != i || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) ||
				!bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
				t.Fatalf("%s: entry %d: got %+v, want %+v", what, i, got, want)
			}
		}
	}
	var none raft.Log
	for _, i := range []uint64{first - 1, last + 1} {
		if i == 0 && first == 0 {
			continue
		}
		if err := g.GetLog(i, &none); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("%s: entry %d outside %d-%d: got %v, want raft.ErrLogNotFound", what, i, first, last, err)
		}
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	must(t, err)
	slices.Sort(m)
	return m
}

// TestAppendReopen appends to two groups in single and batched appends,
// reads them back, and reads them back again after a reopen.
func TestAppendReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := seglog.Open(seglog.DefaultConfig(dir))
	must(t, err)
	a, b := l.Group(1), l.Group(2)
	wantLog(t, "empty", a, 1)
	for i := uint64(1); i <= 10; i++ {
		must(t, a.StoreLog(entry(i, 2, 1)))
	}
	appendRange(t, b, 5, 60, 3, 2)
	appendRange(t, a, 11, 40, 2, 1)
	wantLog(t, "a", a, 1, span{1, 40, 2})
	wantLog(t, "b", b, 2, span{5, 60, 3})
	if st := l.Stats(); st.Records != 96 || st.Syncs == 0 || st.Syncs > st.Records+1 {
		t.Errorf("stats: got %+v, want 96 records and 1 to 97 syncs", st)
	}
	must(t, l.Close())
	must(t, l.Close())
	if err := a.StoreLog(entry(41, 2, 1)); !errors.Is(err, seglog.ErrClosed) {
		t.Fatalf("append after close: got %v, want ErrClosed", err)
	}

	l = open(t, dir, 0)
	a, b = l.Group(1), l.Group(2)
	wantLog(t, "a reopened", a, 1, span{1, 40, 2})
	wantLog(t, "b reopened", b, 2, span{5, 60, 3})
	must(t, a.StoreLog(entry(41, 2, 1)))
	wantLog(t, "a appended", a, 1, span{1, 41, 2})
}

// TestTornTail damages the last record of the segment the way a crash
// during its write can, and checks that a reopen drops it and keeps every
// entry before it, and that the log then takes appends again.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"cut in the body", func(b []byte) []byte { return b[:len(b)-5] }},
		{"cut in the header", func(b []byte) []byte { return b[:len(b)-lastRecordLen+3] }},
		{"byte flipped in the data", func(b []byte) []byte { b[len(b)-4] ^= 0x20; return b }},
		{"length flipped", func(b []byte) []byte { b[len(b)-lastRecordLen] ^= 0x01; return b }},
		{"zeros after it", func(b []byte) []byte { return append(b, make([]byte, 100)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := seglog.Open(seglog.DefaultConfig(dir))
			must(t, err)
			appendRange(t, l.Group(7), 1, 19, 2, 7)
			must(t, l.Group(7).StoreLog(entry(20, 2, 7))) // 10 bytes of data, lastRecordLen in all
			must(t, l.Close())
			segs := segments(t, dir)
			b, err := os.ReadFile(segs[len(segs)-1])
			must(t, err)
			must(t, os.WriteFile(segs[len(segs)-1], tc.damage(b), 0o600))

			l = open(t, dir, 0)
			want := uint64(19)
			if tc.name == "zeros after it" {
				want = 20
			}
			wantLog(t, "reopened", l.Group(7), 7, span{1, want, 2})
			appendRange(t, l.Group(7), want+1, 25, 2, 7)
			must(t, l.Close())
			l = open(t, dir, 0)
			wantLog(t, "appended after the repair", l.Group(7), 7, span{1, 25, 2})
		})
	}
}

// TestTornBatch damages a record before the last one of the last write
// (a crash can persist a write's blocks in any order): the reopen drops it
// and every record after it, and an append in its place does not bring the
// dropped ones back.
func TestTornBatch(t *testing.T) {
	dir := t.TempDir()
	l, err := seglog.Open(seglog.DefaultConfig(dir))
	must(t, err)
	appendRange(t, l.Group(7), 1, 17, 2, 7)
	appendRange(t, l.Group(7), 18, 20, 2, 7)
	must(t, l.Close())
	segs := segments(t, dir)
	b, err := os.ReadFile(segs[len(segs)-1])
	must(t, err)
	b[len(b)-lastRecordLen-4] ^= 0x20 // in entry 19's data
	must(t, os.WriteFile(segs[len(segs)-1], b, 0o600))

	l = open(t, dir, 0)
	wantLog(t, "reopened", l.Group(7), 7, span{1, 18, 2})
	must(t, l.Group(7).StoreLog(entry(19, 3, 7))) // a record of the same length
	must(t, l.Close())
	l = open(t, dir, 0)
	wantLog(t, "rewritten, reopened", l.Group(7), 7, span{1, 18, 2}, span{19, 19, 3})
}

// lastRecordLen is the length of entry 20's record: 8 bytes of header,
// 34 fixed, 1 of length and "7-20-2".
const lastRecordLen = 8 + 34 + 1 + 6

// TestSuffixTruncation deletes a conflicting suffix, as a follower does
// for a new leader, appends the leader's entries in its place, and checks
// the result survives a reopen.
func TestSuffixTruncation(t *testing.T) {
	dir := t.TempDir()
	l, err := seglog.Open(seglog.DefaultConfig(dir))
	must(t, err)
	g := l.Group(3)
	appendRange(t, g, 1, 100, 2, 3)
	must(t, g.DeleteRange(91, 100))
	wantLog(t, "truncated", g, 3, span{1, 90, 2})
	must(t, l.Close())

	l, err = seglog.Open(seglog.DefaultConfig(dir))
	must(t, err)
	g = l.Group(3)
	wantLog(t, "truncated, reopened", g, 3, span{1, 90, 2})
	appendRange(t, g, 91, 95, 4, 3)
	must(t, g.DeleteRange(94, 95))
	must(t, l.Close())

	l = open(t, dir, 0)
	wantLog(t, "rewritten, reopened", l.Group(3), 3, span{1, 90, 2}, span{91, 93, 4})
}

// TestPrefixDelete compacts two groups sharing small segments: a segment
// goes only when neither group has an entry left in it, and what is
// compacted stays so after a reopen.
func TestPrefixDelete(t *testing.T) {
	dir := t.TempDir()
	const segSize = 4 << 10
	l, err := seglog.Open(seglog.Config{Dir: dir, SegmentSize: segSize})
	must(t, err)
	a, b := l.Group(10), l.Group(11)
	for i := uint64(1); i <= 300; i += 10 {
		appendRange(t, a, i, i+9, 2, 10)
		appendRange(t, b, i, i+9, 2, 11)
	}
	n := len(segments(t, dir))
	if n < 5 {
		t.Fatalf("%d segments of %d bytes for 600 entries, want at least 5", n, segSize)
	}
	must(t, a.DeleteRange(1, 250))
	wantLog(t, "a compacted", a, 10, span{251, 300, 2})
	if got := len(segments(t, dir)); got != n {
		t.Fatalf("segments after compacting only a: got %d, want %d (b's entries are in them)", got, n)
	}
	must(t, b.DeleteRange(1, 200))
	wantLog(t, "b compacted", b, 11, span{201, 300, 2})
	if got := len(segments(t, dir)); got >= n {
		t.Fatalf("segments after compacting both: got %d, want fewer than %d", got, n)
	}
	must(t, l.Close())

	l, err = seglog.Open(seglog.Config{Dir: dir, SegmentSize: segSize})
	must(t, err)
	a, b = l.Group(10), l.Group(11)
	wantLog(t, "a reopened", a, 10, span{251, 300, 2})
	wantLog(t, "b reopened", b, 11, span{201, 300, 2})
	must(t, a.DeleteRange(251, 300))
	must(t, b.DeleteRange(201, 300))
	wantLog(t, "a emptied", a, 10)
	if got := len(segments(t, dir)); got != 1 {
		t.Fatalf("segments with both groups empty: got %d, want 1 (the one written)", got)
	}
	must(t, l.Close())
	l = open(t, dir, segSize)
	wantLog(t, "a emptied, reopened", l.Group(10), 10)
	wantLog(t, "b emptied, reopened", l.Group(11), 11)
}

// TestUndoneRemoval brings back a segment that compaction removed, as a
// crash can when the removal of a later segment reached the disk and its
// own did not. Its entries of a group that was dropped since would come
// back with it (the marker that dropped them was in a later segment, also
// removed), so the reopen must not replay it.
func TestUndoneRemoval(t *testing.T) {
	dir := t.TempDir()
	const segSize = 2 << 10
	l, err := seglog.Open(seglog.Config{Dir: dir, SegmentSize: segSize})
	must(t, err)
	a, b := l.Group(5), l.Group(6)
	appendRange(t, b, 1, 10, 2, 6)
	for i := uint64(1); i <= 200; i += 10 {
		appendRange(t, a, i, i+9, 2, 5)
	}
	must(t, b.DeleteRange(1, 10))
	for i := uint64(201); i <= 400; i += 10 {
		appendRange(t, a, i, i+9, 2, 5)
	}
	segs := segments(t, dir)
	first, err := os.ReadFile(segs[0])
	must(t, err)
	must(t, a.DeleteRange(1, 350))
	must(t, l.Close())
	if got := segments(t, dir); len(got) >= len(segs)/2 {
		t.Fatalf("segments after compaction: got %v, want fewer than half of %v", got, segs)
	}
	must(t, os.WriteFile(segs[0], first, 0o600))

	l = open(t, dir, segSize)
	wantLog(t, "a reopened with the old segment back", l.Group(5), 5, span{351, 400, 2})
	wantLog(t, "b reopened with the old segment back", l.Group(6), 6)
	if got := segments(t, dir); got[0] == segs[0] {
		t.Fatalf("segments after the reopen: got %v, want %s removed", got, segs[0])
	}
}

// TestCorruptOlderSegment flips a byte in a segment that is not the last:
// only the last can be torn by a crash, so Open refuses the log.
func TestCorruptOlderSegment(t *testing.T) {
	dir := t.TempDir()
	l, err := seglog.Open(seglog.Config{Dir: dir, SegmentSize: 2 << 10})
	must(t, err)
	appendRange(t, l.Group(1), 1, 100, 2, 1)
	for i := uint64(101); i <= 200; i += 10 {
		appendRange(t, l.Group(1), i, i+9, 2, 1)
	}
	must(t, l.Close())
	segs := segments(t, dir)
	if len(segs) < 2 {
		t.Fatalf("%d segments, want at least 2", len(segs))
	}
	b, err := os.ReadFile(segs[0])
	must(t, err)
	b[len(b)/2] ^= 0x40
	must(t, os.WriteFile(segs[0], b, 0o600))
	if l, err := seglog.Open(seglog.Config{Dir: dir}); !errors.Is(err, seglog.ErrCorrupt) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("open with a corrupt older segment: got %v, want ErrCorrupt", err)
	}
}

// TestConcurrent appends to many groups from as many goroutines, one entry
// at a time, while readers read and a compactor deletes old entries, then
// checks every group after a reopen.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	const groups, per = 16, 200
	l, err := seglog.Open(seglog.Config{Dir: dir, SegmentSize: 8 << 10})
	must(t, err)
	var wg sync.WaitGroup
	for g := range uint64(groups) {
		wg.Go(func() {
			s := l.Group(g)
			for i := uint64(1); i <= per; i++ {
				if err := s.StoreLog(entry(i, 2, g)); err != nil {
					t.Errorf("group %d entry %d: %v", g, i, err)
					return
				}
				var got raft.Log
				if err := s.GetLog(i, &got); err != nil || got.Index != i {
					t.Errorf("group %d: read back entry %d: got %d, %v", g, i, got.Index, err)
					return
				}
				if i%50 == 0 && g%2 == 0 {
					if err := s.DeleteRange(1, i-10); err != nil {
						t.Errorf("group %d: delete 1-%d: %v", g, i-10, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	st := l.Stats()
	if st.Records < groups*per || st.Syncs > st.Writes+uint64(len(segments(t, dir)))*2 {
		t.Errorf("stats: got %+v, want at least %d records and about one sync a write", st, groups*per)
	}
	must(t, l.Close())
	l = open(t, dir, 8<<10)
	for g := range uint64(groups) {
		want := span{1, per, 2}
		if g%2 == 0 {
			want.first = per - 10 + 1
		}
		wantLog(t, fmt.Sprintf("group %d reopened", g), l.Group(g), g, want)
	}
}
