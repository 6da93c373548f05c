package storagetest

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Filler is a file that takes up space on a filesystem until Remove.
type Filler struct {
	t    testing.TB
	path string
	size int64
}

// Fill writes a filler file into dir so that at most leave bytes stay
// free on its filesystem (0 fills it completely: the writes go on until
// the filesystem answers ENOSPC). The file is removed at cleanup if Remove
// was not called.
func Fill(t testing.TB, dir string, leave int64) *Filler {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-")
	if err != nil {
		t.Fatalf("create a filler file in %s: %v", dir, err)
	}
	fl := &Filler{t: t, path: f.Name()}
	t.Cleanup(func() { _ = os.Remove(fl.path) }) // best effort: Remove may have run
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = 0xa5 // not zeros, in case a filesystem compresses or dedupes
	}
	for {
		want := Free(t, dir) - leave
		if want <= 0 {
			break
		}
		n, err := f.Write(buf[:min(int64(len(buf)), want)])
		fl.size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			_ = f.Close()
			t.Fatalf("fill %s: %v", fl.path, err)
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("close %s: %v", fl.path, err)
	}
	return fl
}

// Size is how many bytes the filler holds.
func (f *Filler) Size() int64 { return f.size }

// Path is the filler file's path.
func (f *Filler) Path() string { return f.path }

// Remove deletes the filler, giving its space back.
func (f *Filler) Remove() {
	f.t.Helper()
	if err := os.Remove(f.path); err != nil {
		f.t.Fatalf("remove filler %s: %v", filepath.Base(f.path), err)
	}
}
