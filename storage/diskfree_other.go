//go:build !unix

package storage

import (
	"errors"
	"fmt"
)

// DiskFree is not implemented here: it returns an error wrapping
// errors.ErrUnsupported, and callers skip their free-space checks.
func DiskFree(path string) (uint64, error) {
	return 0, fmt.Errorf("free space of %s: %w", path, errors.ErrUnsupported)
}
