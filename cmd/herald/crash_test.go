package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage/raftstore"
)

// TestKillDuringFirstStart SIGKILLs herald dev while its first start is
// bootstrapping the partitions, then restarts it on the same data
// directory: the restart must become ready and serve every partition.
//
// hashicorp/raft's BootstrapCluster makes two separate durable writes:
// CurrentTerm=1 into the stable store, then the configuration entry into
// the log. A kill between them leaves a replica that HasExistingState
// calls initialised (so it is not bootstrapped again) but that has no
// configuration, so it would never elect a leader ("no known peers,
// aborting election"); partition start must detect it and bootstrap again.
func TestKillDuringFirstStart(t *testing.T) {
	t.Parallel()

	t.Run("half-bootstrapped partition", func(t *testing.T) {
		dir := t.TempDir()
		p := startDev(t, devOptions{dataDir: dir, args: []string{"--partitions", "4"}})
		if code, _ := p.Signal(os.Interrupt); code != 0 {
			t.Fatalf("exit status after SIGINT: got %d, want 0", code)
		}
		// Make partition 3 what a kill inside its bootstrap leaves: a raft
		// log file with CurrentTerm=1 and no entries.
		pdir := filepath.Join(dir, "partitions", "003")
		if err := os.RemoveAll(pdir); err != nil {
			t.Fatal(err)
		}
		stores, err := raftstore.Open(raftstore.Config{Dir: pdir})
		if err != nil {
			t.Fatal(err)
		}
		if err := stores.Stable.SetUint64([]byte("CurrentTerm"), 1); err != nil {
			t.Fatal(err)
		}
		if err := stores.Close(); err != nil {
			t.Fatal(err)
		}

		q := startDev(t, devOptions{dataDir: dir})
		postToEveryPartition(t, q, 4)
	})

	t.Run("kill at random points", func(t *testing.T) {
		rounds := 10
		if testing.Short() {
			rounds = 3
		}
		const partitions = 16
		for round := range rounds {
			dir := t.TempDir()
			// Kill once replica k has started Raft: during or just after
			// its bootstrap.
			k := 1 + rand.IntN(partitions)
			p := launchDev(t, devOptions{dataDir: dir, httpAddr: freeAddr(t), raftAddr: freeAddr(t),
				args: []string{"--log-level", "info"}})
			deadline := time.Now().Add(readyTimeout)
			for strings.Count(p.Stderr(), "entering follower state") < k {
				if time.Now().After(deadline) {
					p.Kill()
					t.Fatalf("round %d: %d replicas not started within %v; stderr:\n%s", round, k, readyTimeout, p.Stderr())
				}
				select {
				case <-p.done:
					t.Fatalf("round %d: exited while bootstrapping: %v; stderr:\n%s", round, p.err, p.Stderr())
				case <-time.After(time.Millisecond):
				}
			}
			p.Kill()
			t.Logf("round %d: killed after replica %d of %d started Raft (%d bootstrapped)",
				round, k-1, partitions, strings.Count(p.Stderr(), "bootstrapped replica group"))
			q := startDev(t, devOptions{dataDir: dir})
			postToEveryPartition(t, q, partitions)
			q.Kill()
		}
	})
}

// postToEveryPartition creates one channel in each of the partitions and
// posts to it.
func postToEveryPartition(t *testing.T, p *proc, partitions uint32) {
	t.Helper()
	done := make(map[uint32]bool)
	for i := 0; uint32(len(done)) < partitions; i++ {
		if i == 100000 {
			t.Fatalf("no channel id among %d maps to some of the %d partitions", i, partitions)
		}
		id := fmt.Sprintf("c%d", i)
		part := ring.Partition(id, partitions)
		if done[part] {
			continue
		}
		done[part] = true
		createChannel(t, p, id)
		if _, err := post(p.Messages, id, "m1", "hello"); err != nil {
			t.Fatalf("PostMessage to %s (partition %d): %v", id, part, err)
		}
	}
}
