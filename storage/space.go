package storage

import (
	"errors"
	"io/fs"
	"syscall"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// noRoom reports whether err, from a bbolt write transaction, failed for
// lack of room before anything was synced, so that the transaction can be
// run again once there is room:
//
//   - bolterrors.ErrMaxSizeReached: page allocation refused to grow the
//     file past Options.MaxSize; nothing was written.
//   - a *fs.PathError from the "write" of a page (os.File.WriteAt) with
//     ENOSPC or EDQUOT: the pages written so far are free pages of the
//     committed state (bbolt copies on write), and the meta page that
//     would commit them is written only after they are synced. A torn
//     meta page fails its checksum and bbolt uses the other one.
//
// Everything else is not retryable. In particular bbolt returns the
// fdatasync error as a bare errno, which may be EIO or even ENOSPC (on
// filesystems that allocate at writeback): after a failed sync the kernel
// may have dropped the pages it could not write, and a retry would commit
// a meta page pointing at them ("fsyncgate"). The file growth bbolt syncs
// (Truncate, then Sync) fails with unwrapped text, and is fatal too.
func noRoom(err error) bool {
	if errors.Is(err, bolterrors.ErrMaxSizeReached) {
		return true
	}
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Op == "write" &&
		(errors.Is(pe.Err, syscall.ENOSPC) || errors.Is(pe.Err, syscall.EDQUOT))
}

// Size returns how many bytes of the state file hold data: its pages up to
// the high-water mark less the free ones. It is what a state quota is
// measured against; the file on disk is larger, since bbolt grows it ahead
// of use and never shrinks it. Safe to call concurrently with Apply.
func (d *DB) Size() (int64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return 0, ErrClosed
	}
	if err := d.flush(); err != nil {
		return 0, err
	}
	var size int64
	if err := d.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	}); err != nil {
		return 0, err
	}
	return max(size-int64(d.db.Stats().FreeAlloc), 0), nil
}
