package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

var alice = storage.Caller{User: "alice"}

func openNode(t *testing.T, dir string, partitions uint32) (*cluster.Node, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := clustertest.FastPartition(partition.DefaultConfig())
	// One node founds its own cluster; it never calls a peer, so its HTTP
	// address is only recorded.
	n, err := cluster.New(cluster.Config{NodeID: "n1", DataDir: dir, RaftListener: ln,
		HTTPAddr: "127.0.0.1:1", BootstrapExpect: 1, Partitions: partitions, Partition: pc,
		Meta: clustertest.FastMeta()})
	if err != nil {
		ln.Close()
		return nil, err
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n, nil
}

func startNode(t *testing.T, dir string, partitions uint32) *cluster.Node {
	t.Helper()
	n, err := openNode(t, dir, partitions)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("node not ready within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

func create(t *testing.T, n *cluster.Node, id string) {
	t.Helper()
	_, err := n.Apply(context.Background(), &clusterv1.Command{User: alice.User,
		Op: &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: id}}})
	if err != nil {
		t.Fatalf("create %q: %v", id, err)
	}
}

func TestApplyRoutesToOwningPartition(t *testing.T) {
	n := startNode(t, t.TempDir(), 4)
	used := map[uint32]bool{}
	for i := range 40 {
		id := fmt.Sprintf("c%02d", i)
		create(t, n, id)
		owner := n.PartitionOf(id)
		used[owner] = true
		for p := range n.Partitions() {
			err := n.Replica(p).DB().View(func(r *storage.Reader) error {
				_, _, err := r.Channel(alice, id)
				return err
			})
			if want := p == owner; (err == nil) != want {
				t.Fatalf("channel %q in partition %d: got err %v, want present=%v (owner %d)", id, p, err, want, owner)
			}
		}
	}
	if len(used) != 4 {
		t.Errorf("40 channels used %d of 4 partitions, want all 4", len(used))
	}
}

func TestListChannelsPagesAcrossPartitions(t *testing.T) {
	n := startNode(t, t.TempDir(), 4)
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("ch-%02d", i)
		create(t, n, id)
		want = append(want, id)
	}
	for _, limit := range []uint32{1, 4, 7, 25, 100} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 30 {
				t.Fatalf("limit %d: more than 30 pages", limit)
			}
			resp, err := n.ListChannels(context.Background(), alice,
				&heraldv1.ListChannelsRequest{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetChannels()) > int(limit) {
				t.Fatalf("limit %d: page of %d", limit, len(resp.GetChannels()))
			}
			for _, c := range resp.GetChannels() {
				got = append(got, c.GetId())
			}
			if cursor = resp.GetNextCursor(); cursor == "" {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("limit %d: got %v, want %v", limit, got, want)
		}
	}
}

func TestApplyErrors(t *testing.T) {
	n := startNode(t, t.TempDir(), 2)
	_, err := n.Apply(context.Background(), &clusterv1.Command{User: alice.User,
		Op: &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: "Bad!"}}})
	if !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("bad id: got %v, want ErrInvalidArgument", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = n.Apply(ctx, &clusterv1.Command{User: alice.User,
		Op: &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: "ok"}}})
	if !errors.Is(err, cluster.ErrNotApplied) {
		t.Errorf("canceled ctx: got %v, want ErrNotApplied", err)
	}
	_, _, err = n.GetChannel(context.Background(), alice, "ok")
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("channel after canceled create: got %v, want ErrNotFound", err)
	}
}

func TestDataDirIdentity(t *testing.T) {
	dir := t.TempDir()
	n, err := openNode(t, dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := openNode(t, dir, 8); err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Errorf("reopen with 8 partitions: got %v, want an error saying the count cannot change", err)
	}
	n = startNode(t, dir, 0)
	if got := n.Partitions(); got != 4 {
		t.Errorf("partitions after reopen: got %d, want 4", got)
	}
}

func TestRequestsAfterCloseFailFast(t *testing.T) {
	n := startNode(t, t.TempDir(), 2)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := n.Apply(context.Background(), &clusterv1.Command{User: alice.User,
		Op: &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: "late"}}})
	if !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Apply after Close: got %v, want ErrClosed", err)
	}
	if _, _, err := n.GetChannel(context.Background(), alice, "late"); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("GetChannel after Close: got %v, want ErrClosed", err)
	}
	t.Logf("both answered in %v", time.Since(start))
}
