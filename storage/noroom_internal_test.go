package storage

import (
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	bolterrors "go.etcd.io/bbolt/errors"
)

// TestNoRoom checks which bbolt commit errors are retried: lack of room
// before any sync, never a failed sync (bbolt returns fdatasync's errno
// bare) or file growth.
func TestNoRoom(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"max size", bolterrors.ErrMaxSizeReached, true},
		{"page write ENOSPC", &fs.PathError{Op: "write", Path: "state.db", Err: syscall.ENOSPC}, true},
		{"page write EDQUOT", &fs.PathError{Op: "write", Path: "state.db", Err: syscall.EDQUOT}, true},
		{"wrapped page write ENOSPC", fmt.Errorf("commit: %w", &fs.PathError{Op: "write", Path: "state.db", Err: syscall.ENOSPC}), true},
		{"page write EIO", &fs.PathError{Op: "write", Path: "state.db", Err: syscall.EIO}, false},
		{"fdatasync ENOSPC", syscall.ENOSPC, false},
		{"fdatasync EIO", syscall.EIO, false},
		{"file sync ENOSPC", &fs.PathError{Op: "sync", Path: "state.db", Err: syscall.ENOSPC}, false},
		{"file growth", fmt.Errorf("file resize error: %s", &fs.PathError{Op: "truncate", Path: "state.db", Err: syscall.ENOSPC}), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := noRoom(tt.err); got != tt.want {
			t.Errorf("noRoom(%v) [%s]: got %v, want %v", tt.err, tt.name, got, tt.want)
		}
	}
}
