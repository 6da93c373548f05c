package storage_test

import (
	"fmt"
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

// newChannel returns a harness with public channel "general" created by
// alice and joined by bob.
func newChannel(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.ok(as("alice", createCmd("general", false)))
	h.ok(as("bob", joinCmd("general")))
	return h
}

func TestPostAssignsNextSeq(t *testing.T) {
	h := newChannel(t) // seq 1: bob joined
	steps := []*clusterv1.Command{
		as("alice", postCmd("general", "one", "")),
		as("bob", postCmd("general", "two", "b-1")),
		as("carol", joinCmd("general")),
		as("carol", postCmd("general", "three", "")),
		as("alice", reactCmd("general", 2, "wave")),
		as("alice", editCmd("general", 2, "one, edited")),
		as("bob", postCmd("general", "four", "")),
	}
	for _, c := range steps {
		head := h.channel("general").GetHeadSeq()
		res, evs := h.apply(c)
		if res.Err != nil {
			t.Fatalf("%v: error = %v", c, res.Err)
		}
		if len(evs) != 1 || evs[0].GetSeq() != head+1 {
			t.Fatalf("%v: got events %v, want one event with seq %d", c, evs, head+1)
		}
		if p := c.GetPostMessage(); p != nil {
			msg := res.Message
			want := &heraldv1.Message{
				ChannelId:   "general",
				Seq:         head + 1,
				Author:      c.GetUser(),
				Text:        p.GetText(),
				ClientMsgId: p.GetClientMsgId(),
				Ts:          timestamppb.New(h.lastTs()),
			}
			if !proto.Equal(msg, want) {
				t.Errorf("post %q: message = %v, want %v", p.GetText(), msg, want)
			}
			if got := evs[0].GetMessagePosted().GetMessage(); !proto.Equal(got, want) {
				t.Errorf("post %q: message_posted carries %v, want %v", p.GetText(), got, want)
			}
			if !proto.Equal(evs[0].GetTs(), want.Ts) {
				t.Errorf("post %q: event ts = %v, want %v", p.GetText(), evs[0].GetTs(), want.Ts)
			}
		}
	}
	evs := h.events("general")
	want := []string{"member_joined", "message_posted", "message_posted", "member_joined",
		"message_posted", "reaction_added", "message_edited", "message_posted"}
	if got := kinds(evs); !slices.Equal(got, want) {
		t.Errorf("event kinds = %v, want %v", got, want)
	}
}

// TestAuthorizationOrder checks the order of DESIGN.md: the channel exists
// and is visible, then the caller is a member (or the author), then the
// channel is not archived.
func TestAuthorizationOrder(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("pub", false)))
	h.ok(as("bob", joinCmd("pub")))
	m := h.post("alice", "pub", "hello")
	h.ok(as("alice", reactCmd("pub", m, "wave")))
	h.ok(as("alice", archiveCmd("pub")))
	h.ok(as("alice", createCmd("priv", true)))
	pm := h.post("alice", "priv", "psst")
	h.ok(as("alice", archiveCmd("priv")))

	tests := []struct {
		name string
		cmd  *clusterv1.Command
		want error
	}{
		{"unknown channel", as("alice", postCmd("nope", "x", "")), storage.ErrNotFound},
		{"outsider posts to archived private", as("eve", postCmd("priv", "x", "")), storage.ErrNotFound},
		{"outsider edits in archived private", as("eve", editCmd("priv", pm, "x")), storage.ErrNotFound},
		{"outsider deletes in archived private", as("eve", deleteCmd("priv", pm)), storage.ErrNotFound},
		{"outsider joins archived private", as("eve", joinCmd("priv")), storage.ErrNotFound},
		{"non-member posts to archived public", as("eve", postCmd("pub", "x", "")), storage.ErrPermissionDenied},
		{"non-member posts with client_msg_id", as("eve", postCmd("pub", "x", "e-1")), storage.ErrPermissionDenied},
		{"non-member replies in archived public", as("eve", replyCmd("pub", m, "x")), storage.ErrPermissionDenied},
		{"non-member edits in archived public", as("eve", editCmd("pub", m, "x")), storage.ErrPermissionDenied},
		{"non-member reacts in archived public", as("eve", reactCmd("pub", m, "wave")), storage.ErrPermissionDenied},
		{"non-member unreacts in archived public", as("eve", unreactCmd("pub", m, "wave")), storage.ErrPermissionDenied},
		{"non-member archives", as("eve", archiveCmd("pub")), storage.ErrPermissionDenied},
		{"admin non-member posts", asAdmin("root", postCmd("pub", "x", "")), storage.ErrPermissionDenied},
		{"member non-author edits archived", as("bob", editCmd("pub", m, "x")), storage.ErrPermissionDenied},
		{"member non-author deletes archived", as("bob", deleteCmd("pub", m)), storage.ErrPermissionDenied},
		{"member posts to archived", as("bob", postCmd("pub", "x", "")), storage.ErrFailedPrecondition},
		{"member reacts in archived", as("bob", reactCmd("pub", m, "wave")), storage.ErrFailedPrecondition},
		{"author edits archived", as("alice", editCmd("pub", m, "x")), storage.ErrFailedPrecondition},
		{"author deletes archived", as("alice", deleteCmd("pub", m)), storage.ErrFailedPrecondition},
		{"admin deletes archived", asAdmin("root", deleteCmd("pub", m)), storage.ErrFailedPrecondition},
		{"member leaves archived", as("bob", leaveCmd("pub")), storage.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.fails(tt.cmd, tt.want)
		})
	}
}

func TestDedup(t *testing.T) {
	h := newChannel(t)
	h.ok(as("alice", createCmd("random", false)))

	first := h.ok(as("alice", postCmd("general", "hello", "cid-1")))
	if first.Duplicate {
		t.Fatalf("first post: Duplicate = true, want false")
	}

	asReply := as("alice", replyCmd("general", first.Message.GetSeq(), "reply?"))
	asReply.GetPostMessage().ClientMsgId = "cid-1"
	retries := []struct {
		name string
		cmd  *clusterv1.Command
	}{
		{"same text", as("alice", postCmd("general", "hello", "cid-1"))},
		{"different text", as("alice", postCmd("general", "something else", "cid-1"))},
		{"as a reply", asReply},
		{"earlier clock", at(baseTime, as("alice", postCmd("general", "again", "cid-1")))},
	}
	for _, tt := range retries {
		t.Run(tt.name, func(t *testing.T) {
			head := h.channel("general").GetHeadSeq()
			res, evs := h.apply(tt.cmd)
			if res.Err != nil {
				t.Fatalf("retry %v: error = %v, want nil", tt.cmd, res.Err)
			}
			if !res.Duplicate || !proto.Equal(res.Message, first.Message) {
				t.Errorf("retry %v: got Duplicate=%v message %v, want Duplicate=true and %v",
					tt.cmd, res.Duplicate, res.Message, first.Message)
			}
			if len(evs) != 0 || h.channel("general").GetHeadSeq() != head {
				t.Errorf("retry %v: appended %v, want no event", tt.cmd, kinds(evs))
			}
		})
	}

	t.Run("new messages", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			cmd  *clusterv1.Command
		}{
			{"other author same id", as("bob", postCmd("general", "hello", "cid-1"))},
			{"same author other id", as("alice", postCmd("general", "hello", "cid-2"))},
			{"same author same id other channel", as("alice", postCmd("random", "hello", "cid-1"))},
			{"no id", as("alice", postCmd("general", "hello", ""))},
			{"no id again", as("alice", postCmd("general", "hello", ""))},
		} {
			res, evs := h.apply(tt.cmd)
			if res.Err != nil || res.Duplicate || len(evs) != 1 {
				t.Errorf("%s: error = %v, Duplicate = %v, events = %d; want nil, false, 1",
					tt.name, res.Err, res.Duplicate, len(evs))
			}
		}
	})

	t.Run("stored once", func(t *testing.T) {
		var posted int
		for _, ev := range h.events("general") {
			if m := ev.GetMessagePosted().GetMessage(); m.GetAuthor() == "alice" && m.GetClientMsgId() == "cid-1" {
				posted++
			}
		}
		if posted != 1 {
			t.Errorf("message_posted events for (alice, cid-1) = %d, want 1", posted)
		}
		h.view(func(r *storage.Reader) error {
			resp, err := r.History(storage.Caller{User: "alice"}, &heraldv1.GetHistoryRequest{ChannelId: "general"})
			if err != nil {
				return err
			}
			var n int
			for _, m := range resp.GetMessages() {
				if m.GetAuthor() == "alice" && m.GetClientMsgId() == "cid-1" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("history messages for (alice, cid-1) = %d, want 1", n)
			}
			return nil
		})
	})

	t.Run("retry after leaving and archive returns first result", func(t *testing.T) {
		h.ok(as("alice", leaveCmd("general")))
		h.ok(as("bob", archiveCmd("general")))
		res, evs := h.apply(as("alice", postCmd("general", "late retry", "cid-1")))
		if res.Err != nil || !res.Duplicate || res.Message.GetSeq() != first.Message.GetSeq() || len(evs) != 0 {
			t.Errorf("retry after leave+archive: error = %v, Duplicate = %v, seq = %d, events = %d; want nil, true, %d, 0",
				res.Err, res.Duplicate, res.Message.GetSeq(), len(evs), first.Message.GetSeq())
		}
		// A new id is refused in the order of DESIGN.md: not a member first.
		h.fails(as("alice", postCmd("general", "new", "cid-9")), storage.ErrPermissionDenied)
	})
}

func TestTimestampsNeverGoBackwards(t *testing.T) {
	h := newHarness(t)
	t0 := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	h.ok(at(sec(0), as("alice", createCmd("general", false))))
	h.ok(at(sec(10), as("bob", joinCmd("general"))))

	steps := []struct {
		cmd  *clusterv1.Command
		want time.Time
	}{
		{at(sec(20), as("alice", postCmd("general", "a", ""))), sec(20)},
		{at(sec(5), as("alice", postCmd("general", "b", ""))), sec(20)},    // earlier: clamped
		{at(sec(20), as("bob", postCmd("general", "c", ""))), sec(20)},     // equal
		{at(sec(-1e6), as("alice", editCmd("general", 3, "a2"))), sec(20)}, // edit event
		{at(sec(21), as("bob", reactCmd("general", 3, "ok"))), sec(21)},
		{at(sec(1), as("carol", joinCmd("general"))), sec(21)},
		{at(sec(2), as("alice", deleteCmd("general", 2))), sec(21)},
		{at(sec(30), as("carol", leaveCmd("general"))), sec(30)},
		{as("bob", postCmd("general", "no clock", "")), sec(30)}, // ts left unset below
		{at(sec(31), as("alice", archiveCmd("general"))), sec(31)},
	}
	for i, s := range steps {
		var res storage.Result
		var evs []*heraldv1.Event
		if s.cmd.GetTs() == nil {
			// Apply directly so that the harness does not fill in a clock.
			h.index++
			rs, es, err := h.db.Apply([]storage.Entry{{Index: h.index, Term: 1, Cmd: s.cmd}})
			if err != nil {
				t.Fatalf("step %d: Apply: %v", i, err)
			}
			res, evs = rs[0], es
		} else {
			res, evs = h.apply(s.cmd)
		}
		if res.Err != nil {
			t.Fatalf("step %d: %v: error = %v", i, s.cmd, res.Err)
		}
		if len(evs) != 1 {
			t.Fatalf("step %d: %v: got %d events, want 1", i, s.cmd, len(evs))
		}
		if got := evs[0].GetTs().AsTime(); !got.Equal(s.want) {
			t.Errorf("step %d: %v: event ts = %v, want %v", i, s.cmd, got, s.want)
		}
		if p := s.cmd.GetPostMessage(); p != nil {
			if got := res.Message.GetTs().AsTime(); !got.Equal(s.want) {
				t.Errorf("step %d: post %q: message ts = %v, want %v", i, p.GetText(), got, s.want)
			}
		}
		if e := s.cmd.GetEditMessage(); e != nil {
			if got := res.Message.GetEditedAt().AsTime(); !got.Equal(s.want) {
				t.Errorf("step %d: edit: edited_at = %v, want %v", i, got, s.want)
			}
		}
	}
	var prev time.Time
	for _, ev := range h.events("general") {
		ts := ev.GetTs().AsTime()
		if ts.Before(prev) {
			t.Errorf("event %d ts %v is before the previous event's %v", ev.GetSeq(), ts, prev)
		}
		prev = ts
	}
}

func TestThreads(t *testing.T) {
	h := newChannel(t)
	parent := h.post("alice", "general", "parent")
	other := h.post("bob", "general", "other parent")
	r1 := h.reply("bob", "general", parent, "first reply")
	h.reply("alice", "general", other, "reply elsewhere")
	r2 := h.reply("alice", "general", parent, "second reply")

	if got := h.message("general", parent, 0).GetReplyCount(); got != 2 {
		t.Errorf("parent reply_count = %d, want 2", got)
	}
	if got := h.message("general", r1, parent); got.GetThreadSeq() != parent {
		t.Errorf("reply %d thread_seq = %d, want %d", r1, got.GetThreadSeq(), parent)
	}
	// The message_posted event of a reply names its thread.
	for _, ev := range h.events("general") {
		if m := ev.GetMessagePosted().GetMessage(); m.GetSeq() == r2 && m.GetThreadSeq() != parent {
			t.Errorf("message_posted of reply %d has thread_seq %d, want %d", r2, m.GetThreadSeq(), parent)
		}
	}

	joinSeq := h.ok(as("carol", joinCmd("general"))).Channel.GetHeadSeq()
	errs := []struct {
		name   string
		cmd    *clusterv1.Command
		want   error
		inText string
	}{
		{"reply to a reply", as("alice", replyCmd("general", r1, "nested")), storage.ErrInvalidArgument, "thread_seq"},
		{"reply to unknown seq", as("alice", replyCmd("general", 9999, "x")), storage.ErrNotFound, "9999"},
		{"reply to a membership event", as("alice", replyCmd("general", joinSeq, "x")), storage.ErrNotFound, fmt.Sprint(joinSeq)},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			e := h.fails(tt.cmd, tt.want)
			if !strings.Contains(e.Msg, tt.inText) {
				t.Errorf("%v: message %q does not mention %q", tt.cmd, e.Msg, tt.inText)
			}
		})
	}

	t.Run("delete a reply decrements reply_count", func(t *testing.T) {
		res, evs := h.apply(as("bob", deleteCmd("general", r1)))
		if res.Err != nil {
			t.Fatalf("delete reply: %v", res.Err)
		}
		if d := evs[0].GetMessageDeleted(); d.GetMessageSeq() != r1 || d.GetThreadSeq() != parent || d.GetUser() != "bob" {
			t.Errorf("message_deleted = %v, want message_seq %d thread_seq %d user bob", d, r1, parent)
		}
		if got := h.message("general", parent, 0).GetReplyCount(); got != 1 {
			t.Errorf("parent reply_count after deleting a reply = %d, want 1", got)
		}
		// A second delete changes nothing, the count included.
		if _, evs := h.apply(as("bob", deleteCmd("general", r1))); len(evs) != 0 {
			t.Errorf("second delete of reply appended %v", kinds(evs))
		}
		if got := h.message("general", parent, 0).GetReplyCount(); got != 1 {
			t.Errorf("parent reply_count after deleting a reply twice = %d, want 1", got)
		}
	})

	t.Run("reply to a deleted parent", func(t *testing.T) {
		h.ok(as("alice", deleteCmd("general", parent)))
		h.fails(as("bob", replyCmd("general", parent, "too late")), storage.ErrNotFound)
		// Deleting the remaining reply of a deleted parent still works.
		h.ok(as("alice", deleteCmd("general", r2)))
		if got := h.message("general", parent, 0).GetReplyCount(); got != 0 {
			t.Errorf("deleted parent reply_count = %d, want 0", got)
		}
	})
}

func TestEdit(t *testing.T) {
	h := newChannel(t)
	m := h.post("alice", "general", "original")
	h.ok(asAdmin("root", joinCmd("general")))

	h.fails(as("bob", editCmd("general", m, "hijack")), storage.ErrPermissionDenied)
	h.fails(asAdmin("root", editCmd("general", m, "admin edit")), storage.ErrPermissionDenied)
	h.fails(as("alice", editCmd("general", 9999, "x")), storage.ErrNotFound)

	// The same text appends no event and leaves edited_at unset.
	res, evs := h.apply(as("alice", editCmd("general", m, "original")))
	if res.Err != nil || len(evs) != 0 || res.Message.GetEditedAt() != nil {
		t.Errorf("edit to the same text: error = %v, events = %v, edited_at = %v; want nil, none, unset",
			res.Err, kinds(evs), res.Message.GetEditedAt())
	}

	res, evs = h.apply(as("alice", editCmd("general", m, "changed")))
	if res.Err != nil {
		t.Fatalf("edit: %v", res.Err)
	}
	ts := timestamppb.New(h.lastTs())
	want := proto.Clone(h.message("general", m, 0)).(*heraldv1.Message)
	if want.GetText() != "changed" || !proto.Equal(want.GetEditedAt(), ts) {
		t.Errorf("stored after edit: text = %q, edited_at = %v; want %q, %v", want.GetText(), want.GetEditedAt(), "changed", ts)
	}
	if !proto.Equal(res.Message, want) {
		t.Errorf("edit result = %v, want the stored message %v", res.Message, want)
	}
	if len(evs) != 1 || kind(evs[0]) != "message_edited" || !proto.Equal(evs[0].GetMessageEdited().GetMessage(), want) {
		t.Errorf("edit events = %v, want one message_edited carrying %v", evs, want)
	}
	if want.GetTs().AsTime().Equal(ts.AsTime()) {
		t.Errorf("edit changed the message's ts to %v; want the post's ts kept", want.GetTs())
	}

	// The author must still be a member to edit.
	h.ok(as("alice", leaveCmd("general")))
	h.fails(as("alice", editCmd("general", m, "after leaving")), storage.ErrPermissionDenied)
	h.ok(as("alice", joinCmd("general")))
	h.ok(as("alice", deleteCmd("general", m)))
	h.fails(as("alice", editCmd("general", m, "resurrect")), storage.ErrNotFound)
}

func TestDelete(t *testing.T) {
	h := newChannel(t)
	res := h.ok(as("alice", postCmd("general", "secret text", "cid-1")))
	m := res.Message.GetSeq()
	h.ok(as("bob", reactCmd("general", m, "eyes")))
	h.ok(as("alice", editCmd("general", m, "secret text v2")))
	h.ok(as("alice", editCmd("general", m, "secret text v3")))
	keep := h.post("bob", "general", "unrelated")
	h.ok(as("bob", editCmd("general", keep, "unrelated v2")))

	h.fails(as("bob", deleteCmd("general", m)), storage.ErrPermissionDenied)
	h.fails(as("alice", deleteCmd("general", 9999)), storage.ErrNotFound)

	before := h.events("general")
	r, evs := h.apply(as("alice", deleteCmd("general", m)))
	if r.Err != nil {
		t.Fatalf("delete: %v", r.Err)
	}
	tomb := h.message("general", m, 0)
	if !tomb.GetDeleted() || tomb.GetText() != "" || len(tomb.GetReactions()) != 0 {
		t.Errorf("tombstone = %v, want deleted, empty text, no reactions", tomb)
	}
	if tomb.GetAuthor() != "alice" || tomb.GetClientMsgId() != "cid-1" || tomb.GetSeq() != m {
		t.Errorf("tombstone = %v, want author, client_msg_id and seq kept", tomb)
	}
	if !proto.Equal(r.Message, tomb) {
		t.Errorf("delete result = %v, want the tombstone %v", r.Message, tomb)
	}
	if len(evs) != 1 || evs[0].GetMessageDeleted().GetMessageSeq() != m || evs[0].GetMessageDeleted().GetUser() != "alice" {
		t.Fatalf("delete events = %v, want one message_deleted of %d by alice", evs, m)
	}

	// The text is gone from every event of the message, and only from those.
	after := h.events("general")
	if len(after) != len(before)+1 {
		t.Fatalf("got %d events after delete, want %d", len(after), len(before)+1)
	}
	for i, ev := range before {
		got := after[i]
		var msg *heraldv1.Message
		switch {
		case ev.GetMessagePosted() != nil:
			msg = ev.GetMessagePosted().GetMessage()
		case ev.GetMessageEdited() != nil:
			msg = ev.GetMessageEdited().GetMessage()
		}
		want := ev
		if msg.GetSeq() == m {
			want = proto.Clone(ev).(*heraldv1.Event)
			switch {
			case want.GetMessagePosted() != nil:
				want.GetMessagePosted().GetMessage().Text = ""
			default:
				want.GetMessageEdited().GetMessage().Text = ""
			}
		}
		if !proto.Equal(got, want) {
			t.Errorf("event %d after delete = %v, want %v", ev.GetSeq(), got, want)
		}
		if msg.GetSeq() == m && strings.Contains(fmt.Sprint(got), "secret") {
			t.Errorf("event %d still carries the deleted text: %v", ev.GetSeq(), got)
		}
	}

	// A second delete appends nothing, by the author or an admin.
	for _, c := range []*clusterv1.Command{as("alice", deleteCmd("general", m)), asAdmin("root", deleteCmd("general", m))} {
		if r, evs := h.apply(c); r.Err != nil || len(evs) != 0 || !r.Message.GetDeleted() {
			t.Errorf("%v again: error = %v, events = %v, message = %v; want nil, none, the tombstone", c, r.Err, kinds(evs), r.Message)
		}
	}

	// The dedup entry stays: a retried post returns the tombstone.
	r, evs = h.apply(as("alice", postCmd("general", "secret text", "cid-1")))
	if r.Err != nil || !r.Duplicate || !proto.Equal(r.Message, tomb) || len(evs) != 0 {
		t.Errorf("retry of deleted post: error = %v, Duplicate = %v, message = %v, events = %d; want nil, true, the tombstone, 0",
			r.Err, r.Duplicate, r.Message, len(evs))
	}

	// Reactions and edits on a tombstone are not found.
	h.fails(as("bob", reactCmd("general", m, "eyes")), storage.ErrNotFound)
	h.fails(as("bob", unreactCmd("general", m, "eyes")), storage.ErrNotFound)

	t.Run("admin deletes another's message", func(t *testing.T) {
		// root is not a member: admins may still delete.
		r := h.ok(asAdmin("root", deleteCmd("general", keep)))
		if !r.Message.GetDeleted() {
			t.Errorf("admin delete: message = %v, want deleted", r.Message)
		}
	})
	t.Run("author who left deletes", func(t *testing.T) {
		m := h.post("bob", "general", "bye")
		h.ok(as("bob", leaveCmd("general")))
		h.ok(as("bob", deleteCmd("general", m)))
	})
}

func TestReactions(t *testing.T) {
	h := newChannel(t)
	h.ok(as("carol", joinCmd("general")))
	m := h.post("alice", "general", "react to me")

	type reaction struct {
		name  string
		users []string
	}
	steps := []struct {
		cmd       *clusterv1.Command
		wantEvent string // "" = none
		want      []reaction
	}{
		{as("alice", reactCmd("general", m, "tada")), "reaction_added",
			[]reaction{{"tada", []string{"alice"}}}},
		{as("bob", reactCmd("general", m, "tada")), "reaction_added",
			[]reaction{{"tada", []string{"alice", "bob"}}}},
		{as("alice", reactCmd("general", m, "tada")), "", // twice
			[]reaction{{"tada", []string{"alice", "bob"}}}},
		{as("carol", reactCmd("general", m, "+1")), "reaction_added",
			[]reaction{{"tada", []string{"alice", "bob"}}, {"+1", []string{"carol"}}}},
		{as("carol", unreactCmd("general", m, "tada")), "", // carol never reacted tada
			[]reaction{{"tada", []string{"alice", "bob"}}, {"+1", []string{"carol"}}}},
		{as("carol", unreactCmd("general", m, "heart")), "", // no such reaction
			[]reaction{{"tada", []string{"alice", "bob"}}, {"+1", []string{"carol"}}}},
		{as("carol", reactCmd("general", m, "tada")), "reaction_added",
			[]reaction{{"tada", []string{"alice", "bob", "carol"}}, {"+1", []string{"carol"}}}},
		{as("alice", unreactCmd("general", m, "tada")), "reaction_removed",
			[]reaction{{"tada", []string{"bob", "carol"}}, {"+1", []string{"carol"}}}},
		{as("carol", unreactCmd("general", m, "+1")), "reaction_removed",
			[]reaction{{"tada", []string{"bob", "carol"}}}},
		{as("alice", reactCmd("general", m, "+1")), "reaction_added",
			[]reaction{{"tada", []string{"bob", "carol"}}, {"+1", []string{"alice"}}}},
	}
	for i, s := range steps {
		res, evs := h.apply(s.cmd)
		if res.Err != nil {
			t.Fatalf("step %d: %v: error = %v", i, s.cmd, res.Err)
		}
		var gotEvent string
		if len(evs) > 0 {
			gotEvent = kind(evs[0])
		}
		if len(evs) > 1 || gotEvent != s.wantEvent {
			t.Errorf("step %d: %v: events %v, want %q", i, s.cmd, kinds(evs), s.wantEvent)
		}
		if len(evs) == 1 {
			ev := evs[0]
			name := ev.GetReactionAdded().GetName() + ev.GetReactionRemoved().GetName()
			user := ev.GetReactionAdded().GetUser() + ev.GetReactionRemoved().GetUser()
			seq := ev.GetReactionAdded().GetMessageSeq() + ev.GetReactionRemoved().GetMessageSeq()
			if name != s.cmd.GetAddReaction().GetName()+s.cmd.GetRemoveReaction().GetName() || user != s.cmd.GetUser() || seq != m {
				t.Errorf("step %d: event %v, want name, user and message_seq %d of the command", i, ev, m)
			}
		}
		var want []*heraldv1.Reaction
		for _, r := range s.want {
			want = append(want, &heraldv1.Reaction{Name: r.name, Count: uint32(len(r.users)), Users: r.users})
		}
		stored := h.message("general", m, 0).GetReactions()
		for _, got := range [][]*heraldv1.Reaction{stored, res.Message.GetReactions()} {
			if !slices.EqualFunc(got, want, func(a, b *heraldv1.Reaction) bool { return proto.Equal(a, b) }) {
				t.Errorf("step %d: %v: reactions = %v, want %v", i, s.cmd, got, want)
			}
		}
	}

	h.fails(as("eve", reactCmd("general", m, "tada")), storage.ErrPermissionDenied)
	h.fails(as("alice", reactCmd("general", 9999, "tada")), storage.ErrNotFound)

	t.Run("limit of distinct names", func(t *testing.T) {
		m := h.post("alice", "general", "popular")
		for i := range storage.MaxReactions {
			h.ok(as("alice", reactCmd("general", m, fmt.Sprintf("r%d", i))))
		}
		e := h.fails(as("bob", reactCmd("general", m, "one-too-many")), storage.ErrResourceExhausted)
		if !strings.Contains(e.Msg, fmt.Sprint(storage.MaxReactions)) {
			t.Errorf("limit message %q does not mention %d", e.Msg, storage.MaxReactions)
		}
		// Joining an existing reaction at the limit is still allowed.
		h.ok(as("bob", reactCmd("general", m, "r0")))
		// So is a new name once one is removed.
		h.ok(as("alice", unreactCmd("general", m, "r1")))
		h.ok(as("bob", reactCmd("general", m, "one-too-many")))
		if got := len(h.message("general", m, 0).GetReactions()); got != storage.MaxReactions {
			t.Errorf("distinct reactions = %d, want %d", got, storage.MaxReactions)
		}
	})
}
