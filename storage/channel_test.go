package storage_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

func TestCreateChannel(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		label    string
		topic    string
		private  bool
		wantName string
	}{
		{name: "name defaults to id", id: "general", wantName: "general"},
		{name: "explicit name and topic", id: "eng-1", label: "Engineering ✓", topic: "builds & bugs", wantName: "Engineering ✓"},
		{name: "private", id: "secret.room_2", private: true, wantName: "secret.room_2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := createNamedCmd(tt.id, tt.label, tt.topic)
			c.GetCreateChannel().Private = tt.private
			res, evs := h.apply(as("alice", c))
			if res.Err != nil {
				t.Fatalf("create %q: error = %v, want nil", tt.id, res.Err)
			}
			if len(evs) != 0 {
				t.Errorf("create %q appended events %v, want none", tt.id, kinds(evs))
			}
			ch := res.Channel
			wantTs := h.lastTs()
			checks := []struct {
				field     string
				got, want any
			}{
				{"id", ch.GetId(), tt.id},
				{"name", ch.GetName(), tt.wantName},
				{"topic", ch.GetTopic(), tt.topic},
				{"private", ch.GetPrivate(), tt.private},
				{"archived", ch.GetArchived(), false},
				{"creator", ch.GetCreator(), "alice"},
				{"member_count", ch.GetMemberCount(), uint32(1)},
				{"head_seq", ch.GetHeadSeq(), uint64(0)},
				{"oldest_seq", ch.GetOldestSeq(), uint64(0)},
				{"created_at", ch.GetCreatedAt().AsTime(), wantTs},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("create %q: %s = %v, want %v", tt.id, c.field, c.got, c.want)
				}
			}
			// The stored record matches the result, and the creator is a member.
			h.view(func(r *storage.Reader) error {
				got, member, err := r.Channel(storage.Caller{User: "alice"}, tt.id)
				if err != nil {
					t.Fatalf("Channel(alice, %q) error = %v, want nil", tt.id, err)
				}
				if !member {
					t.Errorf("Channel(alice, %q) member = false, want true (creator)", tt.id)
				}
				if !proto.Equal(got, ch) {
					t.Errorf("Channel(alice, %q) = %v, want the create result %v", tt.id, got, ch)
				}
				return nil
			})
			if evs := h.events(tt.id); len(evs) != 0 {
				t.Errorf("events of new channel %q = %v, want none", tt.id, kinds(evs))
			}
			// The first event of the channel is seq 1.
			_, evs = h.apply(as("bob", joinCmd(tt.id)))
			if tt.private {
				return // bob cannot see it
			}
			if len(evs) != 1 || evs[0].GetSeq() != 1 {
				t.Errorf("first event after create: got %v, want one event with seq 1", evs)
			}
		})
	}
}

func TestCreateChannelDuplicate(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("general", false)))
	h.post("alice", "general", "hi")
	before := h.channel("general")
	for _, tt := range []struct {
		name string
		user string
		priv bool
	}{
		{"same creator", "alice", false},
		{"other user", "bob", false},
		{"other flags", "bob", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := h.fails(as(tt.user, createCmd("general", tt.priv)), storage.ErrAlreadyExists)
			if !strings.Contains(e.Msg, `"general"`) {
				t.Errorf("duplicate create message = %q, want it to name the channel", e.Msg)
			}
			if got := h.channel("general"); !proto.Equal(got, before) {
				t.Errorf("after duplicate create by %s: channel = %v, want unchanged %v", tt.user, got, before)
			}
		})
	}
}

func TestJoinLeave(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("general", false)))

	steps := []struct {
		user       string
		join       bool
		wantEvent  string // "" = no event
		wantCount  uint32
		wantMember bool
	}{
		{"bob", true, "member_joined", 2, true},
		{"bob", true, "", 2, true},     // join twice
		{"carol", false, "", 2, false}, // leave when not a member
		{"carol", true, "member_joined", 3, true},
		{"bob", false, "member_left", 2, false},
		{"bob", false, "", 2, false},              // leave twice
		{"alice", false, "member_left", 1, false}, // the creator may leave
		{"bob", true, "member_joined", 2, true},
	}
	var wantSeq uint64
	for i, s := range steps {
		c := leaveCmd("general")
		verb := "leave"
		if s.join {
			c, verb = joinCmd("general"), "join"
		}
		res, evs := h.apply(as(s.user, c))
		if res.Err != nil {
			t.Fatalf("step %d: %s %s: error = %v, want nil", i, s.user, verb, res.Err)
		}
		if got := res.Channel.GetMemberCount(); got != s.wantCount {
			t.Errorf("step %d: %s %s: result member_count = %d, want %d", i, s.user, verb, got, s.wantCount)
		}
		if s.wantEvent == "" {
			if len(evs) != 0 {
				t.Errorf("step %d: %s %s: got events %v, want none", i, s.user, verb, kinds(evs))
			}
		} else {
			wantSeq++
			if len(evs) != 1 {
				t.Fatalf("step %d: %s %s: got %d events, want 1 %s", i, s.user, verb, len(evs), s.wantEvent)
			}
			ev := evs[0]
			user := ev.GetMemberJoined().GetUser() + ev.GetMemberLeft().GetUser()
			if kind(ev) != s.wantEvent || ev.GetSeq() != wantSeq || user != s.user {
				t.Errorf("step %d: %s %s: got event %s seq %d user %q, want %s seq %d user %q",
					i, s.user, verb, kind(ev), ev.GetSeq(), user, s.wantEvent, wantSeq, s.user)
			}
			if res.Channel.GetHeadSeq() != wantSeq {
				t.Errorf("step %d: result head_seq = %d, want %d", i, res.Channel.GetHeadSeq(), wantSeq)
			}
		}
		h.view(func(r *storage.Reader) error {
			ch, member, err := r.Channel(storage.Caller{User: s.user}, "general")
			if err != nil {
				t.Fatalf("step %d: Channel(%s) error = %v", i, s.user, err)
			}
			if member != s.wantMember || ch.GetMemberCount() != s.wantCount {
				t.Errorf("step %d: after %s %s: member = %v, member_count = %d; want %v, %d",
					i, s.user, verb, member, ch.GetMemberCount(), s.wantMember, s.wantCount)
			}
			return nil
		})
	}
	evs := h.events("general")
	if uint64(len(evs)) != wantSeq {
		t.Errorf("got %d events, want %d", len(evs), wantSeq)
	}
}

func TestArchive(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("general", false)))
	h.ok(as("bob", joinCmd("general")))
	m := h.post("alice", "general", "before the archive")

	// A non-member who is not an admin may not archive.
	h.fails(as("eve", archiveCmd("general")), storage.ErrPermissionDenied)

	res, evs := h.apply(as("bob", archiveCmd("general")))
	if res.Err != nil {
		t.Fatalf("archive by member: error = %v, want nil", res.Err)
	}
	if len(evs) != 1 || kind(evs[0]) != "channel_updated" {
		t.Fatalf("archive: got events %v, want one channel_updated", kinds(evs))
	}
	up := evs[0].GetChannelUpdated().GetChannel()
	if !up.GetArchived() || up.GetHeadSeq() != evs[0].GetSeq() || !res.Channel.GetArchived() {
		t.Errorf("channel_updated carries %v (event seq %d), want archived with head_seq = the event's seq",
			up, evs[0].GetSeq())
	}
	if !proto.Equal(up, h.channel("general")) {
		t.Errorf("channel_updated carries %v, want the stored channel %v", up, h.channel("general"))
	}

	// Archiving again appends nothing.
	if res, evs := h.apply(as("alice", archiveCmd("general"))); res.Err != nil || len(evs) != 0 {
		t.Errorf("second archive: error = %v, events = %v; want nil, none", res.Err, kinds(evs))
	}

	for _, tt := range []struct {
		name string
		user string
		cmd  *clusterv1.Command
	}{
		{"post", "alice", postCmd("general", "after", "")},
		{"post with client_msg_id", "alice", postCmd("general", "after", "c-1")},
		{"reply", "alice", replyCmd("general", m, "after")},
		{"join", "carol", joinCmd("general")},
		{"leave", "bob", leaveCmd("general")},
		{"edit", "alice", editCmd("general", m, "edited")},
		{"delete", "alice", deleteCmd("general", m)},
		{"admin delete", "root", deleteCmd("general", m)},
		{"react", "bob", reactCmd("general", m, "tada")},
		{"unreact", "bob", unreactCmd("general", m, "tada")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := as(tt.user, tt.cmd)
			if tt.user == "root" {
				c.Admin = true
			}
			h.fails(c, storage.ErrFailedPrecondition)
		})
	}
	// Reads still work on an archived channel.
	if got := h.message("general", m, 0).GetText(); got != "before the archive" {
		t.Errorf("message %d of archived channel: text = %q, want %q", m, got, "before the archive")
	}
	// Admins may archive channels they are not members of.
	h.ok(as("alice", createCmd("random", false)))
	if res := h.ok(asAdmin("root", archiveCmd("random"))); !res.Channel.GetArchived() {
		t.Errorf("admin archive: channel = %v, want archived", res.Channel)
	}
}

func TestPrivateChannelIsNotFoundForOutsiders(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("secret", true)))
	m := h.post("alice", "secret", "hush")
	h.reply("alice", "secret", m, "in thread")
	h.ok(as("alice", reactCmd("secret", m, "eyes")))

	unknown := func(id string) string { return `channel "` + id + `" not found` }

	// Every write by an outsider is not found, exactly as for a channel
	// that does not exist.
	writes := []struct {
		name string
		cmd  *clusterv1.Command
	}{
		{"join", joinCmd("secret")},
		{"leave", leaveCmd("secret")},
		{"archive", archiveCmd("secret")},
		{"post", postCmd("secret", "hello", "")},
		{"post with client_msg_id", postCmd("secret", "hello", "c-1")},
		{"reply", replyCmd("secret", m, "hello")},
		{"edit", editCmd("secret", m, "x")},
		{"delete", deleteCmd("secret", m)},
		{"react", reactCmd("secret", m, "eyes")},
		{"unreact", unreactCmd("secret", m, "eyes")},
	}
	for _, tt := range writes {
		t.Run("outsider "+tt.name, func(t *testing.T) {
			e := h.fails(as("eve", proto.Clone(tt.cmd).(*clusterv1.Command)), storage.ErrNotFound)
			if e.Msg != unknown("secret") {
				t.Errorf("outsider %s: message = %q, want %q (same as an unknown channel)", tt.name, e.Msg, unknown("secret"))
			}
		})
	}

	reads := []struct {
		name string
		read func(r *storage.Reader, c storage.Caller) error
	}{
		{"Channel", func(r *storage.Reader, c storage.Caller) error {
			_, _, err := r.Channel(c, "secret")
			return err
		}},
		{"History", func(r *storage.Reader, c storage.Caller) error {
			_, err := r.History(c, &heraldv1.GetHistoryRequest{ChannelId: "secret"})
			return err
		}},
		{"Thread", func(r *storage.Reader, c storage.Caller) error {
			_, err := r.Thread(c, &heraldv1.GetThreadRequest{ChannelId: "secret", ThreadSeq: m})
			return err
		}},
	}
	for _, tt := range reads {
		t.Run("read "+tt.name, func(t *testing.T) {
			for _, c := range []struct {
				caller  storage.Caller
				visible bool
			}{
				{storage.Caller{User: "eve"}, false},
				{storage.Caller{User: "alice"}, true},
				{storage.Caller{User: "root", Admin: true}, true},
			} {
				h.view(func(r *storage.Reader) error {
					err := tt.read(r, c.caller)
					if c.visible {
						if err != nil {
							t.Errorf("%s as %+v: error = %v, want nil", tt.name, c.caller, err)
						}
						return nil
					}
					checkDomainErr(t, tt.name+" as "+c.caller.User, err, storage.ErrNotFound)
					if err.Error() != unknown("secret") {
						t.Errorf("%s as %+v: message = %q, want %q", tt.name, c.caller, err, unknown("secret"))
					}
					return nil
				})
			}
		})
	}

	t.Run("ListChannels", func(t *testing.T) {
		h.view(func(r *storage.Reader) error {
			for _, c := range []struct {
				caller storage.Caller
				want   []string
			}{
				{storage.Caller{User: "eve"}, nil},
				{storage.Caller{User: "alice"}, []string{"secret"}},
				{storage.Caller{User: "root", Admin: true}, []string{"secret"}},
			} {
				chs, _, err := r.ListChannels(c.caller, "", 100, false)
				if err != nil {
					t.Fatalf("ListChannels(%+v) error = %v", c.caller, err)
				}
				if got := channelIDs(chs); !slices.Equal(got, c.want) {
					t.Errorf("ListChannels(%+v) = %v, want %v", c.caller, got, c.want)
				}
			}
			return nil
		})
	})

	t.Run("admin and member writes", func(t *testing.T) {
		// An admin sees the channel: joining it works, and then posting.
		h.ok(asAdmin("root", joinCmd("secret")))
		h.ok(asAdmin("root", postCmd("secret", "admin here", "")))
		h.ok(as("alice", editCmd("secret", m, "hush hush")))
		// After alice leaves, she is an outsider too.
		h.ok(as("alice", leaveCmd("secret")))
		h.fails(as("alice", postCmd("secret", "back?", "")), storage.ErrNotFound)
	})
}

func channelIDs(chs []*heraldv1.Channel) []string {
	var out []string
	for _, ch := range chs {
		out = append(out, ch.GetId())
	}
	return out
}
