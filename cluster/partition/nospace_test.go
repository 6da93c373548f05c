package partition_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
	"github.com/heraldhq/herald/storage/storagetest"
)

// What the FSM logs when the state file has no room for a committed batch,
// and when it has applied it after all.
const (
	msgNoRoom    = "state file has no room for committed entries; retrying until it has"
	msgRoomAgain = "applied the entries the state file had no room for"
)

// bigText is a post of about 32 KB: each one needs new pages in the state
// file.
var bigText = strings.Repeat("0123456789abcdef", 2000)

// outcome is how a Propose that ran in the background ended.
type outcome struct {
	id  string
	res *storage.Result
	err error
}

// postUntilStuck posts bigText through r, one post after another, until
// one has not returned by the time r logs msgNoRoom once more, and returns
// a channel that gets that post's outcome. Each post has up to total to
// finish; one that fails ends the test.
func postUntilStuck(t *testing.T, r *replica, channel string, total time.Duration) <-chan outcome {
	t.Helper()
	seen := r.logs.Count(msgNoRoom)
	p := r.p // stop clears r.p while a post waits
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("big-%d", i)
		done := make(chan outcome, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), total)
			defer cancel()
			res, err := p.Propose(ctx, postCmd(channel, bigText, id))
			done <- outcome{id, res, err}
		}()
		for {
			select {
			case o := <-done:
				if o.err != nil {
					t.Fatalf("post %s: %v", id, o.err)
				}
			case <-time.After(pollStep):
				if r.logs.Count(msgNoRoom) > seen {
					t.Logf("post %s (%d bytes) waits for room after %d posts", id, len(bigText), i)
					return done
				}
				continue
			}
			break
		}
	}
	t.Fatalf("1000 posts of %d bytes fitted; want the state file to run out of room", len(bigText))
	return nil
}

// jamRaft proposes small posts through r, each from its own goroutine,
// until raft's loop stops appending them: with the FSM waiting, the
// committed batches fill the FSM's queue and raft's loop blocks handing
// it the next one. The posts return when r closes.
func jamRaft(t *testing.T, r *replica) {
	t.Helper()
	p := r.p // stop clears r.p while the posts wait
	last, still := p.Status().LastIndex, 0
	for i := 0; still < 100; i++ {
		if i == 5000 {
			t.Fatalf("5000 posts while the FSM waits: raft still appends (last index %d); want its loop blocked", last)
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), closeWait)
			defer cancel()
			_, _ = p.Propose(ctx, postCmd("c", "small", "")) // fails when r closes
		}()
		time.Sleep(time.Millisecond) // one commit per post, not one per burst
		if now := p.Status().LastIndex; now != last {
			last, still = now, 0
		} else {
			still++
		}
	}
	t.Logf("raft's loop stopped appending at index %d, with the FSM waiting", last)
}

// waitLogged waits until r has logged msg at least n times.
func waitLogged(t *testing.T, r *replica, msg string, n int) {
	t.Helper()
	start := time.Now()
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if got := r.logs.Count(msg); got < n {
			return fmt.Errorf("%s logged %q %d times, want %d", r.id, msg, got, n)
		}
		return nil
	})
	t.Logf("%s logged %q (%d) after %v", r.id, msg, n, time.Since(start).Round(time.Millisecond))
}

// checkAlive fails the test unless r's Raft instance still runs and a
// stale read from its state file works.
func checkAlive(t *testing.T, r *replica) {
	t.Helper()
	if r.p.Removed() {
		t.Fatalf("%s: raft shut down, want it running", r.id)
	}
	if _, err := readHistory(t.Context(), r.p, "c", true); err != nil {
		t.Fatalf("%s: stale history while the state file is full: %v", r.id, err)
	}
}

// TestStateFileFullWaitsForRoom fills the filesystem that holds a
// replica's state file (its Raft log is elsewhere) until a committed post
// cannot be applied (ENOSPC). The replica must not stop (OnFatal fails
// the test) or skip the entry: it keeps its Raft instance and serves
// stale reads of what it had, and once the filler is removed it applies
// the post by itself and the waiting Propose succeeds.
func TestStateFileFullWaitsForRoom(t *testing.T) {
	mnt := storagetest.MountTmpfs(t, 4<<20)
	g := newGroup(t, 1, func(c *partition.Config) {
		// Only the state file lives on the small filesystem, so that it,
		// not the Raft log, runs out of room.
		if err := os.MkdirAll(c.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(mnt, partition.StateFile), filepath.Join(c.Dir, partition.StateFile)); err != nil {
			t.Fatal(err)
		}
	})
	r := g.waitLeader()
	propose(t, r.p, createCmd("c"))
	propose(t, r.p, postCmd("c", "before", "before"))
	filler := storagetest.Fill(t, mnt, 0)
	t.Logf("filled the state file's tmpfs with %d bytes", filler.Size())

	begin := time.Now()
	done := postUntilStuck(t, r, "c", 2*convergeWait)
	select {
	case o := <-done:
		t.Fatalf("post %s while the state file has no room: returned %v, want it to wait", o.id, o.err)
	default:
	}
	// The posts before the stuck one fitted, and are there too.
	checkAlive(t, r)
	if msgs := history(t, r.p, "c", true); len(msgs) != 1 || msgs[0].GetText() != "before" {
		t.Fatalf("stale history while the state file is full: got %q, want [before]", texts(msgs))
	}

	filler.Remove()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("post %s after room came back: %v, want success", o.id, o.err)
		}
		t.Logf("post %s applied %v after the filesystem filled, once the filler was removed", o.id,
			time.Since(begin).Round(time.Millisecond))
	case <-time.After(convergeWait):
		t.Fatalf("the waiting post has not returned %v after the filler was removed", convergeWait)
	}
	waitLogged(t, r, msgRoomAgain, 1)
	postN(t, r.p, "c", "after", 3)
}

// TestStateFileMaxSizeNoCrashLoop posts to a group of three until the
// state files reach storage.Options.MaxSize. No replica may stop (OnFatal
// fails the test): each waits, with its Raft instance running, and Close
// still works, even with raft's loop blocked behind the waiting FSM and a
// leader that first tries to hand over. Started again with the same limit
// they wait again rather than stop (the entry is committed: a replica that
// stopped on it would stop at every start); started with the default limit
// they apply the waiting post and take new ones.
func TestStateFileMaxSizeNoCrashLoop(t *testing.T) {
	small := storage.Options{MaxSize: 1 << 20, InitialMmapSize: 64 << 10}
	g := newGroup(t, 3, func(c *partition.Config) { c.Storage = small })
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("c"))
	done := postUntilStuck(t, leader, "c", 2*convergeWait)
	for _, r := range g.replicas {
		waitLogged(t, r, msgNoRoom, 1)
		checkAlive(t, r)
	}
	jamRaft(t, leader)

	begin := time.Now()
	leader.stop()
	for _, r := range g.running() {
		r.stop()
	}
	t.Logf("Close of the three, leader first, with their FSMs waiting for room took %v",
		time.Since(begin).Round(time.Millisecond))
	var stuck outcome
	select {
	case stuck = <-done:
	case <-time.After(closeWait):
		t.Fatalf("the waiting post has not returned %v after Close", closeWait)
	}
	if !errors.Is(stuck.err, partition.ErrIndeterminate) {
		t.Errorf("waiting post %s after Close: got %v, want ErrIndeterminate", stuck.id, stuck.err)
	}

	logged := make(map[*replica]int)
	for _, r := range g.replicas {
		logged[r] = r.logs.Count(msgNoRoom)
		r.start()
	}
	for _, r := range g.replicas {
		waitLogged(t, r, msgNoRoom, logged[r]+1)
		checkAlive(t, r)
	}
	for _, r := range g.replicas {
		r.stop()
	}

	for _, r := range g.replicas {
		r.cfg.Storage = storage.Options{}
		r.start()
	}
	leader = g.waitLeader()
	msgs := history(t, leader.p, "c", false)
	if !slices.ContainsFunc(msgs, func(m *heraldv1.Message) bool { return m.GetClientMsgId() == stuck.id }) {
		t.Errorf("history after a restart with room: %d messages, none is the post %s that waited", len(msgs), stuck.id)
	}
	checkNoDuplicates(t, msgs)
	postN(t, leader.p, "c", "after", 3)
	g.waitConverged()
}
