package cluster_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/ring"
	"github.com/heraldhq/herald/storage"
)

// TestAuthzAcrossNodes checks that the caller travels with every request
// a node forwards: through each node of a 3-node cluster, to channels in
// partitions that node does not lead, a private channel is invisible to a
// non-member, only the author edits, an admin may delete, and an
// archived channel refuses writes — the same answers as on the node that
// applies them.
func TestAuthzAcrossNodes(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 4})
	c.WaitSettled(30 * time.Second)
	nodes := c.Running()
	ctx := t.Context()
	var (
		alice    = cluster.Caller{User: "alice"}
		bob      = cluster.Caller{User: "bob"}
		stranger = cluster.Caller{User: "stranger"}
		root     = cluster.Caller{User: "root", Admin: true}
	)
	as := func(who cluster.Caller, op func(*clusterv1.Command)) *clusterv1.Command {
		cmd := &clusterv1.Command{User: who.User, Admin: who.Admin}
		op(cmd)
		return cmd
	}
	post := func(who cluster.Caller, ch, text string) *clusterv1.Command {
		return as(who, func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{ChannelId: ch, Text: text}}
		})
	}

	// applyVia applies cmd through n, again while the outcome is unknown
	// or nothing applied (an election under a loaded test machine): every
	// command here is idempotent, and the test is about permissions.
	applyVia := func(n *cluster.Node, cmd *clusterv1.Command) (*storage.Result, error) {
		for try := 1; ; try++ {
			res, err := n.Apply(ctx, cmd)
			if try == 10 || !(errors.Is(err, cluster.ErrIndeterminate) || errors.Is(err, cluster.ErrNotApplied) ||
				errors.Is(err, cluster.ErrNoLeader)) {
				return res, err
			}
			t.Logf("apply via %s (try %d): %v; again", n.ID(), try, err)
		}
	}
	// away names a channel whose partition via does not lead, so that
	// every request via it is forwarded.
	leaders := settledRing(t, c).GetPartitions()
	away := func(prefix string, via *cluster.Node) string {
		for k := 0; ; k++ {
			ch := fmt.Sprintf("%s-%d", prefix, k)
			if leaders[ring.Partition(ch, 4)].GetLeader() != via.ID() {
				return ch
			}
		}
	}
	for i, via := range nodes {
		public, private := away(fmt.Sprintf("pub%d", i), via), away(fmt.Sprintf("priv%d", i), via)
		at := nodes[(i+1)%len(nodes)] // set up through another node
		must := func(cmd *clusterv1.Command) *storage.Result {
			t.Helper()
			res, err := applyVia(at, cmd)
			if err != nil {
				t.Fatalf("via %s: %v: %v", at.ID(), cmd, err)
			}
			return res
		}
		must(as(alice, func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: public}}
		}))
		must(as(alice, func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: private, Private: true}}
		}))
		must(as(bob, func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_JoinChannel{JoinChannel: &heraldv1.JoinChannelRequest{ChannelId: public}}
		}))
		msg := must(post(alice, public, "alice's")).Message.GetSeq()
		must(post(alice, private, "a secret"))

		t.Run("via "+via.ID(), func(t *testing.T) {
			apply := func(cmd *clusterv1.Command) error {
				_, err := applyVia(via, cmd)
				return err
			}
			history := func(who cluster.Caller, ch string) error {
				_, err := via.History(ctx, who, &heraldv1.GetHistoryRequest{ChannelId: ch})
				return err
			}
			edit := func(who cluster.Caller) *clusterv1.Command {
				return as(who, func(c *clusterv1.Command) {
					c.Op = &clusterv1.Command_EditMessage{EditMessage: &heraldv1.EditMessageRequest{ChannelId: public, Seq: msg, Text: "edited"}}
				})
			}
			del := func(who cluster.Caller) *clusterv1.Command {
				return as(who, func(c *clusterv1.Command) {
					c.Op = &clusterv1.Command_DeleteMessage{DeleteMessage: &heraldv1.DeleteMessageRequest{ChannelId: public, Seq: msg}}
				})
			}
			for _, tc := range []struct {
				what string
				err  error
				want error // nil: success
			}{
				{"stranger reads the private channel", history(stranger, private), storage.ErrNotFound},
				{"stranger posts to the private channel", apply(post(stranger, private, "hi")), storage.ErrNotFound},
				{"alice reads the private channel", history(alice, private), nil},
				{"an admin reads the private channel", history(root, private), nil},
				{"stranger reads the public channel", history(stranger, public), nil},
				{"stranger posts to the public channel", apply(post(stranger, public, "hi")), storage.ErrPermissionDenied},
				{"bob edits alice's message", apply(edit(bob)), storage.ErrPermissionDenied},
				{"bob deletes alice's message", apply(del(bob)), storage.ErrPermissionDenied},
				{"alice edits her message", apply(edit(alice)), nil},
				{"an admin deletes alice's message", apply(del(root)), nil},
			} {
				if (tc.want == nil) != (tc.err == nil) || (tc.want != nil && !errors.Is(tc.err, tc.want)) {
					t.Errorf("%s via %s: got %v, want %v", tc.what, via.ID(), tc.err, tc.want)
				}
			}
			if _, _, err := via.GetChannel(ctx, stranger, private); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("GetChannel(%s) as stranger via %s: got %v, want not found", private, via.ID(), err)
			}
			list, err := via.ListChannels(ctx, stranger, &heraldv1.ListChannelsRequest{Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(list.GetChannels(), func(ch *heraldv1.Channel) bool { return ch.GetId() == private }) {
				t.Errorf("ListChannels as stranger via %s lists %s", via.ID(), private)
			}

			if err := apply(as(alice, func(c *clusterv1.Command) {
				c.Op = &clusterv1.Command_ArchiveChannel{ArchiveChannel: &heraldv1.ArchiveChannelRequest{ChannelId: public}}
			})); err != nil {
				t.Fatal(err)
			}
			if err := apply(post(bob, public, "after archive")); !errors.Is(err, storage.ErrFailedPrecondition) {
				t.Errorf("bob posts to the archived channel via %s: got %v, want failed precondition", via.ID(), err)
			}
		})
	}
}
