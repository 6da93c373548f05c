package storage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Snapshot format: a 32-byte header, the bbolt file as tx.WriteTo writes
// it, and the SHA-256 of the file, checked before the file is opened (bbolt
// trusts its pages: a corrupted one can crash the process).
//
//	magic "HRLDSNP1" ‖ uint64be applied index ‖ uint64be term ‖ uint64be file size
//	file (size bytes)
//	sha256(file)
const (
	snapshotMagic     = "HRLDSNP1"
	snapshotHeaderLen = 32
)

// ErrBadSnapshot is returned by Restore when the stream is not a snapshot
// this version wrote, or is truncated, or its file does not match its header.
var ErrBadSnapshot = errors.New("storage: bad snapshot")

// Snapshot is a consistent point-in-time copy of the state, held open as a
// read transaction until Release. It must be released exactly once.
type Snapshot struct {
	tx          *bolt.Tx
	index, term uint64
}

// Snapshot starts a snapshot of the current state. It is cheap: the copy
// happens in WriteTo. Until Release, the file cannot reuse the pages the
// snapshot reads, and Restore and Close wait for it.
func (d *DB) Snapshot() (*Snapshot, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return nil, ErrClosed
	}
	if err := d.flush(); err != nil {
		return nil, err
	}
	tx, err := d.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("begin snapshot: %w", err)
	}
	index, term := readApplied(tx)
	return &Snapshot{tx: tx, index: index, term: term}, nil
}

// Index returns the applied index and term the snapshot reflects.
func (s *Snapshot) Index() (index, term uint64) { return s.index, s.term }

// WriteTo writes the header, the file and its checksum to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	hdr := make([]byte, 0, snapshotHeaderLen)
	hdr = append(hdr, snapshotMagic...)
	hdr = binary.BigEndian.AppendUint64(hdr, s.index)
	hdr = binary.BigEndian.AppendUint64(hdr, s.term)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(s.tx.Size()))
	n, err := w.Write(hdr)
	if err != nil {
		return int64(n), fmt.Errorf("write snapshot header: %w", err)
	}
	h := sha256.New()
	m, err := s.tx.WriteTo(io.MultiWriter(w, h))
	if err != nil {
		return int64(n) + m, fmt.Errorf("write snapshot: %w", err)
	}
	k, err := w.Write(h.Sum(nil))
	if err != nil {
		return int64(n) + m + int64(k), fmt.Errorf("write snapshot checksum: %w", err)
	}
	return int64(n) + m + int64(k), nil
}

// Release ends the snapshot's read transaction.
func (s *Snapshot) Release() {
	_ = s.tx.Rollback() // a read transaction's rollback only releases it
}

// SnapshotFile is a snapshot copied to a temporary file, for readers
// that may take their time. Close it, which removes the file.
type SnapshotFile struct {
	*os.File
	index, term uint64
}

// snapshotCopySuffix marks the temporary copies SaveSnapshot makes next to
// the state file; Open removes any that a crashed process left.
const snapshotCopySuffix = ".save-"

// SaveSnapshot copies a snapshot of the current state to a temporary file
// next to the state file and returns it open at its start. The read
// transaction lasts only as long as the copy, so a slow reader of the file
// holds up neither Close, Restore nor a writer that must grow the file's
// mapping. The copy needs as much free disk as the state.
func (d *DB) SaveSnapshot() (*SnapshotFile, error) {
	s, err := d.Snapshot()
	if err != nil {
		return nil, err
	}
	defer s.Release()
	f, err := os.CreateTemp(filepath.Dir(d.path), filepath.Base(d.path)+snapshotCopySuffix+"*")
	if err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	sf := &SnapshotFile{File: f, index: s.index, term: s.term}
	w := bufio.NewWriterSize(f, 1<<20)
	_, err = s.WriteTo(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = sf.Close() // best effort: the write error is the one to report
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	return sf, nil
}

// Index returns the applied index and term the snapshot reflects.
func (f *SnapshotFile) Index() (index, term uint64) { return f.index, f.term }

// Close closes and removes the file.
func (f *SnapshotFile) Close() error {
	return errors.Join(f.File.Close(), os.Remove(f.Name()))
}

// removeSnapshotCopies removes the copies SaveSnapshot left next to the
// state file at path, best effort: a process that crashed while saving.
func removeSnapshotCopies(path string) {
	copies, _ := filepath.Glob(path + snapshotCopySuffix + "*") // the pattern is well-formed
	for _, c := range copies {
		_ = os.Remove(c) // best effort: a copy left behind only takes space
	}
}

// ReadSnapshotHeader reads the header of a snapshot stream.
func ReadSnapshotHeader(r io.Reader) (index, term, size uint64, err error) {
	hdr := make([]byte, snapshotHeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, 0, 0, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if string(hdr[:8]) != snapshotMagic {
		return 0, 0, 0, fmt.Errorf("%w: unknown format %q", ErrBadSnapshot, hdr[:8])
	}
	return binary.BigEndian.Uint64(hdr[8:]), binary.BigEndian.Uint64(hdr[16:]), binary.BigEndian.Uint64(hdr[24:]), nil
}

// Restore replaces the state with a snapshot stream written by
// Snapshot.WriteTo. It is a no-op (the stream is drained) when the state's
// applied index is already at or past the snapshot's, which is what happens
// when Raft restores its latest snapshot at start over a state file that is
// up to date. Otherwise it writes the file to a temporary path, fsyncs it,
// checks that it opens and holds the header's applied index, renames it
// over the state file, fsyncs the directory and reopens. A stream whose
// checksum does not match is refused (ErrBadSnapshot) before the file is
// opened. It reports whether
// it replaced the state. It must not run concurrently with Apply.
func (d *DB) Restore(r io.Reader) (bool, error) {
	index, _, size, err := ReadSnapshotHeader(r)
	if err != nil {
		return false, err
	}
	cur, _, err := d.AppliedIndex()
	if err != nil {
		return false, err
	}
	if cur >= index {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return false, fmt.Errorf("drain snapshot: %w", err)
		}
		return false, nil
	}
	tmp := d.path + ".restore"
	h := sha256.New()
	err = writeFileSync(tmp, io.TeeReader(io.LimitReader(r, int64(size)), h), int64(size))
	if err == nil {
		err = checkSum(r, h.Sum(nil))
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort: the write or checksum error matters
		return false, err
	}
	if err := checkRestored(tmp, d.opts, index); err != nil {
		_ = os.Remove(tmp) // best effort: the check error matters
		return false, err
	}

	// The new file takes the state file's name while the old handle stays
	// open on the old file: read transactions may still be open on it, and
	// one may be waiting for this very restore to end (raft's snapshot
	// goroutine holds its state-machine snapshot until the main loop, which
	// waits for Restore, takes it), so closing it first could wait for
	// ever. The old handle is closed once its last transaction ends.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return false, ErrClosed
	}
	d.abandonHeld() // AppliedIndex committed it: nothing is held
	old := d.db
	d.db = nil
	d.retire(old)
	if err := os.Rename(tmp, d.path); err != nil {
		return false, fmt.Errorf("restore: rename %q: %w", tmp, err)
	}
	if err := syncDir(filepath.Dir(d.path)); err != nil {
		return false, fmt.Errorf("restore: sync dir: %w", err)
	}
	bdb, err := openBolt(d.path, d.opts)
	if err != nil {
		return false, err
	}
	d.db = bdb
	return true, nil
}

func writeFileSync(path string, r io.Reader, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("restore: create %q: %w", path, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	n, err := io.Copy(w, r)
	if err == nil && n != size {
		err = fmt.Errorf("%w: file is %d bytes, header says %d", ErrBadSnapshot, n, size)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: write %q: %w", path, err)
	}
	return nil
}

// VerifySnapshot reads a whole snapshot stream and checks its header, size
// and checksum, without opening the file. It returns the header's applied
// index and term.
func VerifySnapshot(r io.Reader) (index, term uint64, err error) {
	index, term, size, err := ReadSnapshotHeader(r)
	if err != nil {
		return 0, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, int64(size)))
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if n != int64(size) {
		return 0, 0, fmt.Errorf("%w: file is %d bytes, header says %d", ErrBadSnapshot, n, size)
	}
	if err := checkSum(r, h.Sum(nil)); err != nil {
		return 0, 0, err
	}
	if extra, _ := io.Copy(io.Discard, r); extra != 0 {
		return 0, 0, fmt.Errorf("%w: %d bytes after the checksum", ErrBadSnapshot, extra)
	}
	return index, term, nil
}

// checkSum reads the trailer and compares it with the file's checksum.
func checkSum(r io.Reader, sum []byte) error {
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, want); err != nil {
		return fmt.Errorf("%w: checksum: %v", ErrBadSnapshot, err)
	}
	if !bytes.Equal(sum, want) {
		return fmt.Errorf("%w: file checksum does not match", ErrBadSnapshot)
	}
	return nil
}

func checkRestored(path string, opts Options, index uint64) error {
	opts.InitialMmapSize = 1 << 20
	bdb, err := bolt.Open(path, 0o600, opts.bolt())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	defer bdb.Close()
	var got uint64
	err = bdb.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: bucket %q missing", ErrBadSnapshot, name)
			}
		}
		got, _ = readApplied(tx)
		return nil
	})
	if err != nil {
		return err
	}
	if got != index {
		return fmt.Errorf("%w: file has applied index %d, header says %d", ErrBadSnapshot, got, index)
	}
	return nil
}

// Digest returns the applied index and a SHA-256 over every bucket name,
// key and value in cursor order, read in one transaction. Replicas at equal
// applied index have equal digests.
func (d *DB) Digest() (index uint64, sum [sha256.Size]byte, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		index, _ = readApplied(tx)
		h := sha256.New()
		for _, name := range allBuckets {
			writeField(h, name)
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				writeField(h, k)
				writeField(h, v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		copy(sum[:], h.Sum(nil))
		return nil
	})
	return index, sum, err
}

// writeField writes a length-prefixed field so that field boundaries are
// part of the digest.
func writeField(w io.Writer, b []byte) {
	_, _ = w.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b)))) // hash writes never fail
	_, _ = w.Write(b)
}

// RebaseSnapshot copies a snapshot stream to w, recording index as its
// applied index instead of the one it has. A snapshot restored into
// another cluster (whose Raft log has its own indexes) must record the
// index that cluster's Raft gives it: a lower one and Apply would skip the
// next entries; a higher one and replicas past it would take it for old
// news. It checks the stream like VerifySnapshot and returns the term
// written (the snapshot's).
func RebaseSnapshot(r io.Reader, w io.Writer, index uint64) (term uint64, err error) {
	old, term, size, err := ReadSnapshotHeader(r)
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp("", "herald-rebase-*.db")
	if err != nil {
		return 0, err
	}
	path := tmp.Name()
	tmp.Close()
	defer os.Remove(path)
	h := sha256.New()
	if err := writeFileSync(path, io.TeeReader(io.LimitReader(r, int64(size)), h), int64(size)); err != nil {
		return 0, err
	}
	if err := checkSum(r, h.Sum(nil)); err != nil {
		return 0, err
	}
	if err := checkRestored(path, Options{}, old); err != nil {
		return 0, err
	}
	db, err := Open(path, Options{InitialMmapSize: 1 << 20})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if index != old {
		err := db.db.Update(func(tx *bolt.Tx) error { return writeApplied(tx, index, term) })
		if err != nil {
			return 0, err
		}
	}
	s, err := db.Snapshot()
	if err != nil {
		return 0, err
	}
	defer s.Release()
	if _, err := s.WriteTo(w); err != nil {
		return 0, err
	}
	return term, nil
}
