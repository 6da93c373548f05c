package lossyfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open handle: reads pass through to the backing file, writes,
// size changes and allocations go through the inode's undo log, and fsync
// empties the log. It deliberately does not offer a passthrough
// descriptor, so the kernel sends every write here.
type file struct {
	lf  *fs.LoopbackFile
	lfs *FS
	ino uint64
	in  *fs.Inode
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileStatxer   = (*file)(nil)
	_ fs.FileLseeker   = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
)

// newFile wraps an open loopback handle of inode in and counts it open.
func (f *FS) newFile(lf *fs.LoopbackFile, in *fs.Inode) *file {
	h := &file{lf: lf, lfs: f, ino: in.StableAttr().Ino, in: in}
	f.mu.Lock()
	f.stateLocked(h.ino, in).handles++
	f.mu.Unlock()
	return h
}

// fd returns the handle's backing descriptor.
func (h *file) fd() int {
	fd, _ := h.lf.PassthroughFd() // only fails once released
	return fd
}

// mutate runs fn on the inode's state with its read-write descriptor open.
func (h *file) mutate(fn func(st *fileState) error) syscall.Errno {
	h.lfs.mu.Lock()
	defer h.lfs.mu.Unlock()
	st := h.lfs.stateLocked(h.ino, h.in)
	if err := st.openFdLocked(h.fd()); err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(fn(st))
}

// truncate records and makes a size change.
func (h *file) truncate(size int64) syscall.Errno {
	return h.mutate(func(st *fileState) error { return st.truncateLocked(size) })
}

// Write records what data overwrites and writes it to the backing file.
func (h *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	var n int
	errno := h.mutate(func(st *fileState) error {
		var err error
		n, err = st.writeLocked(data, off)
		return err
	})
	return uint32(n), errno
}

// Allocate supports the modes that only reserve space; others get
// EOPNOTSUPP.
func (h *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return h.mutate(func(st *fileState) error { return st.allocateLocked(int64(off), int64(size), mode) })
}

// Fsync makes the inode's changes durable: it empties the undo log, then
// syncs the backing file.
func (h *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.lfs.mu.Lock()
	h.lfs.fsyncs++
	if st := h.lfs.files[h.ino]; st != nil {
		st.log, st.pending = nil, 0
	}
	h.lfs.mu.Unlock()
	if flags&fsyncDatasync != 0 {
		return fs.ToErrno(unix.Fdatasync(h.fd()))
	}
	return fs.ToErrno(unix.Fsync(h.fd()))
}

// Release closes the handle and forgets the inode's state if nothing
// pending remains.
func (h *file) Release(ctx context.Context) syscall.Errno {
	errno := h.lf.Release(ctx)
	h.lfs.mu.Lock()
	defer h.lfs.mu.Unlock()
	if st := h.lfs.files[h.ino]; st != nil {
		st.handles--
		h.lfs.releaseLocked(st)
	}
	return errno
}

// Read reads the backing file.
func (h *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, buf, off)
}

// Flush passes close(2)'s flush through.
func (h *file) Flush(ctx context.Context) syscall.Errno { return h.lf.Flush(ctx) }

// Getattr stats the backing file.
func (h *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}

// Statx stats the backing file.
func (h *file) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return h.lf.Statx(ctx, flags, mask, out)
}

// Lseek serves SEEK_DATA and SEEK_HOLE from the backing file.
func (h *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}

// fsyncDatasync is FUSE_FSYNC_FDATASYNC: the fsync request is fdatasync(2).
const fsyncDatasync = 1
