package seglog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// recover rebuilds the index from the segments in dir and leaves the
// newest open for appends. Segments before a gap in the sequence are left
// from a compaction whose removals a crash made partly undone, and are
// removed; so are the head segments with no live entry.
func (l *Log) recover() error {
	seqs, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	k := 0 // seqs[k:] is the run without a gap that ends at the newest
	for i := len(seqs) - 1; i > 0; i-- {
		if seqs[i-1] != seqs[i]-1 {
			k = i
			break
		}
	}
	changed := false
	for _, seq := range seqs[:k] {
		if err := os.Remove(filepath.Join(l.dir, segmentName(seq))); err != nil {
			return fmt.Errorf("remove segment before a gap: %w", err)
		}
		changed = true
	}
	next := uint64(1)
	for i, seq := range seqs[k:] {
		next = seq + 1
		s, err := l.replay(seq, k+i == len(seqs)-1)
		if err != nil {
			return err
		}
		if s == nil {
			next, changed = seq, true
			continue
		}
		l.segs = append(l.segs, s)
	}
	if len(l.segs) == 0 {
		s, err := createSegment(l.dir, next)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
	}
	for _, s := range l.compactLocked() {
		if err := s.f.Close(); err != nil {
			return err
		}
		if err := os.Remove(s.path); err != nil {
			return fmt.Errorf("remove compacted segment: %w", err)
		}
		changed = true
	}
	if changed {
		return syncDir(l.dir)
	}
	return nil
}

// replay reads segment seq into the index. In the last segment, which a
// crash may have left torn, the first record that is short or fails its
// checksum ends the log: the file is truncated there (and a segment whose
// header is torn is removed: replay returns nil). In any other segment it
// is ErrCorrupt.
func (l *Log) replay(seq uint64, last bool) (*segment, error) {
	path := filepath.Join(l.dir, segmentName(seq))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	s := &segment{seq: seq, path: path, f: f}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	end := fi.Size()
	r := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, segHeader)
	if _, err := io.ReadFull(r, hdr); err != nil || string(hdr[:len(segMagic)]) != segMagic ||
		binary.LittleEndian.Uint64(hdr[len(segMagic):]) != seq {
		f.Close()
		if !last {
			return nil, fmt.Errorf("%w: %s: bad header", ErrCorrupt, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove segment with a torn header: %w", err)
		}
		return nil, nil
	}
	off := int64(segHeader)
	var rec []byte
	var bad error
	for off < end {
		if end-off < recordHeader {
			bad = errors.New("short record header")
			break
		}
		rec = append(rec[:0], make([]byte, recordHeader)...)
		if _, err := io.ReadFull(r, rec); err != nil {
			f.Close()
			return nil, err
		}
		n := int64(binary.LittleEndian.Uint32(rec))
		if n == 0 || n > maxRecord || n > end-off-recordHeader {
			bad = fmt.Errorf("record length %d with %d bytes left", n, end-off-recordHeader)
			break
		}
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(r, rec[recordHeader:]); err != nil {
			f.Close()
			return nil, err
		}
		body, err := checkRecord(rec)
		if err != nil {
			bad = err
			break
		}
		o, err := parseOp(body)
		if err != nil {
			bad = err
			break
		}
		l.applyLocked(o, loc{seg: s, off: off, n: len(rec)})
		off += int64(len(rec))
	}
	if bad != nil {
		if !last {
			f.Close()
			return nil, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, path, off, bad)
		}
		if err := f.Truncate(off); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn tail of %s at %d: %w", path, off, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
	}
	s.size = off
	return s, nil
}
