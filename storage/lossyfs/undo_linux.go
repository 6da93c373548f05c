package lossyfs

import (
	"fmt"
	"math/rand/v2"

	"golang.org/x/sys/unix"
)

// undo is one pending (not yet fsynced) change to a file, recorded as what
// it overwrote: the file's size before it and the bytes it replaced. The
// new bytes are in the backing file already.
type undo struct {
	off     int64  // first byte the change touched
	n       int64  // bytes written; 0 for a size change
	old     []byte // previous content of [off, off+len(old)), all below oldSize
	oldSize int64  // file size before the change
}

// fileState is the pending state of one inode: an O_RDWR descriptor of the
// backing file, the open handles through the mount, and the undo log of
// everything written since the last fsync. The FS's mu guards it.
type fileState struct {
	ino     uint64
	fd      int // -1 until the first change
	handles int
	log     []undo
	pending int64 // bytes written since the last fsync
}

// openFdLocked makes sure st has its own read-write descriptor, reopening
// the backing file through src (a descriptor of it) so that a write-only
// or read-only handle can still record what it overwrites.
func (st *fileState) openFdLocked(src int) error {
	if st.fd >= 0 {
		return nil
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", src), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	st.fd = fd
	return nil
}

// sizeLocked returns the backing file's current size.
func (st *fileState) sizeLocked() (int64, error) {
	var s unix.Stat_t
	if err := unix.Fstat(st.fd, &s); err != nil {
		return 0, err
	}
	return s.Size, nil
}

// readOldLocked returns the current content of [off, min(off+n, size)).
func (st *fileState) readOldLocked(off, n, size int64) ([]byte, error) {
	if off >= size {
		return nil, nil
	}
	old := make([]byte, min(n, size-off))
	for done := 0; done < len(old); {
		m, err := unix.Pread(st.fd, old[done:], off+int64(done))
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return old[:done], nil
		}
		done += m
	}
	return old, nil
}

// writeLocked records what data at off overwrites, then writes it.
func (st *fileState) writeLocked(data []byte, off int64) (int, error) {
	size, err := st.sizeLocked()
	if err != nil {
		return 0, err
	}
	old, err := st.readOldLocked(off, int64(len(data)), size)
	if err != nil {
		return 0, err
	}
	n, err := unix.Pwrite(st.fd, data, off)
	if n > 0 {
		st.log = append(st.log, undo{off: off, n: int64(n), old: old[:min(len(old), n)], oldSize: size})
		st.pending += int64(n)
	}
	return n, err
}

// truncateLocked records what a size change to size loses, then makes it.
func (st *fileState) truncateLocked(size int64) error {
	cur, err := st.sizeLocked()
	if err != nil {
		return err
	}
	if cur == size {
		return nil
	}
	old, err := st.readOldLocked(size, cur-size, cur)
	if err != nil {
		return err
	}
	if err := unix.Ftruncate(st.fd, size); err != nil {
		return err
	}
	st.log = append(st.log, undo{off: min(size, cur), old: old, oldSize: cur})
	return nil
}

// allocateLocked runs fallocate(2) for the modes that only reserve space
// (0 and FALLOC_FL_KEEP_SIZE), recording a size growth as a size change.
func (st *fileState) allocateLocked(off, n int64, mode uint32) error {
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return unix.EOPNOTSUPP
	}
	cur, err := st.sizeLocked()
	if err != nil {
		return err
	}
	if err := unix.Fallocate(st.fd, mode, off, n); err != nil {
		return err
	}
	if mode == 0 && off+n > cur {
		st.log = append(st.log, undo{off: cur, oldSize: cur})
	}
	return nil
}

// loseLocked rolls the file back to a random prefix of its pending log:
// changes before a cut point stay, a write at the cut keeps a random
// number of its leading bytes, and everything after it is undone. It
// reports what stayed and what went, and leaves the log empty.
func (st *fileState) loseLocked(rng *rand.Rand) (FileReport, error) {
	r := FileReport{Pending: len(st.log), PendingBytes: st.pending}
	cut := rng.IntN(len(st.log) + 1)
	var torn int64 = -1
	if cut < len(st.log) && st.log[cut].n > 0 {
		torn = rng.Int64N(st.log[cut].n)
	}
	for i := len(st.log) - 1; i >= cut; i-- {
		u := st.log[i]
		keep := int64(0)
		if i == cut && torn >= 0 {
			keep = torn
		}
		if err := u.revert(st.fd, keep); err != nil {
			return r, err
		}
		r.DroppedBytes += u.n - keep
		r.KeptBytes += keep
	}
	for _, u := range st.log[:cut] {
		r.KeptBytes += u.n
	}
	r.Kept = cut
	r.TornBytes = max(torn, 0)
	st.log, st.pending = nil, 0
	return r, nil
}

// revert undoes u except for its first keep bytes (only a write keeps any).
func (u undo) revert(fd int, keep int64) error {
	size := u.oldSize
	if keep > 0 {
		size = max(size, u.off+keep)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		return err
	}
	if int64(len(u.old)) <= keep {
		return nil
	}
	old := u.old[keep:]
	for off := u.off + keep; len(old) > 0; {
		m, err := unix.Pwrite(fd, old, off)
		if err != nil {
			return err
		}
		old, off = old[m:], off+int64(m)
	}
	return nil
}
