//go:build !linux

package storagetest

import "testing"

// MountTmpfs skips the test: tmpfs mounts are made on Linux only.
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	t.Skipf("mounting a %d-byte tmpfs needs Linux", size)
	return ""
}

// Free skips the test: it goes with MountTmpfs.
func Free(t testing.TB, path string) int64 {
	t.Helper()
	t.Skip("measuring free space here needs Linux")
	return 0
}
