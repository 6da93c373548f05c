package lossyfs

import (
	"fmt"
	"log/slog"
	"strings"
)

// Options configures Mount. The zero value is ready to use.
type Options struct {
	// Logger receives mount, unmount and power-loss events; nil discards.
	Logger *slog.Logger
	// Debug logs every FUSE request (very verbose).
	Debug bool
}

// Stats counts a mounted FS's activity.
type Stats struct {
	// Fsyncs is the number of fsync and fdatasync calls on files so far.
	Fsyncs uint64
	// PendingFiles is the number of files with changes not yet fsynced.
	PendingFiles int
	// PendingBytes is the number of bytes written and not yet fsynced.
	PendingBytes int64
}

// Report says what one PowerLoss kept and dropped.
type Report struct {
	// Files lists every file that had pending changes, in path order.
	Files []FileReport
}

// FileReport is the fate of one file's pending changes. A change is a
// write or a size change (truncate, or fallocate growing the file).
type FileReport struct {
	// Path is relative to the backing directory, or absolute with
	// " (deleted)" for an unlinked file still open.
	Path string
	// Pending is the number of changes since the file's last fsync.
	Pending int
	// Kept is how many of them survived whole; the one after them, if
	// any, was torn or dropped, and all later ones were dropped.
	Kept int
	// TornBytes is how many leading bytes of the torn write survived.
	TornBytes int64
	// PendingBytes is the number of bytes written since the last fsync.
	PendingBytes int64
	// KeptBytes and DroppedBytes split PendingBytes.
	KeptBytes, DroppedBytes int64
}

// String summarizes the report on one line per file, for logs.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "power loss: %d files with pending changes", len(r.Files))
	for _, f := range r.Files {
		fmt.Fprintf(&b, "\n  %s: kept %d/%d changes (+%d torn bytes), %d bytes kept, %d dropped",
			f.Path, f.Kept, f.Pending, f.TornBytes, f.KeptBytes, f.DroppedBytes)
	}
	return b.String()
}
