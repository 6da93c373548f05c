//go:build linux

package lossyfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkWriteFdatasync measures a 4 KiB pwrite plus fdatasync, on the
// mount and directly on its backing directory, to show what the mount
// costs a test.
func BenchmarkWriteFdatasync(b *testing.B) {
	for _, where := range []string{"mount", "backing"} {
		b.Run(where, func(b *testing.B) {
			fsys, mnt, backing := mountB(b)
			dir := mnt
			if where == "backing" {
				dir = backing
			}
			f, err := os.OpenFile(filepath.Join(dir, "bench"), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(buf)))
			for i := 0; b.Loop(); i++ {
				if _, err := f.WriteAt(buf, int64(i%256)*4096); err != nil {
					b.Fatal(err)
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(fsys.Stats().Fsyncs)/float64(b.N), "mount-fsyncs/op")
		})
	}
}
