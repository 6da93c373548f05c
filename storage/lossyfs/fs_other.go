//go:build !linux

package lossyfs

import "math/rand/v2"

// FS is a mounted power-loss filesystem; on this platform none can exist.
type FS struct{}

// Mount returns ErrNotSupported: lossyfs needs Linux FUSE.
func Mount(backing, mountpoint string, opts Options) (*FS, error) {
	return nil, ErrNotSupported
}

// Unmount returns ErrNotSupported.
func (f *FS) Unmount() error { return ErrNotSupported }

// PowerLoss returns ErrNotSupported.
func (f *FS) PowerLoss(rng *rand.Rand) (Report, error) { return Report{}, ErrNotSupported }

// Stats returns zero counters.
func (f *FS) Stats() Stats { return Stats{} }
