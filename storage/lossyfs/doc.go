// Package lossyfs is a FUSE filesystem that loses what was not fsynced: a
// power-loss simulator for durability tests, in the manner of LazyFS.
//
// Mount serves a passthrough view of a backing directory. Every write,
// truncate and space-growing fallocate through the mount goes straight to
// the backing file, and the bytes it replaced are kept in memory in a
// per-file undo log; fsync or fdatasync of any descriptor of the file
// empties its log (and fsyncs the backing file). PowerLoss, called after
// the processes using the mount were SIGKILLed, rolls every file back to a
// random prefix of its changes since its last fsync: changes before a cut
// stay, a write at the cut keeps a random number of its leading bytes
// (a torn write), later ones are undone. The kernel's cached pages of
// those files are dropped, so the mount then shows the post-crash state.
//
// Durability model and known limitations:
//   - Only file data and size are lost. Namespace operations (create,
//     mkdir, rename, unlink, link, rmdir) are durable at once, so a missing
//     directory fsync after a rename or create is not detected; directory
//     fsync passes through and always succeeds.
//   - Changes of one file are kept in order; files are rolled back
//     independently of one another.
//   - Locks (flock, fcntl) are handled by the kernel, local to the mount,
//     which is correct for processes on this host.
//   - fallocate supports modes 0 and FALLOC_FL_KEEP_SIZE; other modes
//     (punch hole, zero range, collapse) fail with EOPNOTSUPP.
//   - Reads through mmap see the latest writes (page cache, no direct_io);
//     mmap writes reach the log when the kernel writes the pages back.
//   - Do not touch the mount's files through mmap from the process that
//     serves the mount: a page fault can deadlock with the Go runtime's
//     stop-the-world. Run the database under test in a child process.
//   - One mutex serializes recorded writes of the whole mount; a 4 KiB
//     write plus fdatasync costs about 2.7 times the backing directory's.
//
// Mount needs Linux, /dev/fuse and root: it calls mount(2) itself, so no
// fusermount helper is needed. On other platforms Mount returns
// ErrNotSupported.
//
// Concurrency: FS methods are safe for concurrent use. Errors: Mount and
// Unmount wrap the syscall error; PowerLoss joins per-file rollback
// errors and still rolls back every file it can.
package lossyfs
