package cluster_test

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/partition"
)

// BenchmarkIdleCluster measures what a settled, idle 3-node cluster costs
// in this process (all three nodes): goroutines, heap in use, and CPU over
// a 10 s idle window as a percentage of one core, at the production Raft
// timers. Run it once per size:
//
//	go test -run '^$' -bench IdleCluster -benchtime 1x ./cluster/
func BenchmarkIdleCluster(b *testing.B) {
	for _, parts := range []uint32{16, 64} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			for range b.N {
				c := clustertest.New(b, clustertest.Options{Nodes: 3, Partitions: parts,
					Partition: partition.DefaultConfig()})
				c.WaitSettled(2 * time.Minute)
				time.Sleep(2 * time.Second) // let the election and placement traffic die down
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				before := cpuTime()
				start := time.Now()
				time.Sleep(10 * time.Second) // the idle window being measured
				cpu := cpuTime() - before
				b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
				b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
				b.ReportMetric(100*cpu.Seconds()/time.Since(start).Seconds(), "idle-cpu-%")
				c.Close()
			}
		})
	}
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
