package storage_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// seedCmds returns commands that build a state with something of
// everything: public, private and archived channels, members, messages, a
// thread, reactions, an edit and a tombstone. Every one of them succeeds
// when applied in order to an empty DB.
func seedCmds() []*clusterv1.Command {
	return []*clusterv1.Command{
		as("alice", createCmd("general", false)),
		as("bob", joinCmd("general")), // general 1
		as("alice", createCmd("secret", true)),
		as("alice", createCmd("old", false)),
		as("alice", postCmd("general", "hello", "cid-1")),   // general 2
		as("bob", postCmd("general", "hi alice", "")),       // general 3
		as("bob", replyCmd("general", 2, "thread reply")),   // general 4
		as("bob", reactCmd("general", 2, "wave")),           // general 5
		as("alice", editCmd("general", 2, "hello, edited")), // general 6
		as("alice", postCmd("general", "oops", "")),         // general 7
		as("alice", deleteCmd("general", 7)),                // general 8
		as("alice", postCmd("secret", "psst", "")),          // secret 1
		as("alice", postCmd("old", "ancient", "")),          // old 1
		as("alice", archiveCmd("old")),                      // old 2
	}
}

// seedState applies seedCmds one entry per Apply. It is deterministic, so
// two harnesses seeded with it are byte-identical.
func seedState(h *harness) {
	h.t.Helper()
	for _, c := range seedCmds() {
		h.ok(c)
	}
}

type failingCmd struct {
	cmd  *clusterv1.Command
	kind error
}

// failingCmds returns commands that fail against seedState, with their
// kind.
func failingCmds() []failingCmd {
	return []failingCmd{
		{as("alice", createCmd("general", false)), storage.ErrAlreadyExists},
		{as("eve", postCmd("secret", "x", "")), storage.ErrNotFound},
		{as("eve", joinCmd("secret")), storage.ErrNotFound},
		{as("eve", postCmd("general", "x", "e-1")), storage.ErrPermissionDenied},
		{as("bob", editCmd("general", 2, "mine now")), storage.ErrPermissionDenied},
		{as("bob", deleteCmd("general", 2)), storage.ErrPermissionDenied},
		{as("alice", postCmd("old", "x", "a-1")), storage.ErrFailedPrecondition},
		{as("alice", leaveCmd("old")), storage.ErrFailedPrecondition},
		{as("eve", archiveCmd("general")), storage.ErrPermissionDenied},
		{as("alice", postCmd("general", "x", "bad id!")), storage.ErrInvalidArgument},
		{as("alice", postCmd("general", "", "")), storage.ErrInvalidArgument},
		{as("alice", replyCmd("general", 4, "nested")), storage.ErrInvalidArgument},
		{as("alice", replyCmd("general", 7, "to a tombstone")), storage.ErrNotFound},
		{as("alice", reactCmd("general", 7, "wave")), storage.ErrNotFound},
		{as("alice", editCmd("general", 7, "undelete")), storage.ErrNotFound},
		{as("alice", reactCmd("general", 2, "Bad")), storage.ErrInvalidArgument},
		{as("", postCmd("general", "x", "")), storage.ErrInvalidArgument},
		{as("alice", trimCmd("nope", 3)), storage.ErrNotFound},
		{as("alice", &clusterv1.Command{}), storage.ErrInvalidArgument},
	}
}

// TestFailedCommandsChangeNothing applies each failing command to one DB
// and an empty entry at the same index to a twin: their digests must stay
// equal, so a failed command wrote nothing at all.
func TestFailedCommandsChangeNothing(t *testing.T) {
	h, twin := newHarness(t), newHarness(t)
	seedState(h)
	seedState(twin)
	for _, f := range failingCmds() {
		t.Run(fmt.Sprint(f.cmd), func(t *testing.T) {
			h.fails(f.cmd, f.kind)
			twin.skip()
			i1, d1 := h.digest()
			i2, d2 := twin.digest()
			if i1 != i2 || d1 != d2 {
				t.Errorf("after failing %v: digest %d/%x, want %d/%x (an empty entry at the same index)", f.cmd, i1, d1, i2, d2)
			}
		})
	}
}

// TestNoOpCommandsChangeNothing applies commands that succeed but change
// nothing (a second join, an edit to the same text, a retried post, ...):
// like failed commands, they must write nothing but the applied index.
func TestNoOpCommandsChangeNothing(t *testing.T) {
	h, twin := newHarness(t), newHarness(t)
	seedState(h)
	seedState(twin)
	for _, c := range []*clusterv1.Command{
		as("bob", joinCmd("general")),
		as("alice", joinCmd("general")),
		as("carol", leaveCmd("general")),
		as("carol", leaveCmd("old")),
		as("alice", archiveCmd("old")),
		asAdmin("root", archiveCmd("old")),
		as("alice", editCmd("general", 2, "hello, edited")),
		as("bob", reactCmd("general", 2, "wave")),
		as("alice", unreactCmd("general", 2, "wave")),
		as("bob", unreactCmd("general", 2, "tada")),
		as("alice", deleteCmd("general", 7)),
		asAdmin("root", deleteCmd("general", 7)),
		as("alice", postCmd("general", "hello", "cid-1")),
		as("alice", postCmd("general", "other text", "cid-1")),
		as("leader", trimCmd("general", 0)),
		as("leader", trimCmd("secret", 0)),
	} {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			res, evs := h.apply(c)
			if res.Err != nil || len(evs) != 0 {
				t.Fatalf("%v: error = %v, events = %v; want nil, none", c, res.Err, kinds(evs))
			}
			if res.Message == nil && res.Channel == nil {
				t.Errorf("%v: result = %+v, want the unchanged message or channel", c, res)
			}
			twin.skip()
			i1, d1 := h.digest()
			i2, d2 := twin.digest()
			if i1 != i2 || d1 != d2 {
				t.Errorf("after no-op %v: digest %d/%x, want %d/%x (an empty entry at the same index)", c, i1, d1, i2, d2)
			}
		})
	}
}

// TestBatchAtomicity applies a batch in which failing commands sit between
// good ones: each failure must change nothing while its neighbours apply,
// and results must line up with entries.
func TestBatchAtomicity(t *testing.T) {
	h, twin := newHarness(t), newHarness(t)
	seedState(h)
	seedState(twin)

	var batch, twinBatch []*clusterv1.Command
	var wantErr []error
	good := []*clusterv1.Command{
		as("alice", postCmd("general", "good 1", "g-1")),
		as("bob", reactCmd("general", 3, "ok")),
		as("carol", joinCmd("general")),
		as("carol", postCmd("general", "good 2", "")),
		as("alice", editCmd("general", 2, "edited in a batch")),
		as("bob", deleteCmd("general", 3)),
	}
	for i, f := range failingCmds() {
		g := good[i%len(good)]
		if i >= len(good) {
			g = as("alice", postCmd("general", fmt.Sprintf("filler %d", i), ""))
		}
		batch = append(batch, g, f.cmd)
		twinBatch = append(twinBatch, g, nil)
		wantErr = append(wantErr, nil, f.kind)
	}
	batch = append(batch, as("alice", postCmd("general", "last", "")))
	twinBatch = append(twinBatch, batch[len(batch)-1])
	wantErr = append(wantErr, nil)

	res, evs := h.batch(batch...)
	twinRes, twinEvs := twin.batch(twinBatch...)
	for i, r := range res {
		if wantErr[i] == nil {
			if r.Err != nil || r.Skipped {
				t.Errorf("entry %d (%v): error = %v, skipped = %v; want applied", i, batch[i], r.Err, r.Skipped)
				continue
			}
			if r.Message == nil && r.Channel == nil {
				t.Errorf("entry %d (%v): result = %+v, want a message or channel", i, batch[i], r)
			}
			if !proto.Equal(r.Message, twinRes[i].Message) || !proto.Equal(r.Channel, twinRes[i].Channel) {
				t.Errorf("entry %d (%v): result %+v, want %+v as without the failing commands", i, batch[i], r, twinRes[i])
			}
			continue
		}
		if !errors.Is(r.Err, wantErr[i]) {
			t.Errorf("entry %d (%v): error = %v, want %v", i, batch[i], r.Err, wantErr[i])
		}
	}
	if len(evs) != len(twinEvs) {
		t.Fatalf("batch appended %d events, want %d", len(evs), len(twinEvs))
	}
	for i := range evs {
		if !proto.Equal(evs[i], twinEvs[i]) {
			t.Errorf("event %d = %v, want %v", i, evs[i], twinEvs[i])
		}
	}
	// The events returned are the events stored, gap-free.
	stored := h.events("general")
	tail := stored[len(stored)-len(evs):]
	for i := range evs {
		if !proto.Equal(evs[i], tail[i]) {
			t.Errorf("returned event %d = %v, want the stored %v", i, evs[i], tail[i])
		}
	}
	i1, d1 := h.digest()
	i2, d2 := twin.digest()
	if i1 != i2 || d1 != d2 {
		t.Errorf("digest %d/%x, want %d/%x (same batch with failing commands as empty entries)", i1, d1, i2, d2)
	}
	if i1 != h.index {
		t.Errorf("applied index = %d, want the batch's last index %d", i1, h.index)
	}
}

func TestAppliedIndex(t *testing.T) {
	h := newHarness(t)
	if idx, term, err := h.db.AppliedIndex(); err != nil || idx != 0 || term != 0 {
		t.Fatalf("fresh AppliedIndex() = %d, %d, %v; want 0, 0, nil", idx, term, err)
	}

	cmds := []*clusterv1.Command{
		as("alice", createCmd("general", false)),
		as("alice", postCmd("general", "one", "")),
		as("alice", postCmd("general", "two", "")),
	}
	entries := []storage.Entry{
		{Index: 5, Term: 2, Cmd: cmds[0]},
		{Index: 6, Term: 2, Cmd: cmds[1]},
		{Index: 7, Term: 3, Cmd: cmds[2]},
	}
	checkIndex := func(t *testing.T, wantIdx, wantTerm uint64) {
		t.Helper()
		idx, term, err := h.db.AppliedIndex()
		if err != nil || idx != wantIdx || term != wantTerm {
			t.Errorf("AppliedIndex() = %d, %d, %v; want %d, %d, nil", idx, term, err, wantIdx, wantTerm)
		}
		h.view(func(r *storage.Reader) error {
			if got := r.AppliedIndex(); got != wantIdx {
				t.Errorf("Reader.AppliedIndex() = %d, want %d", got, wantIdx)
			}
			return nil
		})
		if got, _ := h.digest(); got != wantIdx {
			t.Errorf("Digest index = %d, want %d", got, wantIdx)
		}
	}

	res, evs, err := h.db.Apply(entries)
	if err != nil || len(res) != 3 || len(evs) != 2 {
		t.Fatalf("Apply(5..7) = %d results, %d events, %v; want 3, 2, nil", len(res), len(evs), err)
	}
	checkIndex(t, 7, 3)
	_, sum := h.digest()

	redeliveries := []struct {
		name    string
		entries []storage.Entry
	}{
		{"the same batch", entries},
		{"the last entry", entries[2:]},
		{"the first entry", entries[:1]},
		{"an older index", []storage.Entry{{Index: 1, Term: 1, Cmd: as("bob", createCmd("other", false))}}},
		{"an empty entry at the applied index", []storage.Entry{{Index: 7, Term: 3}}},
	}
	for _, tt := range redeliveries {
		t.Run(tt.name, func(t *testing.T) {
			res, evs, err := h.db.Apply(tt.entries)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for i, r := range res {
				if !r.Skipped || r.Err != nil || r.Message != nil || r.Channel != nil {
					t.Errorf("entry %d (index %d): result %+v, want Skipped only", i, tt.entries[i].Index, r)
				}
			}
			if len(evs) != 0 {
				t.Errorf("re-applied entries appended %v", kinds(evs))
			}
			if _, got := h.digest(); got != sum {
				t.Errorf("digest changed by re-applying entries at or below the applied index")
			}
			checkIndex(t, 7, 3)
		})
	}

	t.Run("a batch straddling the applied index", func(t *testing.T) {
		res, evs, err := h.db.Apply([]storage.Entry{
			{Index: 7, Term: 3, Cmd: cmds[2]},
			{Index: 8, Term: 3, Cmd: as("alice", postCmd("general", "three", ""))},
		})
		if err != nil || !res[0].Skipped || res[1].Skipped || res[1].Err != nil || len(evs) != 1 {
			t.Fatalf("Apply(7, 8) = %+v, %d events, %v; want skipped, applied, 1 event", res, len(evs), err)
		}
		if got := res[1].Message.GetSeq(); got != 3 {
			t.Errorf("post at index 8: seq = %d, want 3", got)
		}
		checkIndex(t, 8, 3)
	})

	t.Run("entries without a command advance the index", func(t *testing.T) {
		decodeErr := errors.New("decode command: junk")
		_, before := h.digest()
		res, evs, err := h.db.Apply([]storage.Entry{{Index: 9, Term: 4}, {Index: 10, Term: 4, Err: decodeErr}})
		if err != nil || len(evs) != 0 {
			t.Fatalf("Apply(nil commands) = %v, %d events; want nil, 0", err, len(evs))
		}
		if res[0].Err != nil || res[0].Skipped || !errors.Is(res[1].Err, decodeErr) {
			t.Errorf("results = %+v, want nil error, then the entry's Err", res)
		}
		checkIndex(t, 10, 4)
		if _, after := h.digest(); after == before {
			t.Errorf("digest unchanged after the applied index moved; want it to cover the index")
		}
	})

	t.Run("a failing command advances the index", func(t *testing.T) {
		res, _, err := h.db.Apply([]storage.Entry{{Index: 11, Term: 4, Cmd: as("alice", postCmd("nope", "x", ""))}})
		if err != nil || !errors.Is(res[0].Err, storage.ErrNotFound) {
			t.Fatalf("Apply(post to unknown channel) = %+v, %v; want ErrNotFound result", res, err)
		}
		checkIndex(t, 11, 4)
	})

	t.Run("an empty batch changes nothing", func(t *testing.T) {
		_, before := h.digest()
		res, evs, err := h.db.Apply(nil)
		if err != nil || len(res) != 0 || len(evs) != 0 {
			t.Errorf("Apply(nil) = %v, %v, %v; want empty, nil", res, evs, err)
		}
		if _, after := h.digest(); after != before {
			t.Errorf("empty Apply changed the digest")
		}
		checkIndex(t, 11, 4)
	})
}

func TestClosed(t *testing.T) {
	db, err := storage.Open(t.TempDir()+"/state.db", fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil (idempotent)", err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"Apply", func() error {
			_, _, err := db.Apply([]storage.Entry{{Index: 1, Cmd: as("a", createCmd("c", false))}})
			return err
		}},
		{"View", func() error { return db.View(func(*storage.Reader) error { return nil }) }},
		{"AppliedIndex", func() error { _, _, err := db.AppliedIndex(); return err }},
		{"Digest", func() error { _, _, err := db.Digest(); return err }},
		{"Snapshot", func() error { _, err := db.Snapshot(); return err }},
		{"Restore", func() error {
			_, err := db.Restore(strings.NewReader("HRLDSNP1" + strings.Repeat("\xff", 24)))
			return err
		}},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s on a closed DB = %v, want %v", c.name, err, storage.ErrClosed)
		}
	}
}

// TestResultsAreCopies checks that results and events returned by Apply and
// values returned by readers do not alias one another or stored state.
func TestResultsAreCopies(t *testing.T) {
	h := newChannel(t)
	res, evs := h.apply(as("alice", postCmd("general", "original", "")))
	res.Message.Text = "scribbled"
	evs[0].GetMessagePosted().GetMessage().Author = "mallory"
	if got := h.message("general", res.Message.GetSeq(), 0); got.GetText() != "original" || got.GetAuthor() != "alice" {
		t.Errorf("stored message = %v after mutating results, want unchanged", got)
	}
	ch := h.channel("general")
	ch.Name = "scribbled"
	if got := h.channel("general").GetName(); got != "general" {
		t.Errorf("channel name = %q after mutating a read, want %q", got, "general")
	}
	// Events returned by one Apply are independent of later commands.
	h.ok(as("alice", deleteCmd("general", res.Message.GetSeq())))
	if got := evs[0].GetMessagePosted().GetMessage().GetText(); got != "original" {
		t.Errorf("returned event text = %q after a later delete, want %q (already published)", got, "original")
	}
}

// TestMembershipWithinOneBatch checks that a membership change is seen by
// the commands after it in the same Apply call (one bbolt transaction).
func TestMembershipWithinOneBatch(t *testing.T) {
	tests := []struct {
		name       string
		batch      []*clusterv1.Command
		wantEvents []string
		wantCount  uint32
	}{
		{"creator posts", []*clusterv1.Command{
			as("alice", createCmd("general", false)),
			as("alice", postCmd("general", "first!", "")),
		}, []string{"message_posted"}, 1},
		{"creator of a private channel posts", []*clusterv1.Command{
			as("alice", createCmd("general", true)),
			as("alice", postCmd("general", "first!", "")),
		}, []string{"message_posted"}, 1},
		{"joiner posts", []*clusterv1.Command{
			as("alice", createCmd("general", false)),
			as("bob", joinCmd("general")),
			as("bob", postCmd("general", "hi", "")),
		}, []string{"member_joined", "message_posted"}, 2},
		{"join twice", []*clusterv1.Command{
			as("alice", createCmd("general", false)),
			as("bob", joinCmd("general")),
			as("bob", joinCmd("general")),
		}, []string{"member_joined"}, 2},
		{"creator joins", []*clusterv1.Command{
			as("alice", createCmd("general", false)),
			as("alice", joinCmd("general")),
		}, nil, 1},
		{"creator leaves", []*clusterv1.Command{
			as("alice", createCmd("general", false)),
			as("alice", leaveCmd("general")),
		}, []string{"member_left"}, 0},
		{"creator archives", []*clusterv1.Command{
			as("alice", createCmd("general", false)),
			as("alice", archiveCmd("general")),
		}, []string{"channel_updated"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res, _ := h.batch(tt.batch...)
			for i, r := range res {
				if r.Err != nil {
					t.Errorf("entry %d (%v): error = %v, want nil", i, tt.batch[i], r.Err)
				}
			}
			if got := kinds(h.events("general")); !slices.Equal(got, tt.wantEvents) {
				t.Errorf("events = %v, want %v", got, tt.wantEvents)
			}
			if got := h.channel("general").GetMemberCount(); got != tt.wantCount {
				t.Errorf("member_count = %d, want %d", got, tt.wantCount)
			}
		})
	}
}

// TestBatchingDoesNotMatter applies the same commands one per Apply, all in
// one Apply, and in batches of varying sizes: the results and the final
// digest must be the same, because replicas batch differently.
func TestBatchingDoesNotMatter(t *testing.T) {
	cmds := seedCmds()
	cmds = append(cmds,
		as("carol", joinCmd("general")),
		as("carol", postCmd("general", "carol here", "c-1")),
		as("carol", postCmd("general", "carol again", "c-1")), // duplicate
		as("carol", reactCmd("general", 2, "wave")),
		as("carol", leaveCmd("general")),
		as("carol", postCmd("general", "gone", "")), // not a member
		as("carol", joinCmd("secret")),              // not visible
		as("alice", createCmd("fresh", true)),
		as("alice", postCmd("fresh", "in fresh", "")),
		as("alice", trimCmd("general", 3)),
		as("bob", deleteCmd("general", 3)),
	)
	type outcome struct {
		msg  *heraldv1.Message
		ch   *heraldv1.Channel
		dup  bool
		kind string
	}
	show := func(o outcome) string {
		return fmt.Sprintf("{message: %v, channel: %v, duplicate: %v, error kind: %q}", o.msg, o.ch, o.dup, o.kind)
	}
	run := func(t *testing.T, sizes []int) ([]outcome, [32]byte) {
		h := newHarness(t)
		var out []outcome
		rest := cmds
		for i := 0; len(rest) > 0; i++ {
			n := min(sizes[i%len(sizes)], len(rest))
			res, _ := h.batch(rest[:n]...)
			rest = rest[n:]
			for _, r := range res {
				o := outcome{msg: r.Message, ch: r.Channel, dup: r.Duplicate}
				if r.Err != nil {
					o.kind = errors.Unwrap(r.Err).Error()
				}
				out = append(out, o)
			}
		}
		_, sum := h.digest()
		return out, sum
	}
	want, wantSum := run(t, []int{1})
	for _, sizes := range [][]int{{len(cmds)}, {2}, {3, 1}, {5, 7}} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			got, sum := run(t, sizes)
			for i := range want {
				g, w := got[i], want[i]
				if g.kind != w.kind || g.dup != w.dup || !proto.Equal(g.msg, w.msg) || !proto.Equal(g.ch, w.ch) {
					t.Errorf("command %d (%v) in batches of %v: got %s, want %s as applied one by one",
						i, cmds[i], sizes, show(g), show(w))
				}
			}
			if sum != wantSum {
				t.Errorf("digest in batches of %v = %x, want %x as applied one by one", sizes, sum, wantSum)
			}
		})
	}
}

// randomCmds returns n commands drawn from a small world of users, channels
// and seqs, so that most of them interact: joins, posts, replies, edits,
// deletes, reactions, archives and trims, many of which fail.
func randomCmds(seed uint64, n int) []*clusterv1.Command {
	rng := rand.New(rand.NewPCG(seed, 1))
	users := []string{"alice", "bob", "carol", "root"}
	channels := []string{"general", "secret", "ops"}
	texts := []string{"hi", "hello", "x", "another"}
	cmds := []*clusterv1.Command{
		as("alice", createCmd("general", false)),
		as("bob", createCmd("secret", true)),
		as("carol", createCmd("ops", false)),
	}
	for len(cmds) < n {
		user := users[rng.IntN(len(users))]
		ch := channels[rng.IntN(len(channels))]
		seq := uint64(rng.IntN(len(cmds)/len(channels) + 3))
		var c *clusterv1.Command
		switch rng.IntN(13) {
		case 0, 1:
			c = joinCmd(ch)
		case 2:
			c = leaveCmd(ch)
		case 3, 4, 5:
			c = postCmd(ch, texts[rng.IntN(len(texts))], fmt.Sprintf("c%d", rng.IntN(8)))
		case 6:
			c = replyCmd(ch, seq, texts[rng.IntN(len(texts))])
		case 7:
			c = editCmd(ch, seq, texts[rng.IntN(len(texts))])
		case 8:
			c = deleteCmd(ch, seq)
		case 9:
			c = reactCmd(ch, seq, []string{"a", "b"}[rng.IntN(2)])
		case 10:
			c = unreactCmd(ch, seq, []string{"a", "b"}[rng.IntN(2)])
		case 11:
			if rng.IntN(20) == 0 {
				c = archiveCmd("ops")
			} else {
				c = postCmd(ch, "filler", "")
			}
		case 12:
			c = trimCmd(ch, seq/2)
		}
		c.User, c.Admin = user, user == "root"
		// Clocks jitter backwards now and then.
		c.Ts = timestamppb.New(baseTime.Add(time.Duration(len(cmds)-rng.IntN(5)) * time.Second))
		cmds = append(cmds, c)
	}
	return cmds
}

// TestBatchingDoesNotMatterRandom is TestBatchingDoesNotMatter over random
// command streams and random batch boundaries.
func TestBatchingDoesNotMatterRandom(t *testing.T) {
	n := 400
	seeds := 4
	if testing.Short() {
		n, seeds = 250, 2
	}
	for seed := range uint64(seeds) {
		cmds := randomCmds(seed, n)
		// apply applies cmds in batches of next() each; with held, into a
		// DeferSync file (commits held, hold.go) that is read now and then,
		// which commits what is held.
		apply := func(t *testing.T, next func() int, held bool) ([]string, []*heraldv1.Event, [32]byte) {
			h := newHarness(t)
			if held {
				h.db = openDB(t, deferOpts)
			}
			var out []string
			var evs []*heraldv1.Event
			for rest := cmds; len(rest) > 0; {
				k := min(next(), len(rest))
				res, e := h.batch(rest[:k]...)
				rest = rest[k:]
				if held && len(out)%7 == 0 {
					if index, _, err := h.db.AppliedIndex(); err != nil || index != h.index {
						t.Fatalf("AppliedIndex after Apply to %d: got %d, %v", h.index, index, err)
					}
				}
				evs = append(evs, e...)
				for _, r := range res {
					out = append(out, fmt.Sprintf("%v|%v|%v|%v", r.Message, r.Channel, r.Duplicate, r.Err))
				}
			}
			_, sum := h.digest()
			return out, evs, sum
		}
		want, wantEvs, wantSum := apply(t, func() int { return 1 }, false)
		var failed int
		for _, r := range want {
			if !strings.HasSuffix(r, "|<nil>") {
				failed++
			}
		}
		t.Logf("seed %d: %d commands, %d failed, %d events", seed, len(cmds), failed, len(wantEvs))
		rng := rand.New(rand.NewPCG(seed, 2))
		for _, split := range []struct {
			name string
			next func() int
			held bool
		}{
			{"one batch", func() int { return len(cmds) }, false},
			{"random batches", func() int { return 1 + rng.IntN(40) }, false},
			{"random batches, held", func() int { return 1 + rng.IntN(5) }, true},
		} {
			t.Run(fmt.Sprintf("seed %d %s", seed, split.name), func(t *testing.T) {
				got, evs, sum := apply(t, split.next, split.held)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("command %d (%v): got %s, want %s as applied one by one", i, cmds[i], got[i], want[i])
					}
				}
				if len(evs) != len(wantEvs) {
					t.Fatalf("got %d events, want %d", len(evs), len(wantEvs))
				}
				for i := range evs {
					if !proto.Equal(evs[i], wantEvs[i]) {
						t.Fatalf("event %d = %v, want %v", i, evs[i], wantEvs[i])
					}
				}
				if sum != wantSum {
					t.Errorf("digest = %x, want %x as applied one by one", sum, wantSum)
				}
			})
		}
	}
}
