package storage_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

var anyone = storage.Caller{User: "reader"}

// historyChannel builds channel "general" with n top-level messages, some of
// them with replies, separated by reactions and joins so that message seqs
// are not contiguous. It returns the seqs of the top-level messages in
// order.
func historyChannel(t *testing.T, n int) (h *harness, roots []uint64) {
	t.Helper()
	h = newHarness(t)
	h.ok(as("alice", createCmd("general", false)))
	var cmds []*clusterv1.Command
	seq := uint64(0)
	for i := range n {
		seq++
		roots = append(roots, seq)
		cmds = append(cmds, as("alice", postCmd("general", fmt.Sprintf("message %d", i), "")))
		switch i % 5 {
		case 1:
			seq++
			cmds = append(cmds, as("alice", replyCmd("general", roots[len(roots)-1], "a reply")))
		case 2:
			seq++
			cmds = append(cmds, as("alice", reactCmd("general", roots[len(roots)-1], "ok")))
		case 3:
			seq++
			cmds = append(cmds, as(fmt.Sprintf("user%d", i), joinCmd("general")))
		}
	}
	// Apply in chunks, so that some pages straddle transaction boundaries.
	for len(cmds) > 0 {
		k := min(len(cmds), 97)
		res, _ := h.batch(cmds[:k]...)
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("setup command %v: %v", cmds[i], r.Err)
			}
		}
		cmds = cmds[k:]
	}
	if head := h.channel("general").GetHeadSeq(); head != seq {
		t.Fatalf("setup: head_seq = %d, want %d", head, seq)
	}
	return h, roots
}

// wantHistory is the model of History: roots in (after, before), ordered,
// cut to limit.
func wantHistory(roots []uint64, req *heraldv1.GetHistoryRequest) ([]uint64, bool) {
	var in []uint64
	for _, s := range roots {
		if s > req.GetAfterSeq() && (req.GetBeforeSeq() == 0 || s < req.GetBeforeSeq()) {
			in = append(in, s)
		}
	}
	if !req.GetOldestFirst() {
		slices.Reverse(in)
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = storage.DefaultPageSize
	}
	if len(in) > limit {
		return in[:limit], true
	}
	return in, false
}

func history(t *testing.T, h *harness, req *heraldv1.GetHistoryRequest) (*heraldv1.GetHistoryResponse, error) {
	t.Helper()
	var resp *heraldv1.GetHistoryResponse
	var herr error
	h.view(func(r *storage.Reader) error {
		resp, herr = r.History(anyone, req)
		return nil
	})
	return resp, herr
}

func TestHistory(t *testing.T) {
	h, roots := historyChannel(t, 120) // more than the default page
	last := roots[len(roots)-1]
	tests := []struct {
		name string
		req  *heraldv1.GetHistoryRequest
	}{
		{"newest first, default limit", &heraldv1.GetHistoryRequest{}},
		{"oldest first, default limit", &heraldv1.GetHistoryRequest{OldestFirst: true}},
		{"limit 1", &heraldv1.GetHistoryRequest{Limit: 1}},
		{"limit 1 oldest first", &heraldv1.GetHistoryRequest{Limit: 1, OldestFirst: true}},
		{"before_seq is exclusive", &heraldv1.GetHistoryRequest{BeforeSeq: roots[10], Limit: 3}},
		{"after_seq is exclusive", &heraldv1.GetHistoryRequest{AfterSeq: roots[10], Limit: 3, OldestFirst: true}},
		{"after_seq newest first", &heraldv1.GetHistoryRequest{AfterSeq: roots[100]}},
		{"before_seq oldest first", &heraldv1.GetHistoryRequest{BeforeSeq: roots[5], OldestFirst: true}},
		{"both bounds", &heraldv1.GetHistoryRequest{AfterSeq: roots[3], BeforeSeq: roots[9]}},
		{"both bounds oldest first", &heraldv1.GetHistoryRequest{AfterSeq: roots[3], BeforeSeq: roots[9], OldestFirst: true}},
		{"bounds on non-message seqs", &heraldv1.GetHistoryRequest{AfterSeq: roots[3] + 1, BeforeSeq: roots[9] + 1}},
		{"limit exactly the window", &heraldv1.GetHistoryRequest{AfterSeq: roots[3], BeforeSeq: roots[9], Limit: 5}},
		{"limit one under the window", &heraldv1.GetHistoryRequest{AfterSeq: roots[3], BeforeSeq: roots[9], Limit: 4}},
		{"limit exactly the window oldest first", &heraldv1.GetHistoryRequest{AfterSeq: roots[3], BeforeSeq: roots[9], Limit: 5, OldestFirst: true}},
		{"limit one under the window oldest first", &heraldv1.GetHistoryRequest{AfterSeq: roots[3], BeforeSeq: roots[9], Limit: 4, OldestFirst: true}},
		{"limit exactly everything", &heraldv1.GetHistoryRequest{Limit: uint32(len(roots))}},
		{"limit one under everything", &heraldv1.GetHistoryRequest{Limit: uint32(len(roots)) - 1}},
		{"maximum limit", &heraldv1.GetHistoryRequest{Limit: storage.MaxPageSize}},
		{"empty window", &heraldv1.GetHistoryRequest{AfterSeq: roots[5], BeforeSeq: roots[5]}},
		{"inverted window", &heraldv1.GetHistoryRequest{AfterSeq: roots[9], BeforeSeq: roots[3]}},
		{"before the first", &heraldv1.GetHistoryRequest{BeforeSeq: roots[0]}},
		{"before_seq 1", &heraldv1.GetHistoryRequest{BeforeSeq: 1}},
		{"after the last", &heraldv1.GetHistoryRequest{AfterSeq: last, OldestFirst: true}},
		{"after the last newest first", &heraldv1.GetHistoryRequest{AfterSeq: last}},
		{"before_seq past the head", &heraldv1.GetHistoryRequest{BeforeSeq: last + 1000, Limit: 2}},
		{"after_seq max", &heraldv1.GetHistoryRequest{AfterSeq: ^uint64(0), OldestFirst: true}},
		{"before_seq max", &heraldv1.GetHistoryRequest{BeforeSeq: ^uint64(0), Limit: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ChannelId = "general"
			resp, err := history(t, h, tt.req)
			if err != nil {
				t.Fatalf("History(%v) error = %v", tt.req, err)
			}
			want, wantMore := wantHistory(roots, tt.req)
			if got := seqsOf(resp.GetMessages()); !slices.Equal(got, want) || resp.GetHasMore() != wantMore {
				t.Errorf("History(%v) = %v has_more %v, want %v has_more %v", tt.req, got, resp.GetHasMore(), want, wantMore)
			}
			if resp.GetAppliedIndex() != h.index {
				t.Errorf("History(%v) applied_index = %d, want %d", tt.req, resp.GetAppliedIndex(), h.index)
			}
			for _, m := range resp.GetMessages() {
				if m.GetThreadSeq() != 0 || m.GetChannelId() != "general" {
					t.Errorf("History(%v) returned %v, want only top-level messages of general", tt.req, m)
				}
			}
		})
	}

	t.Run("limit over the maximum", func(t *testing.T) {
		for _, limit := range []uint32{storage.MaxPageSize + 1, ^uint32(0)} {
			_, err := history(t, h, &heraldv1.GetHistoryRequest{ChannelId: "general", Limit: limit})
			checkDomainErr(t, fmt.Sprintf("History(limit %d)", limit), err, storage.ErrInvalidArgument)
		}
	})
	t.Run("unknown or bad channel", func(t *testing.T) {
		_, err := history(t, h, &heraldv1.GetHistoryRequest{ChannelId: "nope"})
		checkDomainErr(t, "History(nope)", err, storage.ErrNotFound)
		_, err = history(t, h, &heraldv1.GetHistoryRequest{ChannelId: "No!"})
		checkDomainErr(t, "History(No!)", err, storage.ErrInvalidArgument)
	})
	t.Run("neighbouring channels do not leak", func(t *testing.T) {
		// Ids that sort right before and after "general", and one that
		// extends it, must not show up in its history or it in theirs.
		for _, id := range []string{"generak", "generam", "general-2", "generalx", "g"} {
			h.ok(as("bob", createCmd(id, false)))
			h.post("bob", id, "elsewhere")
		}
		for _, req := range []*heraldv1.GetHistoryRequest{
			{ChannelId: "general", Limit: storage.MaxPageSize},
			{ChannelId: "general", Limit: storage.MaxPageSize, OldestFirst: true},
		} {
			resp, err := history(t, h, req)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqsOf(resp.GetMessages()); len(got) != len(roots) {
				t.Errorf("History(%v) = %d messages, want %d", req, len(got), len(roots))
			}
		}
		resp, err := history(t, h, &heraldv1.GetHistoryRequest{ChannelId: "generak"})
		if err != nil || len(resp.GetMessages()) != 1 || resp.GetHasMore() {
			t.Errorf("History(generak) = %v, %v; want its one message", resp, err)
		}
	})
}

// TestHistoryPaging pages through a channel of a few hundred messages in
// both directions with many limits, and against random windows, comparing
// with the model.
func TestHistoryPaging(t *testing.T) {
	n := 600
	if testing.Short() {
		n = 300
	}
	h, roots := historyChannel(t, n)
	for _, oldestFirst := range []bool{false, true} {
		for _, limit := range []uint32{1, 2, 3, 7, 50, 99, 100, uint32(n) - 1, uint32(n), uint32(n) + 1, storage.MaxPageSize} {
			t.Run(fmt.Sprintf("oldest_first=%v limit=%d", oldestFirst, limit), func(t *testing.T) {
				var got []uint64
				req := &heraldv1.GetHistoryRequest{ChannelId: "general", Limit: limit, OldestFirst: oldestFirst}
				for page := 0; ; page++ {
					if page > n+1 {
						t.Fatalf("paging did not end after %d pages", page)
					}
					resp, err := history(t, h, req)
					if err != nil {
						t.Fatalf("History(%v) error = %v", req, err)
					}
					msgs := resp.GetMessages()
					if resp.GetHasMore() && len(msgs) != int(limit) {
						t.Fatalf("History(%v) = %d messages with has_more, want a full page of %d", req, len(msgs), limit)
					}
					got = append(got, seqsOf(msgs)...)
					if !resp.GetHasMore() {
						break
					}
					if oldestFirst {
						req.AfterSeq = msgs[len(msgs)-1].GetSeq()
					} else {
						req.BeforeSeq = msgs[len(msgs)-1].GetSeq()
					}
				}
				want := slices.Clone(roots)
				if !oldestFirst {
					slices.Reverse(want)
				}
				if !slices.Equal(got, want) {
					t.Errorf("paged %d messages, want every one of %d exactly once in order (first diff at %d)",
						len(got), len(want), firstDiff(got, want))
				}
			})
		}
	}

	t.Run("random windows", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 7))
		head := h.channel("general").GetHeadSeq()
		for range 300 {
			req := &heraldv1.GetHistoryRequest{
				ChannelId:   "general",
				Limit:       uint32(rng.IntN(40)),
				OldestFirst: rng.IntN(2) == 0,
			}
			if rng.IntN(3) > 0 {
				req.AfterSeq = rng.Uint64N(head + 2)
			}
			if rng.IntN(3) > 0 {
				req.BeforeSeq = rng.Uint64N(head + 2)
			}
			resp, err := history(t, h, req)
			if err != nil {
				t.Fatalf("History(%v) error = %v", req, err)
			}
			want, wantMore := wantHistory(roots, req)
			if got := seqsOf(resp.GetMessages()); !slices.Equal(got, want) || resp.GetHasMore() != wantMore {
				t.Fatalf("History(%v) = %v has_more %v, want %v has_more %v", req, got, resp.GetHasMore(), want, wantMore)
			}
		}
	})
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestThreadPaging(t *testing.T) {
	h := newChannel(t)
	parent := h.post("alice", "general", "parent")
	other := h.post("alice", "general", "other parent")
	var replies []uint64
	for i := range 25 {
		replies = append(replies, h.reply("bob", "general", parent, fmt.Sprintf("reply %d", i)))
		if i%3 == 0 {
			h.reply("alice", "general", other, "elsewhere")
			h.post("alice", "general", "top level")
		}
	}
	h.ok(as("bob", deleteCmd("general", replies[3])))

	thread := func(req *heraldv1.GetThreadRequest) (*heraldv1.GetThreadResponse, error) {
		var resp *heraldv1.GetThreadResponse
		var terr error
		h.view(func(r *storage.Reader) error {
			resp, terr = r.Thread(anyone, req)
			return nil
		})
		return resp, terr
	}
	for _, limit := range []uint32{1, 4, 10, 24, 25, 26, 0} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			req := &heraldv1.GetThreadRequest{ChannelId: "general", ThreadSeq: parent, Limit: limit}
			var got []uint64
			for {
				resp, err := thread(req)
				if err != nil {
					t.Fatalf("Thread(%v) error = %v", req, err)
				}
				if resp.GetParent().GetSeq() != parent || resp.GetParent().GetReplyCount() != 24 {
					t.Errorf("Thread(%v) parent = %v, want seq %d with reply_count 24", req, resp.GetParent(), parent)
				}
				if resp.GetAppliedIndex() != h.index {
					t.Errorf("Thread(%v) applied_index = %d, want %d", req, resp.GetAppliedIndex(), h.index)
				}
				rs := resp.GetReplies()
				effective := int(limit)
				if limit == 0 {
					effective = storage.DefaultPageSize
				}
				if resp.GetHasMore() != (len(got)+len(rs) < len(replies)) || len(rs) > effective {
					t.Errorf("Thread(%v) = %d replies has_more %v after %d; want at most %d, has_more iff more remain",
						req, len(rs), resp.GetHasMore(), len(got), effective)
				}
				for _, r := range rs {
					if r.GetThreadSeq() != parent {
						t.Errorf("Thread(%v) returned %v, want only replies to %d", req, r, parent)
					}
				}
				got = append(got, seqsOf(rs)...)
				if !resp.GetHasMore() {
					break
				}
				req.AfterSeq = rs[len(rs)-1].GetSeq()
			}
			if !slices.Equal(got, replies) {
				t.Errorf("paged replies %v, want %v", got, replies)
			}
		})
	}
	t.Run("deleted reply is a tombstone", func(t *testing.T) {
		resp, err := thread(&heraldv1.GetThreadRequest{ChannelId: "general", ThreadSeq: parent, AfterSeq: replies[2], Limit: 1})
		if err != nil || len(resp.GetReplies()) != 1 {
			t.Fatalf("Thread = %v, %v", resp, err)
		}
		if r := resp.GetReplies()[0]; r.GetSeq() != replies[3] || !r.GetDeleted() || r.GetText() != "" {
			t.Errorf("deleted reply = %v, want a tombstone of %d", r, replies[3])
		}
	})
	for _, tt := range []struct {
		name string
		req  *heraldv1.GetThreadRequest
		want error
	}{
		{"thread of a reply", &heraldv1.GetThreadRequest{ThreadSeq: replies[0]}, storage.ErrNotFound},
		{"thread of an unknown seq", &heraldv1.GetThreadRequest{ThreadSeq: 99999}, storage.ErrNotFound},
		{"thread_seq 0", &heraldv1.GetThreadRequest{}, storage.ErrNotFound},
		{"thread of a membership event", &heraldv1.GetThreadRequest{ThreadSeq: 1}, storage.ErrNotFound},
		{"limit over the maximum", &heraldv1.GetThreadRequest{ThreadSeq: parent, Limit: storage.MaxPageSize + 1}, storage.ErrInvalidArgument},
		{"unknown channel", &heraldv1.GetThreadRequest{ChannelId: "nope", ThreadSeq: parent}, storage.ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.ChannelId == "" {
				tt.req.ChannelId = "general"
			}
			_, err := thread(tt.req)
			checkDomainErr(t, fmt.Sprintf("Thread(%v)", tt.req), err, tt.want)
		})
	}
	t.Run("after the last reply", func(t *testing.T) {
		resp, err := thread(&heraldv1.GetThreadRequest{ChannelId: "general", ThreadSeq: parent, AfterSeq: replies[len(replies)-1]})
		if err != nil || len(resp.GetReplies()) != 0 || resp.GetHasMore() {
			t.Errorf("Thread(after last) = %v, %v; want no replies, no more", resp, err)
		}
	})
	t.Run("thread without replies", func(t *testing.T) {
		lonely := h.post("alice", "general", "no replies")
		resp, err := thread(&heraldv1.GetThreadRequest{ChannelId: "general", ThreadSeq: lonely})
		if err != nil || len(resp.GetReplies()) != 0 || resp.GetHasMore() || resp.GetParent().GetSeq() != lonely {
			t.Errorf("Thread(lonely) = %v, %v; want the parent and no replies", resp, err)
		}
	})
}

func TestListChannels(t *testing.T) {
	h := newHarness(t)
	type ch struct {
		id       string
		creator  string
		private  bool
		archived bool
		members  []string
	}
	channels := []ch{
		{id: "a-public", creator: "alice"},
		{id: "b-private", creator: "alice", private: true},
		{id: "c-archived", creator: "bob", archived: true},
		{id: "d-private-bob", creator: "bob", private: true},
		{id: "e", creator: "carol", members: []string{"alice"}},
		{id: "e.archived-private", creator: "alice", private: true, archived: true},
		{id: "f-private-shared", creator: "carol", private: true, members: []string{"root"}},
		{id: "g", creator: "carol"},
	}
	for _, c := range channels {
		h.ok(as(c.creator, createCmd(c.id, c.private)))
		for _, m := range c.members {
			h.ok(asAdmin(m, joinCmd(c.id)))
		}
		if c.archived {
			h.ok(as(c.creator, archiveCmd(c.id)))
		}
	}
	visible := func(caller storage.Caller, c ch, excludeArchived bool) bool {
		if excludeArchived && c.archived {
			return false
		}
		return !c.private || caller.Admin || c.creator == caller.User || slices.Contains(c.members, caller.User)
	}
	callers := []storage.Caller{{User: "alice"}, {User: "bob"}, {User: "eve"}, {User: "root", Admin: true}}
	for _, caller := range callers {
		for _, excl := range []bool{false, true} {
			var want []string
			for _, c := range channels {
				if visible(caller, c, excl) {
					want = append(want, c.id)
				}
			}
			for _, limit := range []int{1, 2, 3, len(want), len(want) + 1, 100} {
				if limit == 0 {
					continue
				}
				t.Run(fmt.Sprintf("%s exclude_archived=%v limit=%d", caller.User, excl, limit), func(t *testing.T) {
					var got []string
					cursor := ""
					for page := 0; ; page++ {
						if page > len(channels) {
							t.Fatalf("paging did not end")
						}
						var chs []*heraldv1.Channel
						var more bool
						h.view(func(r *storage.Reader) error {
							var err error
							chs, more, err = r.ListChannels(caller, cursor, limit, excl)
							return err
						})
						if len(chs) > limit || (more && len(chs) != limit) {
							t.Fatalf("ListChannels(cursor %q, limit %d) = %d channels has_more %v", cursor, limit, len(chs), more)
						}
						got = append(got, channelIDs(chs)...)
						if wantMore := len(got) < len(want); more != wantMore {
							t.Errorf("ListChannels(cursor %q, limit %d) has_more = %v, want %v", cursor, limit, more, wantMore)
						}
						if !more {
							break
						}
						cursor = chs[len(chs)-1].GetId()
					}
					if !slices.Equal(got, want) {
						t.Errorf("ListChannels as %+v, exclude_archived %v, limit %d = %v, want %v", caller, excl, limit, got, want)
					}
				})
			}
		}
	}
	t.Run("cursor between ids", func(t *testing.T) {
		h.view(func(r *storage.Reader) error {
			chs, _, err := r.ListChannels(storage.Caller{User: "eve"}, "d", 2, false)
			if got := channelIDs(chs); err != nil || !slices.Equal(got, []string{"e", "g"}) {
				t.Errorf("ListChannels(eve, cursor d) = %v, %v; want [e g]", got, err)
			}
			chs, more, err := r.ListChannels(storage.Caller{User: "eve"}, "zzz", 2, false)
			if err != nil || len(chs) != 0 || more {
				t.Errorf("ListChannels(cursor past the end) = %v, %v, %v; want empty", chs, more, err)
			}
			return nil
		})
	})
}

func TestEvents(t *testing.T) {
	h := newChannel(t) // 1: bob joined
	var seqs []uint64
	for i := range 9 {
		seqs = append(seqs, h.post("alice", "general", fmt.Sprintf("m%d", i))) // 2..10
	}
	events := func(after uint64, limit int) ([]*heraldv1.Event, uint64, uint64, error) {
		var evs []*heraldv1.Event
		var head, oldest uint64
		var err error
		h.view(func(r *storage.Reader) error {
			evs, head, oldest, err = r.Events("general", after, limit)
			return nil
		})
		return evs, head, oldest, err
	}
	check := func(t *testing.T, after uint64, limit int, wantFirst uint64, wantN int, wantHead, wantOldest uint64) {
		t.Helper()
		evs, head, oldest, err := events(after, limit)
		if err != nil {
			t.Fatalf("Events(after %d, limit %d) error = %v", after, limit, err)
		}
		if head != wantHead || oldest != wantOldest {
			t.Errorf("Events(after %d) head, oldest = %d, %d; want %d, %d", after, head, oldest, wantHead, wantOldest)
		}
		if len(evs) != wantN {
			t.Fatalf("Events(after %d, limit %d) = %d events, want %d", after, limit, len(evs), wantN)
		}
		for i, ev := range evs {
			if ev.GetSeq() != wantFirst+uint64(i) {
				t.Errorf("Events(after %d, limit %d)[%d] seq = %d, want %d", after, limit, i, ev.GetSeq(), wantFirst+uint64(i))
			}
		}
	}

	for _, tt := range []struct {
		after     uint64
		limit     int
		wantFirst uint64
		wantN     int
	}{
		{0, 100, 1, 10},
		{0, 3, 1, 3},
		{3, 3, 4, 3},
		{9, 100, 10, 1},
		{10, 100, 0, 0},   // at the head
		{1000, 100, 0, 0}, // past the head
		{^uint64(0), 5, 0, 0},
		{5, 0, 0, 0},
	} {
		t.Run(fmt.Sprintf("after %d limit %d", tt.after, tt.limit), func(t *testing.T) {
			check(t, tt.after, tt.limit, tt.wantFirst, tt.wantN, 10, 1)
		})
	}

	t.Run("unknown channel", func(t *testing.T) {
		h.view(func(r *storage.Reader) error {
			_, _, _, err := r.Events("nope", 0, 10)
			checkDomainErr(t, "Events(nope)", err, storage.ErrNotFound)
			return nil
		})
	})

	t.Run("trim", func(t *testing.T) {
		res := h.ok(as("leader", trimCmd("general", 5)))
		if got := res.Channel.GetOldestSeq(); got != 6 {
			t.Errorf("trim cutoff 5: result oldest_seq = %d, want 6", got)
		}
		if got := h.channel("general").GetOldestSeq(); got != 6 {
			t.Errorf("trim cutoff 5: stored oldest_seq = %d, want 6", got)
		}
		for _, after := range []uint64{0, 3, 4} {
			evs, head, oldest, err := events(after, 10)
			checkDomainErr(t, fmt.Sprintf("Events(after %d)", after), err, storage.ErrCursorExpired)
			if evs != nil || head != 10 || oldest != 6 {
				t.Errorf("Events(after %d) = %d events, head %d, oldest %d; want none, 10, 6", after, len(evs), head, oldest)
			}
		}
		check(t, 5, 100, 6, 5, 10, 6)
		check(t, 7, 2, 8, 2, 10, 6)

		// Trims at or below the oldest are no-ops.
		for _, cutoff := range []uint64{0, 3, 5} {
			h.ok(as("leader", trimCmd("general", cutoff)))
		}
		if got := h.channel("general").GetOldestSeq(); got != 6 {
			t.Errorf("after no-op trims: oldest_seq = %d, want 6", got)
		}

		// Messages and dedup are not trimmed.
		resp, err := history(t, h, &heraldv1.GetHistoryRequest{ChannelId: "general", OldestFirst: true})
		if err != nil || !slices.Equal(seqsOf(resp.GetMessages()), seqs) {
			t.Errorf("History after trim = %v, %v; want every message %v", seqsOf(resp.GetMessages()), err, seqs)
		}
		// Deleting a message whose events were trimmed works.
		h.ok(as("alice", deleteCmd("general", seqs[0])))

		// A cutoff past the head trims everything and clamps to the head.
		head := h.channel("general").GetHeadSeq()
		res = h.ok(as("leader", trimCmd("general", head+100)))
		if got := res.Channel.GetOldestSeq(); got != head+1 {
			t.Errorf("trim past the head: oldest_seq = %d, want head+1 = %d", got, head+1)
		}
		check(t, head, 10, 0, 0, head, head+1)
		if _, _, _, err := events(head-1, 10); !errors.Is(err, storage.ErrCursorExpired) {
			t.Errorf("Events(after head-1) after full trim error = %v, want %v", err, storage.ErrCursorExpired)
		}
		// The log continues from the head without a gap.
		next := h.post("alice", "general", "after trim")
		if next != head+1 {
			t.Errorf("post after full trim: seq = %d, want %d", next, head+1)
		}
		check(t, head, 10, head+1, 1, head+1, head+1)
	})

	t.Run("trim errors", func(t *testing.T) {
		h.fails(as("leader", trimCmd("nope", 3)), storage.ErrNotFound)
		h.fails(as("leader", trimCmd("No", 3)), storage.ErrInvalidArgument)
		// The leader proposes trims without a user.
		h.ok(trimCmd("general", 1))
	})

	t.Run("trim a channel without events", func(t *testing.T) {
		h.ok(as("alice", createCmd("quiet", false)))
		res := h.ok(as("leader", trimCmd("quiet", 10)))
		if res.Channel.GetOldestSeq() != 0 || res.Channel.GetHeadSeq() != 0 {
			t.Errorf("trim of an empty log: channel = %v, want head and oldest 0", res.Channel)
		}
		h.post("alice", "quiet", "first")
		if evs := h.events("quiet"); len(evs) != 1 || evs[0].GetSeq() != 1 {
			t.Errorf("events after trimming an empty log = %v, want seq 1", kinds(evs))
		}
	})
}

// TestTrimRedaction checks that a delete redacts retained events and skips
// trimmed ones.
func TestTrimRedaction(t *testing.T) {
	h := newChannel(t)
	m := h.post("alice", "general", "first text")      // 2
	h.ok(as("alice", editCmd("general", m, "second"))) // 3
	h.ok(as("alice", editCmd("general", m, "third")))  // 4
	h.ok(as("leader", trimCmd("general", 3)))
	h.ok(as("alice", deleteCmd("general", m)))
	evs := h.events("general")
	if len(evs) != 2 || evs[0].GetSeq() != 4 {
		t.Fatalf("events = %v, want seqs 4 and 5", kinds(evs))
	}
	if got := evs[0].GetMessageEdited().GetMessage(); got.GetText() != "" || got.GetSeq() != m {
		t.Errorf("retained edit event after delete = %v, want its text redacted", got)
	}
}
