package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrUnclean is returned by Open, with Options.DeferSync, for a state file
// that was not closed cleanly: its commits were not fsynced, so after a
// power loss it may hold any mix of them, torn. It must not be read: the
// caller discards it (Remove) and rebuilds the state from what is durable,
// the last snapshot and the Raft log after it.
var ErrUnclean = errors.New("storage: state file not closed cleanly")

// cleanSuffix names the mark, next to the state file, that a DeferSync
// file was synced and closed cleanly.
const cleanSuffix = ".clean"

// takeClean reports whether path has its clean mark, and removes the mark
// durably before the file is written again: from then on, until Close
// marks it again, a stop is unclean.
func takeClean(path string) (bool, error) {
	err := os.Remove(path + cleanSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state file %q: remove clean mark: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return false, fmt.Errorf("state file %q: remove clean mark: %w", path, err)
	}
	return true, nil
}

// markClean records durably that the state file at path is synced and
// closed.
func markClean(path string) error {
	f, err := os.OpenFile(path+cleanSuffix, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// checkClean is Open's check of a DeferSync state file: a file that
// exists without its clean mark is ErrUnclean.
func checkClean(path string) error {
	clean, err := takeClean(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); err == nil && !clean {
		return fmt.Errorf("%w: %s", ErrUnclean, path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Remove deletes the state file at path and what goes with it (its clean
// mark, a restore or snapshot copy a crash left), durably.
func Remove(path string) error {
	removeSnapshotCopies(path)
	for _, p := range []string{path, path + cleanSuffix, path + ".restore"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return syncDir(filepath.Dir(path))
}
