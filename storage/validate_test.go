package storage_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/storage"
)

func TestCommandValidation(t *testing.T) {
	h := newChannel(t)
	m := h.post("alice", "general", "target")

	long := strings.Repeat("a", storage.MaxIDLen+1)
	tests := []struct {
		name  string
		cmd   *clusterv1.Command
		field string // the message must name it
	}{
		// channel ids, on every kind of command that names one
		{"empty channel_id", as("alice", postCmd("", "x", "")), "channel_id"},
		{"upper-case channel_id", as("alice", postCmd("General", "x", "")), "channel_id"},
		{"channel_id with a space", as("alice", joinCmd("gen eral")), "channel_id"},
		{"channel_id with a slash", as("alice", leaveCmd("a/b")), "channel_id"},
		{"channel_id with a colon", as("alice", archiveCmd("a:b")), "channel_id"},
		{"non-ASCII channel_id", as("alice", editCmd("généra", m, "x")), "channel_id"},
		{"65-character channel_id", as("alice", deleteCmd(long, m)), "channel_id"},
		{"bad channel_id on create", as("alice", createCmd("New", false)), "channel_id"},
		{"bad channel_id on react", as("alice", reactCmd("", m, "ok")), "channel_id"},
		{"bad channel_id on unreact", as("alice", unreactCmd("#x", m, "ok")), "channel_id"},
		{"bad channel_id on trim", as("alice", trimCmd("", 1)), "channel_id"},

		// texts
		{"empty text", as("alice", postCmd("general", "", "")), "text"},
		{"40,001 characters", as("alice", postCmd("general", strings.Repeat("a", storage.MaxTextRunes+1), "")), "text"},
		{"40,001 multi-byte characters", as("alice", postCmd("general", strings.Repeat("é", storage.MaxTextRunes+1), "")), "text"},
		{"invalid UTF-8", as("alice", postCmd("general", "ok \xff\xfe", "")), "text"},
		{"truncated UTF-8 sequence", as("alice", postCmd("general", "snow \xe2\x98", "")), "text"},
		{"empty edit", as("alice", editCmd("general", m, "")), "text"},
		{"40,001-character edit", as("alice", editCmd("general", m, strings.Repeat("b", storage.MaxTextRunes+1))), "text"},
		{"invalid UTF-8 edit", as("alice", editCmd("general", m, "\xc0\x80")), "text"},
		{"empty reply", as("alice", replyCmd("general", m, "")), "text"},

		// client_msg_ids
		{"65-character client_msg_id", as("alice", postCmd("general", "x", long)), "client_msg_id"},
		{"client_msg_id with a space", as("alice", postCmd("general", "x", "a b")), "client_msg_id"},
		{"client_msg_id with a slash", as("alice", postCmd("general", "x", "a/b")), "client_msg_id"},
		{"non-ASCII client_msg_id", as("alice", postCmd("general", "x", "é")), "client_msg_id"},
		{"client_msg_id with '@'", as("alice", postCmd("general", "x", "a@b")), "client_msg_id"},

		// reaction names
		{"empty reaction", as("alice", reactCmd("general", m, "")), "name"},
		{"upper-case reaction", as("alice", reactCmd("general", m, "Smile")), "name"},
		{"reaction with a colon", as("alice", reactCmd("general", m, ":smile:")), "name"},
		{"65-character reaction", as("alice", reactCmd("general", m, long)), "name"},
		{"bad reaction on remove", as("alice", unreactCmd("general", m, "no way")), "name"},

		// user ids
		{"empty user", postCmd("general", "x", ""), "user"},
		{"65-character user", as(long, postCmd("general", "x", "")), "user"},
		{"user with a space", as("al ice", joinCmd("general")), "user"},
		{"non-ASCII user", as("ålice", createCmd("fresh", false)), "user"},
		{"user with a slash", asAdmin("ro/ot", deleteCmd("general", m)), "user"},

		// channel labels
		{"81-character name", as("alice", createNamedCmd("fresh", strings.Repeat("n", storage.MaxNameRunes+1), "")), "name"},
		{"name with a newline", as("alice", createNamedCmd("fresh", "a\nb", "")), "name"},
		{"invalid UTF-8 name", as("alice", createNamedCmd("fresh", "\xff", "")), "name"},
		{"251-character topic", as("alice", createNamedCmd("fresh", "", strings.Repeat("t", storage.MaxTopicRunes+1))), "topic"},
		{"topic with a tab", as("alice", createNamedCmd("fresh", "", "a\tb")), "topic"},

		// no operation
		{"no operation", as("alice", &clusterv1.Command{}), "operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := h.fails(tt.cmd, storage.ErrInvalidArgument)
			if !strings.HasPrefix(e.Msg, tt.field) && !strings.Contains(e.Msg, " "+tt.field) {
				t.Errorf("%s: message %q does not name the field %q", tt.name, e.Msg, tt.field)
			}
			if len(e.Msg) > 300 || !utf8.ValidString(e.Msg) {
				t.Errorf("%s: message %q is over 300 bytes or not UTF-8", tt.name, e.Msg)
			}
		})
	}
}

func TestTextLimits(t *testing.T) {
	h := newChannel(t)
	tests := []struct {
		name string
		text string
	}{
		{"one character", "a"},
		{"40,000 ASCII characters", strings.Repeat("a", storage.MaxTextRunes)},
		{"40,000 two-byte characters", strings.Repeat("é", storage.MaxTextRunes)},
		{"40,000 four-byte characters", strings.Repeat("😀", storage.MaxTextRunes)},
		{"NUL and control characters", "a\x00b\tc\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.ok(as("alice", postCmd("general", tt.text, "")))
			if got := h.message("general", res.Message.GetSeq(), 0).GetText(); got != tt.text {
				t.Errorf("stored text of %d bytes, want the posted %d bytes", len(got), len(tt.text))
			}
			edited := strings.Replace(tt.text, "a", "z", 1) + "!"
			if utf8.RuneCountInString(edited) > storage.MaxTextRunes {
				edited = "z"
			}
			h.ok(as("alice", editCmd("general", res.Message.GetSeq(), edited)))
		})
	}
}

func TestValidateFunctions(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) error
		ok    []string
		bad   []string
	}{
		{"ValidateChannelID", storage.ValidateChannelID,
			[]string{"a", "general", "a.b_c-d", "0", strings.Repeat("z", 64)},
			[]string{"", "A", "a b", "a:b", "a@b", "é", strings.Repeat("z", 65)}},
		{"ValidateClientMsgID", storage.ValidateClientMsgID,
			[]string{"", "a", "A-Z.0_9:x", strings.Repeat("Z", 64)},
			[]string{" ", "a@b", "a/b", "é", strings.Repeat("Z", 65)}},
		{"ValidateUserID", storage.ValidateUserID,
			[]string{"a", "Alice", "u:123", "a@example.com", strings.Repeat("u", 64)},
			[]string{"", "a b", "a/b", "é", strings.Repeat("u", 65)}},
		{"ValidateReactionName", storage.ValidateReactionName,
			[]string{"a", "+1", "-1", "thumbs_up", "100", strings.Repeat("r", 64)},
			[]string{"", "A", ":a:", "a.b", strings.Repeat("r", 65)}},
		{"ValidateText", storage.ValidateText,
			[]string{"x", strings.Repeat("é", storage.MaxTextRunes)},
			[]string{"", "\xff", strings.Repeat("x", storage.MaxTextRunes+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range tt.ok {
				if err := tt.check(s); err != nil {
					t.Errorf("%s(%.20q) = %v, want nil", tt.name, s, err)
				}
			}
			for _, s := range tt.bad {
				checkDomainErr(t, tt.name+"("+s+")", tt.check(s), storage.ErrInvalidArgument)
			}
		})
	}

	t.Run("ValidateLimit", func(t *testing.T) {
		for _, tt := range []struct {
			in      uint32
			want    int
			wantErr bool
		}{
			{0, storage.DefaultPageSize, false},
			{1, 1, false},
			{storage.MaxPageSize, storage.MaxPageSize, false},
			{storage.MaxPageSize + 1, 0, true},
			{^uint32(0), 0, true},
		} {
			got, err := storage.ValidateLimit(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("ValidateLimit(%d) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err != nil {
				checkDomainErr(t, "ValidateLimit", err, storage.ErrInvalidArgument)
			}
		}
	})

	t.Run("huge values are cut in messages", func(t *testing.T) {
		err := storage.ValidateChannelID(strings.Repeat("é", 10_000))
		if len(err.Error()) > 300 || !utf8.ValidString(err.Error()) {
			t.Errorf("message for a 20,000-byte id is %d bytes (valid UTF-8: %v), want short and valid",
				len(err.Error()), utf8.ValidString(err.Error()))
		}
	})
}
