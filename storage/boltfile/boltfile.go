// Package boltfile checks a bbolt file before bbolt maps it. bbolt
// creates a file with one write of its first four pages and an fdatasync;
// a power loss before that sync can leave a shorter file whose meta pages
// point past its end, and bbolt, mapping it, dies of SIGBUS at every
// start. Such a file never held a commit (commits come after the
// creation's sync, and never shrink the file), so it is removed and bbolt
// creates it again. A file that did hold commits but is shorter than its
// meta pages say lost data its disk had synced: that is refused with an
// error that says so, never a crash.
package boltfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// initPages is how many pages bbolt writes when it creates a file.
const initPages = 4

// magic marks a bbolt meta page.
const magic = 0xED0CDAED

// CheckTorn removes path if it is a bbolt file whose creation was cut
// short (and says so with removed), and returns an error if it is shorter
// than its committed meta pages need. A missing file is fine.
func CheckTorn(path string) (removed bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return false, err
	}
	size := fi.Size()
	// Only the two meta pages are read, whatever the file's size.
	head := make([]byte, min(size, 2*maxPageSize))
	_, err = io.ReadFull(io.NewSectionReader(f, 0, int64(len(head))), head)
	f.Close()
	if err != nil {
		return false, fmt.Errorf("read the meta pages of %s: %w", path, err)
	}
	psz := os.Getpagesize()
	if m, ok := meta(head, 0); ok {
		psz = int(m.pageSize)
	}
	if size < int64(initPages*psz) {
		if err := os.Remove(path); err != nil {
			return false, fmt.Errorf("remove %s, cut short while it was created: %w", path, err)
		}
		return true, syncDir(filepath.Dir(path))
	}
	for _, off := range []int{0, psz} {
		if m, ok := meta(head, off); ok && m.highWater*uint64(m.pageSize) > uint64(size) {
			return false, fmt.Errorf("%s is %d bytes, but its commit %d needs %d: the disk lost data it had synced; "+
				"remove this node from the cluster and start it with an empty data directory", path, size, m.txid, m.highWater*uint64(m.pageSize))
		}
	}
	return false, nil
}

// maxPageSize bounds the page sizes CheckTorn reads meta pages for.
const maxPageSize = 64 << 10

type metaPage struct {
	pageSize  uint32
	highWater uint64 // pgid: the first page past the file's used pages
	txid      uint64
}

// meta reads the meta page at off, if it is whole and marked.
func meta(b []byte, off int) (metaPage, bool) {
	const header = 16 // page id, flags, count, overflow
	if off+header+64 > len(b) {
		return metaPage{}, false
	}
	m := b[off+header:]
	if binary.LittleEndian.Uint32(m[0:]) != magic {
		return metaPage{}, false
	}
	// magic, version, page size, flags, root bucket (root, sequence),
	// freelist, pgid, txid, checksum.
	return metaPage{pageSize: binary.LittleEndian.Uint32(m[8:]), highWater: binary.LittleEndian.Uint64(m[40:]),
		txid: binary.LittleEndian.Uint64(m[48:])}, true
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
