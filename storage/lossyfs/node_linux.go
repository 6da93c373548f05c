package lossyfs

import (
	"context"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node whose file handles record their writes and
// whose size changes are recorded too. Namespace operations pass through.
type node struct {
	*fs.LoopbackNode
	lfs *FS
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeUnlinker    = (*node)(nil)
	_ fs.NodeRenamer     = (*node)(nil)
)

// WrapChild makes every node below the root a *node too.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if lb, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: lb, lfs: n.lfs}
	}
	return ops
}

// Open opens the backing file; O_TRUNC is done as a recorded size change.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fflags, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_TRUNC)
	if errno != 0 {
		return nil, 0, errno
	}
	f := n.lfs.newFile(fh.(*fs.LoopbackFile), n.EmbeddedInode())
	if flags&syscall.O_TRUNC != 0 {
		if errno := f.truncate(0); errno != 0 {
			f.Release(ctx)
			return nil, 0, errno
		}
	}
	return f, fflags, 0
}

// Create creates the file (durable at once) and opens it.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fflags, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_TRUNC, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	f := n.lfs.newFile(fh.(*fs.LoopbackFile), in)
	if flags&syscall.O_TRUNC != 0 {
		if errno := f.truncate(0); errno != 0 {
			f.Release(ctx)
			return nil, nil, 0, errno
		}
	}
	return in, f, fflags, 0
}

// Setattr records a size change, then passes the other attributes through.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var inner fs.FileHandle
	h, _ := f.(*file)
	if h != nil {
		inner = h.lf
	}
	if sz, ok := in.GetSize(); ok {
		var errno syscall.Errno
		if h != nil {
			errno = h.truncate(int64(sz))
		} else {
			errno = n.truncatePath(int64(sz))
		}
		if errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	return n.LoopbackNode.Setattr(ctx, inner, in, out)
}

// truncatePath changes the size of a file no handle was given for.
func (n *node) truncatePath(size int64) syscall.Errno {
	lfs := n.lfs
	lfs.mu.Lock()
	defer lfs.mu.Unlock()
	st := lfs.stateLocked(n.StableAttr().Ino, n.EmbeddedInode())
	defer lfs.releaseLocked(st)
	if st.fd < 0 {
		p := filepath.Join(lfs.root.Path, n.Path(n.Root()))
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		st.fd = fd
	}
	return fs.ToErrno(st.truncateLocked(size))
}

// Unlink removes the name (durable at once) and forgets the pending
// changes of a file whose last link it was.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	child := n.GetChild(name)
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 && child != nil {
		n.lfs.forgetIfUnlinked(child.StableAttr().Ino)
	}
	return errno
}

// Rename renames (durable at once) and forgets the pending changes of a
// file it replaced.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	target := newParent.EmbeddedInode().GetChild(newName)
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 && target != nil {
		n.lfs.forgetIfUnlinked(target.StableAttr().Ino)
	}
	return errno
}
