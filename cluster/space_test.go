package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage/storagetest"
)

// TestWritesRefusedWhileAReplicaIsLowOnDisk puts one node's data directory
// (n3's) on a small tmpfs and fills it below the node's free-disk reserve.
// A write to a partition that n3 only follows in must be refused through
// every node, the leader's (local path) and the others' (forwarded), with
// ErrNoSpace and a message naming n3, its free space and its reserve;
// reads and TrimEvents still work. Once the filler is removed, writes
// succeed again without a restart.
func TestWritesRefusedWhileAReplicaIsLowOnDisk(t *testing.T) {
	t.Parallel()
	const reserve = 32 << 20
	dir := t.TempDir()
	mnt := storagetest.MountTmpfs(t, 64<<20)
	if err := os.Symlink(mnt, filepath.Join(dir, "n3")); err != nil {
		t.Fatal(err)
	}
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 3, Dir: dir,
		Space: cluster.SpaceConfig{MinFreeDisk: reserve, CheckInterval: 100 * time.Millisecond}})
	c.WaitSettled(30 * time.Second)
	nodes := c.Running()
	ctx := t.Context()

	// A channel whose partition n3 does not lead.
	var channel, leader string
	for i := 0; channel == ""; i++ {
		ch := fmt.Sprintf("low-%d", i)
		part := c.Ring().GetPartitions()[ring.Partition(ch, 3)]
		if part.GetLeader() != "n3" {
			channel, leader = ch, part.GetLeader()
		}
	}
	t.Logf("channel %s: partition %d, led by %s", channel, ring.Partition(channel, 3), leader)
	clustertest.MustCreate(t, nodes[0], channel)
	if _, err := nodes[0].Apply(ctx, clustertest.Post(channel, "before", "before")); err != nil {
		t.Fatalf("post before the disk filled: %v", err)
	}

	filler := storagetest.Fill(t, mnt, reserve/2)
	t.Logf("filled n3's tmpfs: %d bytes free, reserve %d", storagetest.Free(t, mnt), reserve)
	// Posts made before the nodes heard of it are applied.
	begin, applied := time.Now(), 1
	for i, n := range nodes {
		clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, n.ID()+" refuses a post", func() bool {
			_, err := n.Apply(ctx, clustertest.Post(channel, "refused", fmt.Sprintf("refused-%d-%d", i, applied)))
			if err == nil {
				applied++
				return false
			}
			if !errors.Is(err, cluster.ErrNoSpace) {
				t.Fatalf("post via %s: got %v, want nil or ErrNoSpace", n.ID(), err)
			}
			if msg := err.Error(); !strings.Contains(msg, "node n3 has") || !strings.Contains(msg, "below its reserve of 32 MiB") {
				t.Errorf("refusal via %s: got %q, want it to name n3, its free space and its 32 MiB reserve", n.ID(), msg)
			}
			return true
		})
	}
	t.Logf("every node refused posts %v after the disk filled (%d posts applied before)", since(begin), applied-1)
	for _, n := range nodes {
		h, err := n.History(ctx, clustertest.Alice, &heraldv1.GetHistoryRequest{ChannelId: channel})
		if err != nil {
			t.Fatalf("history via %s while n3 is low on disk: %v", n.ID(), err)
		}
		if got := len(h.GetMessages()); got != applied {
			t.Errorf("history via %s while n3 is low on disk: got %d messages, want %d", n.ID(), got, applied)
		}
	}
	trim := &clusterv1.Command{Op: &clusterv1.Command_TrimEvents{TrimEvents: &clusterv1.TrimEvents{ChannelId: channel}}}
	if _, err := nodes[0].Apply(ctx, trim); err != nil {
		t.Errorf("TrimEvents while n3 is low on disk: got %v, want it to pass", err)
	}

	filler.Remove()
	begin = time.Now()
	for i, n := range nodes {
		clustertest.CheckFor(t, 30*time.Second, 50*time.Millisecond, n.ID()+" takes posts again", func() bool {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := n.Apply(pctx, clustertest.Post(channel, "after", fmt.Sprintf("after-%d", i)))
			return err == nil
		})
	}
	t.Logf("every node took posts again %v after the filler was removed", since(begin))
	c.WaitSameDigests(30 * time.Second)
}
