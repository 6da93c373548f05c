package storagetest

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size bytes on a new directory and returns
// the directory. The filesystem is unmounted at cleanup (lazily, so that
// files a failed test left open do not keep it mounted); cleanups run last
// registered first, so register whatever uses the filesystem after this
// call and it is stopped before the unmount. It skips the test where
// mounting is not permitted (not root, or no CAP_SYS_ADMIN).
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV,
		fmt.Sprintf("size=%d,mode=0700", size))
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		t.Skipf("mounting a %d-byte tmpfs on %s is not permitted here (%v): this test needs root, as in CI", size, dir, err)
	}
	if err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount the tmpfs on %s: %v", dir, err)
		}
	})
	return dir
}

// Free returns the bytes an unprivileged writer may still use on the
// filesystem that holds path.
func Free(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return int64(st.Bavail) * st.Bsize
}
