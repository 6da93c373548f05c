package lossyfs

import "errors"

// ErrNotSupported is returned by Mount on platforms other than Linux.
var ErrNotSupported = errors.New("lossyfs: not supported on this platform (needs Linux FUSE)")
