//go:build unix

package storage

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// DiskFree returns the bytes an unprivileged writer may still use on the
// filesystem that holds path (statfs: available blocks × block size).
func DiskFree(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
