package partition_test

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
)

// rebuilding is the replica's warning when it discards its state file.
const rebuilding = "state file was not closed cleanly; rebuilding it from the last snapshot and the Raft log"

// TestStateRebuiltAfterUncleanStop crashes a follower whose state file is
// not fsynced per commit, overwrites the file with what a power loss may
// leave (here: garbage), writes more while it is down, and restarts it:
// the replica must discard the file, rebuild it from its last snapshot and
// its Raft log, and converge with the others, every acknowledged post in
// its history once, in order. A clean stop, by contrast, keeps the file.
func TestStateRebuiltAfterUncleanStop(t *testing.T) {
	t.Parallel()
	g := newGroup(t, 3, func(c *partition.Config) {
		c.SnapshotThreshold, c.TrailingLogs = 40, 10 // a snapshot, and a log after it
		c.SnapshotInterval = 50 * time.Millisecond
	})
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("c"))
	postN(t, leader.p, "c", "before", 120)
	g.waitConverged()
	f := g.followers(leader)[0]
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := raftStat(t, f.p, "last_snapshot_index"); n == 0 {
			return fmt.Errorf("%s has taken no snapshot after 121 entries with threshold 40", f.id)
		}
		return nil
	})

	f.crash()
	if err := os.WriteFile(f.statePath(), bytes.Repeat([]byte{0xa5}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	postN(t, leader.p, "c", "during", 30)
	f.start()
	if got := f.logs.Count(rebuilding); got != 1 {
		t.Fatalf("%s after a crash: %q logged %d times, want once", f.id, rebuilding, got)
	}
	g.waitConverged()
	msgs := history(t, f.p, "c", true)
	checkNoDuplicates(t, msgs)
	if len(msgs) != 150 {
		t.Fatalf("%s after the rebuild: %d messages, want 150", f.id, len(msgs))
	}
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("%s after the rebuild: message %d has seq %d", f.id, i, m.GetSeq())
		}
	}

	f.stop()
	f.start()
	if got := f.logs.Count(rebuilding); got != 1 {
		t.Errorf("%s after a clean stop: %q logged %d times in all, want still once", f.id, rebuilding, got)
	}
	g.waitConverged()
}
