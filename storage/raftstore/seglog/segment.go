package seglog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A segment file starts with a header: the magic and the segment's
// sequence number (little-endian uint64). Records follow.
const (
	segMagic    = "HRLDSEG1"
	segHeader   = len(segMagic) + 8
	segSuffix   = ".seg"
	segNameBase = 16
)

// segment is one file of the log. size, live and f are guarded by the
// Log's mu (size is only written by the flusher).
type segment struct {
	seq  uint64
	path string
	f    *os.File
	size int64 // bytes written: header and every record
	live int   // index entries pointing into it
}

func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segSuffix) }

// listSegments returns the sequence numbers of dir's segment files in
// order.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok || len(name) != segNameBase {
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

func appendSegHeader(b []byte, seq uint64) []byte {
	b = append(b, segMagic...)
	return append(b, byte(seq), byte(seq>>8), byte(seq>>16), byte(seq>>24),
		byte(seq>>32), byte(seq>>40), byte(seq>>48), byte(seq>>56))
}

// createSegment creates segment seq in dir, empty: its header goes out
// with its first write.
func createSegment(dir string, seq uint64) (*segment, error) {
	path := filepath.Join(dir, segmentName(seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &segment{seq: seq, path: path, f: f}, nil
}

// syncDir fsyncs dir, making the files created or removed in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
