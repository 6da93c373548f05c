package seglog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// A record on disk is an 8-byte header, the body's length and the CRC-32C
// of the length and the body (both little-endian uint32), then the body:
//
//	entry:  kindEntry  group index term type(1) appendedAt(int64) uvarint(len(data)) data extensions
//	delete: kindDelete group min max
//
// with every fixed-size field a little-endian uint64 unless noted.
const (
	recordHeader = 8
	kindEntry    = 1
	kindDelete   = 2
	entryFixed   = 1 + 8 + 8 + 8 + 1 + 8 // kind to appendedAt
	deleteBody   = 1 + 8 + 8 + 8
	// maxRecord bounds a body's length, so that a torn length is not
	// taken for a huge record.
	maxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// op is what a record does to the index: an entry put at a, or the
// entries a to b deleted; off and n locate the record in its request's
// buffer.
type op struct {
	kind   byte
	group  uint64
	a, b   uint64
	off, n int
}

func appendRecord(buf []byte, body func([]byte) []byte) ([]byte, int) {
	start := len(buf)
	buf = append(buf, make([]byte, recordHeader)...)
	buf = body(buf)
	n := len(buf) - start - recordHeader
	binary.LittleEndian.PutUint32(buf[start:], uint32(n))
	crc := crc32.Update(0, castagnoli, buf[start:start+4])
	crc = crc32.Update(crc, castagnoli, buf[start+recordHeader:])
	binary.LittleEndian.PutUint32(buf[start+4:], crc)
	return buf, start
}

// appendEntry appends l's record for group to buf, returning its op.
func appendEntry(buf []byte, group uint64, l *raft.Log) ([]byte, op) {
	buf, start := appendRecord(buf, func(b []byte) []byte {
		b = append(b, kindEntry)
		b = binary.LittleEndian.AppendUint64(b, group)
		b = binary.LittleEndian.AppendUint64(b, l.Index)
		b = binary.LittleEndian.AppendUint64(b, l.Term)
		b = append(b, byte(l.Type))
		var at int64
		if !l.AppendedAt.IsZero() {
			at = l.AppendedAt.UnixNano()
		}
		b = binary.LittleEndian.AppendUint64(b, uint64(at))
		b = binary.AppendUvarint(b, uint64(len(l.Data)))
		b = append(b, l.Data...)
		return append(b, l.Extensions...)
	})
	return buf, op{kind: kindEntry, group: group, a: l.Index, off: start, n: len(buf) - start}
}

// appendDelete appends the marker deleting group's entries min to max.
func appendDelete(buf []byte, group, min, max uint64) ([]byte, op) {
	buf, start := appendRecord(buf, func(b []byte) []byte {
		b = append(b, kindDelete)
		b = binary.LittleEndian.AppendUint64(b, group)
		b = binary.LittleEndian.AppendUint64(b, min)
		return binary.LittleEndian.AppendUint64(b, max)
	})
	return buf, op{kind: kindDelete, group: group, a: min, b: max, off: start, n: len(buf) - start}
}

// checkRecord checks the header and checksum of the record rec (header
// and body) and returns its body.
func checkRecord(rec []byte) ([]byte, error) {
	if len(rec) < recordHeader {
		return nil, fmt.Errorf("record of %d bytes, want at least %d", len(rec), recordHeader)
	}
	n := binary.LittleEndian.Uint32(rec)
	if int(n) != len(rec)-recordHeader {
		return nil, fmt.Errorf("record length %d, want %d", n, len(rec)-recordHeader)
	}
	crc := crc32.Update(0, castagnoli, rec[:4])
	crc = crc32.Update(crc, castagnoli, rec[recordHeader:])
	if crc != binary.LittleEndian.Uint32(rec[4:]) {
		return nil, fmt.Errorf("record checksum mismatch")
	}
	return rec[recordHeader:], nil
}

// parseOp reads the op of a checked body.
func parseOp(body []byte) (op, error) {
	if len(body) == 0 {
		return op{}, fmt.Errorf("empty record")
	}
	switch body[0] {
	case kindEntry:
		if len(body) < entryFixed+1 {
			return op{}, fmt.Errorf("entry record of %d bytes", len(body))
		}
		return op{kind: kindEntry, group: binary.LittleEndian.Uint64(body[1:]), a: binary.LittleEndian.Uint64(body[9:])}, nil
	case kindDelete:
		if len(body) != deleteBody {
			return op{}, fmt.Errorf("delete record of %d bytes, want %d", len(body), deleteBody)
		}
		return op{kind: kindDelete, group: binary.LittleEndian.Uint64(body[1:]),
			a: binary.LittleEndian.Uint64(body[9:]), b: binary.LittleEndian.Uint64(body[17:])}, nil
	}
	return op{}, fmt.Errorf("record of unknown kind %d", body[0])
}

// decodeEntry fills l from an entry body; l's slices alias body.
func decodeEntry(body []byte, l *raft.Log) error {
	o, err := parseOp(body)
	if err != nil {
		return err
	}
	if o.kind != kindEntry {
		return fmt.Errorf("record of kind %d where an entry was indexed", o.kind)
	}
	*l = raft.Log{Index: o.a, Term: binary.LittleEndian.Uint64(body[17:]), Type: raft.LogType(body[25])}
	if at := int64(binary.LittleEndian.Uint64(body[26:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	n, k := binary.Uvarint(body[entryFixed:])
	rest := body[entryFixed:]
	if k <= 0 || uint64(len(rest)-k) < n {
		return fmt.Errorf("entry %d: bad data length", o.a)
	}
	rest = rest[k:]
	l.Data = rest[:n:n]
	if ext := rest[n:]; len(ext) > 0 {
		l.Extensions = ext
	}
	return nil
}
