package lossyfs

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FS is a mounted power-loss filesystem. Its methods are safe for
// concurrent use; one mutex guards the pending state of every file and is
// held across each recorded write, so writes through one mount are
// serialized.
type FS struct {
	backing    string
	mountpoint string
	server     *fuse.Server
	root       *fs.LoopbackRoot
	log        *slog.Logger

	// unmountMu serializes Unmount; it is never held with mu, since
	// unmounting waits for requests that take mu.
	unmountMu sync.Mutex
	unmounted bool

	// guards following
	mu     sync.Mutex
	files  map[uint64]*fileState // by inode number, while open or pending
	inodes map[uint64]*fs.Inode  // last known kernel inode, for cache invalidation
	fsyncs uint64
}

// Mount mounts a passthrough view of the directory backing at mountpoint
// (both must exist) and returns once the mount serves requests. It needs
// /dev/fuse and the right to mount (root); it calls mount(2) directly, so
// no fusermount helper is needed. A stale mount left at mountpoint by a
// process that died is detached first.
func Mount(backing, mountpoint string, opts Options) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("backing dir: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("stat backing dir: %w", err)
	}
	if err := syscall.Stat(mountpoint, new(syscall.Stat_t)); errors.Is(err, syscall.ENOTCONN) {
		if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil {
			return nil, fmt.Errorf("detach stale mount %s: %w", mountpoint, err)
		}
	}
	f := &FS{
		backing:    backing,
		mountpoint: mountpoint,
		log:        opts.Logger,
		files:      make(map[uint64]*fileState),
		inodes:     make(map[uint64]*fs.Inode),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.root = &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	rootNode := &node{LoopbackNode: &fs.LoopbackNode{RootData: f.root}, lfs: f}
	f.root.RootNode = rootNode
	timeout := time.Second
	server, err := fs.Mount(mountpoint, rootNode, &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: fuse.MountOptions{
			FsName:            "lossyfs",
			Name:              "lossyfs",
			DirectMountStrict: true,
			AllowOther:        true,
			Debug:             opts.Debug,
			// Passthrough would send writes straight to the backing
			// file, past the undo log.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	f.server = server
	cloexecFuseFds()
	f.log.Info("lossyfs mounted", "backing", backing, "mountpoint", mountpoint)
	return f, nil
}

// Unmount unmounts the filesystem and closes its descriptors; pending
// writes stay in the backing files. It is idempotent. It fails while a
// process still has files open on the mount.
func (f *FS) Unmount() error {
	f.unmountMu.Lock()
	defer f.unmountMu.Unlock()
	if f.unmounted {
		return nil
	}
	var err error
	for range 50 {
		if err = f.server.Unmount(); !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the kernel releases handles asynchronously
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", f.mountpoint, err)
	}
	f.server.Wait()
	f.unmounted = true
	f.mu.Lock()
	defer f.mu.Unlock()
	for ino, st := range f.files {
		if st.fd >= 0 {
			unix.Close(st.fd) // best effort: the descriptor is only ours
		}
		delete(f.files, ino)
	}
	f.log.Info("lossyfs unmounted", "mountpoint", f.mountpoint)
	return nil
}

// Stats returns counters of the filesystem's activity so far.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Stats{Fsyncs: f.fsyncs}
	for _, st := range f.files {
		if len(st.log) > 0 {
			s.PendingFiles++
			s.PendingBytes += st.pending
		}
	}
	return s
}

// PowerLoss simulates losing power: for every file it keeps a random
// prefix of the changes since the file's last fsync, tears the change at
// the cut (a write keeps a random number of its leading bytes) and undoes
// the rest, so the mount then shows what a disk would hold after the
// crash. Processes using the mount should be dead (SIGKILLed) first; files
// still open keep working, on the rolled-back content. rng decides the
// cuts; files are visited in path order, so one seed over the same history
// gives the same result.
func (f *FS) PowerLoss(rng *rand.Rand) (Report, error) {
	rep, inodes, err := f.powerLoss(rng)
	for _, in := range inodes {
		// Drop the kernel's cached pages and attributes of the file. Not
		// under mu: the kernel may write dirty pages back first.
		in.NotifyContent(0, 0) // best effort: ENOENT if the kernel forgot it
	}
	f.log.Info("lossyfs power loss", "files", len(rep.Files), "mountpoint", f.mountpoint)
	return rep, err
}

// powerLoss rolls every file back and returns the inodes to invalidate.
func (f *FS) powerLoss(rng *rand.Rand) (Report, []*fs.Inode, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var states []*fileState
	for _, st := range f.files {
		if len(st.log) > 0 {
			states = append(states, st)
		}
	}
	paths := make(map[*fileState]string, len(states))
	for _, st := range states {
		paths[st] = f.pathLocked(st)
	}
	slices.SortFunc(states, func(a, b *fileState) int {
		return strings.Compare(paths[a], paths[b])
	})
	var rep Report
	var errs []error
	var inodes []*fs.Inode
	for _, st := range states {
		fr, err := st.loseLocked(rng)
		fr.Path = paths[st]
		rep.Files = append(rep.Files, fr)
		if err != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", fr.Path, err))
		}
		if in := f.inodes[st.ino]; in != nil {
			inodes = append(inodes, in)
		}
		f.releaseLocked(st)
	}
	return rep, inodes, errors.Join(errs...)
}

// pathLocked returns st's file path relative to the backing directory, or
// the backing path with " (deleted)" for an unlinked file.
func (f *FS) pathLocked(st *fileState) string {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", st.fd))
	if err != nil {
		return fmt.Sprintf("inode %d", st.ino)
	}
	if rel, err := filepath.Rel(f.backing, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

// stateLocked returns the state of inode ino, creating it.
func (f *FS) stateLocked(ino uint64, in *fs.Inode) *fileState {
	st := f.files[ino]
	if st == nil {
		st = &fileState{ino: ino, fd: -1}
		f.files[ino] = st
	}
	if in != nil {
		f.inodes[ino] = in
	}
	return st
}

// releaseLocked forgets st once nothing refers to it: no open handle and
// no pending change, or the file is unlinked (its changes can never be
// read again).
func (f *FS) releaseLocked(st *fileState) {
	if st.handles > 0 {
		return
	}
	if len(st.log) > 0 && st.fd >= 0 {
		var s unix.Stat_t
		if err := unix.Fstat(st.fd, &s); err != nil || s.Nlink > 0 {
			return
		}
	}
	if st.fd >= 0 {
		unix.Close(st.fd) // best effort: the descriptor is only ours
	}
	delete(f.files, st.ino)
	delete(f.inodes, st.ino)
}

// forgetIfUnlinked drops the pending state of inode ino if its last link
// is gone and no handle is open.
func (f *FS) forgetIfUnlinked(ino uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.files[ino]; st != nil {
		f.releaseLocked(st)
	}
}

// cloexecFuseFds marks this process's /dev/fuse descriptors close-on-exec.
// go-fuse opens /dev/fuse without O_CLOEXEC, so every child process (a
// server under test) would inherit the mount's server end, keep the
// connection alive after this process dies and hang in the kernel.
func cloexecFuseFds() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return // best effort: children only inherit a descriptor
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/fuse" {
			unix.CloseOnExec(fd)
		}
	}
}
