package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/partition"
)

// spaceFlags are the space limits every serving command takes.
type spaceFlags struct {
	minFree   byteSize
	quota     byteSize
	retention int
}

func (s *spaceFlags) add(cmd *cobra.Command) {
	s.minFree = cluster.DefaultMinFreeDisk
	s.quota = cluster.DefaultStateQuota
	f := cmd.Flags()
	f.Var(&s.minFree, "min-free-disk",
		"refuse writes to every partition with a replica on this node while the data directory's filesystem has less free space than this (e.g. 512MiB, 2GiB); reads go on, writes resume by themselves; 0 = off")
	f.Var(&s.quota, "state-quota",
		"refuse writes to a partition while its state file on this node holds more than this (e.g. 8GiB); the file's hard limit is set a quarter (at least 256MiB) above it; 0 = off")
	f.IntVar(&s.retention, "event-retention", partition.DefaultEventRetention,
		"events kept per channel for subscribers to resume from; older ones are trimmed (a cursor before them gets resync_required CURSOR_EXPIRED), messages and history are kept; 0 = every event")
}

// eventRetention returns --event-retention as the partition takes it (0
// there means the default, negative every event).
func (s *spaceFlags) eventRetention() int {
	if s.retention <= 0 {
		return -1
	}
	return s.retention
}

// config returns the limits as the cluster takes them (0 there means the
// default, negative off).
func (s *spaceFlags) config() cluster.SpaceConfig {
	off := func(b byteSize) int64 {
		if b == 0 {
			return -1
		}
		return int64(b)
	}
	return cluster.SpaceConfig{MinFreeDisk: off(s.minFree), StateQuota: off(s.quota)}
}

// byteSize is a flag holding a number of bytes, written with an optional
// unit: B, KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers
// of 1000), case-insensitive, e.g. 512MiB or 1.5GiB.
type byteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

func (b *byteSize) Set(s string) error {
	num, mult := strings.ToLower(strings.TrimSpace(s)), 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult > math.MaxInt64 {
		return fmt.Errorf("%q: want a size such as 512MiB, 2GiB or 0", s)
	}
	*b = byteSize(v * mult)
	return nil
}

func (b *byteSize) String() string {
	v := int64(*b)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v != 0 && v%u.mult == 0 {
			return fmt.Sprintf("%d%s", v/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Type() string { return "bytes" }
