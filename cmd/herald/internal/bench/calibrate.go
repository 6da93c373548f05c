package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DiskSync is the data disk's own fsync rate: one 4 KiB write and one
// fdatasync after another, the least a durable acknowledgement costs.
type DiskSync struct {
	PerSecond float64 `json:"per_second"`
	P50Micros float64 `json:"p50_us"`
	P99Micros float64 `json:"p99_us"`
}

// CalibrateSync writes and fdatasyncs a 4 KiB block in dir, serially, for
// d, and reports the rate and the latency of each round.
func CalibrateSync(dir string, d time.Duration) (DiskSync, error) {
	f, err := os.CreateTemp(dir, "fsync-calibration-*")
	if err != nil {
		return DiskSync{}, fmt.Errorf("bench: calibrate fsync: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	h := newHistogram()
	n := 0
	for begin := time.Now(); time.Since(begin) < d; n++ {
		t := time.Now()
		// Over a 1 MiB region that the first rounds allocate: after
		// them a round syncs data only, the device's own cost.
		if _, err := f.WriteAt(block, int64(n%256)*4096); err != nil {
			return DiskSync{}, fmt.Errorf("bench: calibrate fsync in %s: %w", filepath.Dir(f.Name()), err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return DiskSync{}, fmt.Errorf("bench: calibrate fsync in %s: %w", filepath.Dir(f.Name()), err)
		}
		h.record(time.Since(t))
	}
	return DiskSync{PerSecond: float64(n) / d.Seconds(), P50Micros: h.quantile(50), P99Micros: h.quantile(99)}, nil
}
