package clustertest_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/schedule"
)

var (
	firstSeed = flag.Int64("torture.seed", 0, "TestSeededSchedules: the first seed it runs")
	seedCount = flag.Int("torture.seeds", 0, "TestSeededSchedules: how many seeds it runs; 0 means 4 with -short, else 12")
)

// requestTimeout is the nodes' request timeout: a request that meets a
// connection that stopped answering spends up to about 2 s finding out
// before it goes another way, and the timeout leaves room for that.
const requestTimeout = 3 * time.Second

// tortureCluster starts 3 nodes with proxies on every link for a fault
// schedule.
func tortureCluster(t *testing.T, parts uint32) *clustertest.Cluster {
	t.Helper()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: parts, Faults: true,
		RequestTimeout: requestTimeout})
	c.WaitSettled(30 * time.Second)
	return c
}

// TestSeededSchedules runs seeded fault schedules of every kind against 3
// nodes while clients post and read, and checks the history: nothing
// acknowledged lost, duplicated or reordered, no stale linearizable read,
// every indeterminate post stored once or not at all. A failing seed's
// schedule is logged; commit it under testdata/schedules to replay it.
// -torture.seed and -torture.seeds pick the seeds.
func TestSeededSchedules(t *testing.T) {
	seeds, d, parts := 4, 5*time.Second, uint32(2)
	if !testing.Short() {
		seeds, d, parts = 12, 15*time.Second, 4
	}
	if *seedCount > 0 {
		seeds = *seedCount
	}
	for seed := *firstSeed; seed < *firstSeed+int64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			c := tortureCluster(t, parts)
			s, err := schedule.Generate(schedule.Config{Seed: seed, Nodes: []string{"n1", "n2", "n3"},
				Partitions: parts, Duration: d})
			if err != nil {
				t.Fatal(err)
			}
			c.RunSchedule(s, clustertest.Workload{Seed: seed})
		})
	}
}

// TestReplaySchedules replays each committed schedule in
// testdata/schedules 5 times, every checker passing every time.
func TestReplaySchedules(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "schedules", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schedule in testdata/schedules (%v)", err)
	}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		s, err := schedule.ReadJSONL(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for i := range 5 {
			t.Run(fmt.Sprintf("%s/%d", filepath.Base(file), i), func(t *testing.T) {
				t.Parallel()
				c := tortureCluster(t, s.Config.Partitions)
				c.RunSchedule(s, clustertest.Workload{Seed: s.Config.Seed})
			})
		}
	}
}
