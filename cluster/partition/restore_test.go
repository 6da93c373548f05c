package partition_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/partition"
	"github.com/heraldhq/herald/storage"
)

// saveState returns a snapshot of p's state as storage writes it.
func saveState(t *testing.T, p *partition.Partition) []byte {
	t.Helper()
	s, err := p.DB().Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer s.Release()
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatalf("Snapshot.WriteTo: %v", err)
	}
	return buf.Bytes()
}

// restore restores snap through leader, confirming nothing (the test
// checks the replicas itself), and returns the index.
func restore(t *testing.T, leader *partition.Partition, snap []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), convergeWait)
	defer cancel()
	index, err := leader.RestoreUserSnapshot(ctx, bytes.NewReader(snap),
		func(context.Context, uint64, []string) error { return nil })
	if err != nil {
		t.Fatalf("RestoreUserSnapshot: %v", err)
	}
	return index
}

// TestStreamsAcrossRestore restores snapshots under open streams on every
// replica. A stream whose cursor the channel's head went back below ends
// with ErrCursorAhead; one below the new head re-reads from its cursor;
// one ahead of a head that did not go back keeps waiting.
func TestStreamsAcrossRestore(t *testing.T) {
	g := newGroup(t, 3, nil)
	leader := g.waitLeader()
	p := leader.p
	propose(t, p, createCmd("general"))
	postN(t, p, "general", "m", 5)
	snap5 := saveState(t, p)
	postN(t, p, "general", "n", 10)
	snap15 := saveState(t, p)
	g.waitConverged()

	// Head 15, restored to 5: streams at 15 are ahead for good; a stream
	// at 4 gets 5 from the restored state.
	ahead := map[string]*partition.Stream{}
	for _, r := range g.running() {
		ahead[r.id] = r.p.Feed().Watch("general", 15)
		defer ahead[r.id].Close()
	}
	at3 := p.Feed().Watch("general", 3)
	defer at3.Close()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	first, err := at3.Next(ctx, 1)
	cancel()
	if err != nil || len(first) != 1 || first[0].GetSeq() != 4 {
		t.Fatalf("stream at 3, one event: got %v, %v; want seq 4", eventSeqs(first), err)
	}
	index := restore(t, p, snap5)
	t.Logf("restored the snapshot of head 5 at index %d", index)
	g.waitConverged()
	for id, s := range ahead {
		ctx, cancel := context.WithTimeout(t.Context(), convergeWait)
		begin := time.Now()
		evs, err := s.Next(ctx, 10)
		cancel()
		if !errors.Is(err, storage.ErrCursorAhead) {
			t.Errorf("%s: stream at 15 after the head went back to 5: got %d events, %v; want ErrCursorAhead", id, len(evs), err)
			continue
		}
		t.Logf("%s: stream at 15 ended %v after the restore: %v", id, time.Since(begin).Round(time.Millisecond), err)
	}
	if evs := collect(t, at3, 1, opTimeout); len(evs) != 1 || evs[0].GetSeq() != 5 {
		t.Errorf("stream at 4 after the restore: got seqs %v, want 5 (the restored head)", eventSeqs(evs))
	}

	// Head 5, restored to 15: the head did not go back, so streams at 20
	// are merely ahead of it, and wait for seq 21.
	waiting := map[string]*partition.Stream{}
	for _, r := range g.running() {
		waiting[r.id] = r.p.Feed().Watch("general", 20)
		defer waiting[r.id].Close()
	}
	restore(t, p, snap15)
	g.waitConverged()
	for id, s := range waiting {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		evs, err := s.Next(ctx, 10)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: stream at 20 after the head moved from 5 to 15: got %d events, %v; want it waiting", id, len(evs), err)
		}
	}
	postN(t, p, "general", "after", 6) // 16-21
	for id, s := range waiting {
		evs := collect(t, s, 1, opTimeout)
		if evs[0].GetSeq() != 21 {
			t.Errorf("%s: stream at 20: got seq %d, want 21", id, evs[0].GetSeq())
		}
	}
	if got := len(history(t, p, "general", false)); got != 21 {
		t.Errorf("history after both restores and 6 posts: got %d messages, want 21", got)
	}
}
