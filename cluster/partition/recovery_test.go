package partition_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage/raftstore"
)

// TestRestartCatchUpFromLog stops a follower, keeps writing, and restarts
// it from its directory: it catches up from the leader's log, without a
// snapshot, and ends with the same digest.
func TestRestartCatchUpFromLog(t *testing.T) {
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	postN(t, leader.p, "general", "before", 10)
	g.waitConverged()

	f := g.followers(leader)[0]
	f.stop()
	postN(t, leader.p, "general", "while-down", 30)
	start := time.Now()
	f.start()
	index := g.waitConverged()
	t.Logf("%s caught up to index %d %v after restart", f.id, index, time.Since(start).Round(time.Millisecond))
	if n := f.logs.Count(msgRestored); n != 0 {
		t.Errorf("%s: got %d snapshot restores, want none (the log suffices)", f.id, n)
	}
	msgs := history(t, f.p, "general", true)
	if len(msgs) != 40 {
		t.Errorf("%s history: got %d messages, want 40", f.id, len(msgs))
	}
	checkNoDuplicates(t, msgs)
}

// TestRestartCatchUpFromSnapshot stops a follower and writes until the
// leader has compacted its log past the follower's last entry, so the
// restarted follower can only catch up through an installed snapshot. A
// stream opened on the follower right after the restart yields every event
// without a gap across the restore.
func TestRestartCatchUpFromSnapshot(t *testing.T) {
	const trailing = 8
	// The leader's Mux does not redial the stopped follower: an append it
	// built before compacting its log would otherwise wait for the restart
	// and hand the follower the entries it is meant to miss.
	g := startGroup(t, 3, &testGroup{redial: -1, tune: func(c *partition.Config) {
		c.SnapshotThreshold = 16
		c.TrailingLogs = trailing
		c.SnapshotInterval = 20 * time.Millisecond
	}})
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	postN(t, leader.p, "general", "before", 10)
	g.waitConverged()

	f := g.followers(leader)[0]
	fApplied := appliedIndex(t, f.p)
	f.stop()
	fSnap := latestSnapshot(t, f)
	// The follower's last entry as its files hold it: the new leader's
	// Barrier may reach it after the convergence above.
	fLast := lastLogIndex(t, f)

	// Write until the leader's log no longer holds the entry after the
	// follower's last one. Raft reports a snapshot before it compacts the
	// log behind it, so the log itself is asked.
	written := 10
	start := time.Now()
	testkit.CheckFor(t, convergeWait, time.Millisecond, func() error {
		postN(t, leader.p, "general", fmt.Sprintf("down-%d", written), 1)
		written++
		first, err := partition.FirstLogIndex(leader.p)
		if err != nil {
			t.Fatalf("leader's first log index: %v", err)
		}
		if first <= fLast+1 {
			return fmt.Errorf("leader's log starts at %d, want past %d", first, fLast+1)
		}
		return nil
	})
	postN(t, leader.p, "general", "tail", 5)
	written += 5
	first, _ := partition.FirstLogIndex(leader.p)
	t.Logf("wrote %d posts while %s was down in %v; leader snapshot at %d, its log from %d, follower's last entry %d",
		written-10, f.id, time.Since(start).Round(time.Millisecond),
		raftStat(t, leader.p, "last_snapshot_index"), first, fLast)

	start = time.Now()
	f.start()
	if got := appliedIndex(t, f.p); got != fApplied {
		t.Errorf("%s applied index right after restart: got %d, want %d as before the stop", f.id, got, fApplied)
	}
	s := f.p.Feed().Watch("general", 0)
	defer s.Close()
	evs := make(chan []*heraldv1.Event, 64)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	// The reader keeps calling Next across the restore; it exits when ctx
	// ends.
	wg.Go(func() {
		for {
			got, err := s.Next(ctx, 50)
			if err != nil {
				errc <- err
				return
			}
			select {
			case evs <- got:
			case <-ctx.Done():
				return
			}
		}
	})

	index := g.waitConverged()
	t.Logf("%s caught up to index %d %v after restart", f.id, index, time.Since(start).Round(time.Millisecond))
	if n := f.logs.Count(msgRestored); n < 1 {
		t.Errorf("%s: got %d snapshot restores, want at least 1", f.id, n)
	}
	if got := appliedIndex(t, f.p); got <= fApplied {
		t.Errorf("%s applied index: got %d, want past %d", f.id, got, fApplied)
	}
	t.Logf("%s latest snapshot: index %d before the stop, %d after catching up", f.id, fSnap, latestSnapshot(t, f))
	if got := latestSnapshot(t, f); got <= fLast {
		t.Errorf("%s latest snapshot: got index %d (before the stop: %d), want one past its last entry %d, installed by the leader",
			f.id, got, fSnap, fLast)
	}
	want := history(t, leader.p, "general", false)
	got := history(t, f.p, "general", true)
	if fmt.Sprint(texts(got)) != fmt.Sprint(texts(want)) {
		t.Errorf("%s history: got %d messages, want the leader's %d", f.id, len(got), len(want))
	}
	checkNoDuplicates(t, got)

	// Writes after the catch-up reach the stream too.
	postN(t, leader.p, "general", "after", 3)
	total := written + 3
	var all []*heraldv1.Event
	deadline := time.After(convergeWait)
	for len(all) < total {
		select {
		case got := <-evs:
			all = append(all, got...)
		case err := <-errc:
			t.Fatalf("Next after %d events: %v", len(all), err)
		case <-deadline:
			t.Fatalf("stream on %s: got %d events in %v, want %d", f.id, len(all), convergeWait, total)
		}
	}
	checkGapFree(t, all, 1)
	if len(all) != total {
		t.Errorf("stream on %s: got %d events, want %d", f.id, len(all), total)
	}
	for _, ev := range all {
		if ev.GetMessagePosted() == nil {
			t.Errorf("event %d: got %v, want a message_posted", ev.GetSeq(), ev.GetBody())
		}
	}
	g.waitConverged()
}

// TestRestartSkipsAppliedEntries restarts a single replica whose log
// reaches past its last snapshot. Raft redelivers those entries; the state
// machine skips them, so nothing is applied twice.
func TestRestartSkipsAppliedEntries(t *testing.T) {
	g := newGroup(t, 1, nil)
	r := g.waitLeader()
	propose(t, r.p, createCmd("general"))
	postN(t, r.p, "general", "snap", 10)
	if err := r.p.Snapshot(t.Context()); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	postN(t, r.p, "general", "log", 10)
	snap, last := r.p.LastSnapshotIndex(), r.p.Status().LastIndex
	if snap >= last {
		t.Fatalf("log: got last index %d, want past the snapshot's %d", last, snap)
	}
	wantIndex, wantSum := digest(t, r.p)
	want := history(t, r.p, "general", false)

	r.stop()
	r.start()
	g.waitLeader()
	// Once the state machine has applied the old log's last entry (a
	// post), every old entry has been redelivered.
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if got := r.p.Status().AppliedIndex; got < last {
			return fmt.Errorf("applied index: got %d, want %d", got, last)
		}
		return nil
	})
	gotIndex, gotSum := digest(t, r.p)
	if gotIndex != wantIndex || gotSum != wantSum {
		t.Errorf("digest after restart: got %d %x, want %d %x", gotIndex, gotSum, wantIndex, wantSum)
	}
	got := history(t, r.p, "general", false)
	checkNoDuplicates(t, got)
	if fmt.Sprint(texts(got)) != fmt.Sprint(texts(want)) {
		t.Errorf("history after restart: got %q, want %q", texts(got), texts(want))
	}
	if n := r.logs.Count(msgRestored); n != 0 {
		t.Errorf("restores at start: got %d, want none (the state file was current)", n)
	}
	if seq := propose(t, r.p, postCmd("general", "next", "")).Message.GetSeq(); seq != 21 {
		t.Errorf("post after restart: got seq %d, want 21", seq)
	}
}

// TestStaleStateFileRepaired restarts a single replica whose state file is
// behind its latest snapshot: the start restores the snapshot and replays
// the log after it, and the old state is never served.
func TestStaleStateFileRepaired(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, r *replica, old string)
	}{
		{"older copy", func(t *testing.T, r *replica, old string) {
			copyFile(t, old, r.statePath())
		}},
		{"missing", func(t *testing.T, r *replica, _ string) {
			if err := os.Remove(r.statePath()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t, 1, nil)
			r := g.waitLeader()
			propose(t, r.p, createCmd("general"))
			postN(t, r.p, "general", "old", 5)
			oldIndex := appliedIndex(t, r.p)
			r.stop()
			old := filepath.Join(t.TempDir(), "old-state.db")
			copyFile(t, r.statePath(), old)

			r.start()
			g.waitLeader()
			postN(t, r.p, "general", "snap", 10)
			snapIndex := appliedIndex(t, r.p)
			if err := r.p.Snapshot(t.Context()); err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			postN(t, r.p, "general", "log", 5)
			wantIndex, wantSum := digest(t, r.p)
			want := history(t, r.p, "general", false)
			r.stop()

			tc.setup(t, r, old)
			r.start()
			// The snapshot is restored before New returns, so not even a
			// stale read can see the old state.
			if got := appliedIndex(t, r.p); got < snapIndex {
				t.Errorf("applied index right after New: got %d, want at least the snapshot's %d (old state had %d)",
					got, snapIndex, oldIndex)
			}
			if n := r.logs.Count(msgRestored); n != 1 {
				t.Errorf("restores at start: got %d, want 1", n)
			}
			g.waitLeader()
			testkit.CheckFor(t, convergeWait, pollStep, func() error {
				if got := appliedIndex(t, r.p); got < wantIndex {
					return fmt.Errorf("applied index: got %d, want %d", got, wantIndex)
				}
				return nil
			})
			gotIndex, gotSum := digest(t, r.p)
			if gotIndex != wantIndex || gotSum != wantSum {
				t.Errorf("digest after repair: got %d %x, want %d %x", gotIndex, gotSum, wantIndex, wantSum)
			}
			got := history(t, r.p, "general", false)
			checkNoDuplicates(t, got)
			if fmt.Sprint(texts(got)) != fmt.Sprint(texts(want)) {
				t.Errorf("history after repair: got %q, want %q", texts(got), texts(want))
			}
			if seq := propose(t, r.p, postCmd("general", "next", "")).Message.GetSeq(); seq != 21 {
				t.Errorf("post after repair: got seq %d, want 21", seq)
			}
		})
	}
}

// TestStateFileLocked checks that a second replica cannot open a directory
// whose state file is in use.
func TestStateFileLocked(t *testing.T) {
	g := newGroup(t, 1, nil)
	r := g.waitLeader()
	cfg := r.cfg
	cfg.Bootstrap = nil
	start := time.Now()
	_, err := partition.New(cfg, nil)
	if err == nil {
		t.Fatalf("New on a directory in use: got nil error, want one")
	}
	t.Logf("New on a directory in use failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if errors.Is(err, partition.ErrClosed) {
		t.Errorf("New on a directory in use: got %v, want an open error", err)
	}
}

// TestJoinNewReplica adds an empty replica (no Bootstrap) to a running
// group: it stays idle until the leader adds it, then catches up, through
// a snapshot when the log has been compacted, and matches the others.
func TestJoinNewReplica(t *testing.T) {
	g := newGroup(t, 3, func(c *partition.Config) {
		c.SnapshotThreshold = 16
		c.TrailingLogs = 8
		c.SnapshotInterval = 20 * time.Millisecond
	})
	leader := g.waitLeader()
	propose(t, leader.p, createCmd("general"))
	postN(t, leader.p, "general", "m", 40)
	testkit.CheckFor(t, convergeWait, pollStep, func() error {
		if snap := raftStat(t, leader.p, "last_snapshot_index"); snap < 20 {
			return fmt.Errorf("leader snapshot at %d, want past 20", snap)
		}
		return nil
	})

	n4 := g.addReplica("n4")
	if st := n4.p.Status(); st.LeaderID != "" || n4.p.Ready() {
		t.Errorf("replica not yet added: got leader %q, ready %v, want none and false", st.LeaderID, n4.p.Ready())
	}
	if _, err := n4.p.Propose(t.Context(), postCmd("general", "too early", "")); !errors.Is(err, partition.ErrNotLeader) {
		t.Errorf("Propose on a replica not yet added: got %v, want ErrNotLeader", err)
	}
	start := time.Now()
	if err := leader.p.AddVoter(t.Context(), "n4", n4.addr, 0); err != nil {
		t.Fatalf("AddVoter n4: %v", err)
	}
	postN(t, leader.p, "general", "after-join", 5)
	index := g.waitConverged()
	t.Logf("n4 joined and caught up to index %d in %v", index, time.Since(start).Round(time.Millisecond))
	if n := n4.logs.Count(msgRestored); n < 1 {
		t.Errorf("n4: got %d snapshot restores, want at least 1", n)
	}
	got := history(t, n4.p, "general", true)
	checkNoDuplicates(t, got)
	if len(got) != 45 {
		t.Errorf("n4 history: got %d messages, want 45", len(got))
	}
	if servers := len(configuration(t, leader.p).Members); servers != 4 {
		t.Errorf("configuration: got %d servers, want 4", servers)
	}
}

// latestSnapshot returns the Raft index of the newest complete snapshot
// under r's snapshot directory, 0 if there is none. hashicorp/raft's file
// store keeps each snapshot in a directory named term-index-time (inside its
// "snapshots" directory).
func latestSnapshot(t *testing.T, r *replica) uint64 {
	t.Helper()
	var latest uint64
	root := filepath.Join(r.dir, raftstore.SnapshotDir)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var term, index, ms uint64
		if d.IsDir() && !strings.HasSuffix(d.Name(), ".tmp") {
			if _, err := fmt.Sscanf(d.Name(), "%d-%d-%d", &term, &index, &ms); err == nil {
				latest = max(latest, index)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("walk %s: %v", root, err)
	}
	return latest
}

// lastLogIndex returns the last entry in the Raft log of the stopped
// replica r, read from its files.
func lastLogIndex(t *testing.T, r *replica) uint64 {
	t.Helper()
	if r.running() {
		t.Fatalf("lastLogIndex %s: the replica is running", r.id)
	}
	s, err := raftstore.Open(raftstore.Config{Dir: r.dir, OnFatal: func(err error) { t.Errorf("%s: %v", r.id, err) }})
	if err != nil {
		t.Fatalf("open %s's stores: %v", r.id, err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s's stores: %v", r.id, err)
		}
	}()
	last, err := s.Log.LastIndex()
	if err != nil {
		t.Fatalf("%s's last log index: %v", r.id, err)
	}
	return last
}
