package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/gateway"
)

// apiSnapshot is everything a client can read: every channel, and every
// message of every channel, thread replies included. Applied indexes are
// left out: refused commands may still pass through the log.
type apiSnapshot struct {
	channels []*heraldv1.Channel
	messages []*heraldv1.Message
}

func apiState(t *testing.T, n *node) apiSnapshot {
	t.Helper()
	ctx := apiCtx(t)
	list, err := n.Channels.ListChannels(ctx, &heraldv1.ListChannelsRequest{Limit: 1000})
	if err != nil {
		t.Fatalf("ListChannels: %v", err)
	}
	s := apiSnapshot{channels: list.GetChannels()}
	for _, ch := range list.GetChannels() {
		for _, m := range apiHistory(t, n, ch.GetId()) {
			s.messages = append(s.messages, m)
			if m.GetReplyCount() == 0 {
				continue
			}
			th, err := n.Messages.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: ch.GetId(), ThreadSeq: m.GetSeq(), Limit: 1000})
			if err != nil {
				t.Fatalf("GetThread(%q, %d): %v", ch.GetId(), m.GetSeq(), err)
			}
			s.messages = append(s.messages, th.GetReplies()...)
		}
	}
	return s
}

func (s apiSnapshot) equal(o apiSnapshot) bool {
	return slices.EqualFunc(s.channels, o.channels, func(a, b *heraldv1.Channel) bool { return proto.Equal(a, b) }) &&
		slices.EqualFunc(s.messages, o.messages, func(a, b *heraldv1.Message) bool { return proto.Equal(a, b) })
}

// errorsFixture is a node with a channel "general" holding a message, a
// thread with one reply, a reacted message and a deleted message, and an
// archived channel "old".
type errorsFixture struct {
	n                           *node
	msg, parent, reply, deleted uint64
	general, archived           string
	stateBefore                 apiSnapshot
}

func newErrorsFixture(t *testing.T) *errorsFixture {
	t.Helper()
	n := startNode(t, nodeOptions{})
	f := &errorsFixture{n: n, general: "general", archived: "old"}
	apiCreate(t, n, f.general)
	f.msg = apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: f.general, Text: "hello", ClientMsgId: "m1"}).GetSeq()
	f.parent = apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: f.general, Text: "thread"}).GetSeq()
	f.reply = apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: f.general, Text: "reply", ThreadSeq: f.parent}).GetSeq()
	if _, err := n.Messages.AddReaction(apiCtx(t), &heraldv1.AddReactionRequest{ChannelId: f.general, Seq: f.msg, Name: "tada"}); err != nil {
		t.Fatal(err)
	}
	f.deleted = apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: f.general, Text: "oops"}).GetSeq()
	if _, err := n.Messages.DeleteMessage(apiCtx(t), &heraldv1.DeleteMessageRequest{ChannelId: f.general, Seq: f.deleted}); err != nil {
		t.Fatal(err)
	}
	apiCreate(t, n, f.archived)
	if _, err := n.Channels.ArchiveChannel(apiCtx(t), &heraldv1.ArchiveChannelRequest{ChannelId: f.archived}); err != nil {
		t.Fatal(err)
	}
	f.stateBefore = apiState(t, n)
	return f
}

// unchanged checks that the node still answers and that nothing a client
// can read has changed.
func (f *errorsFixture) unchanged(t *testing.T) {
	t.Helper()
	if got := apiState(t, f.n); !got.equal(f.stateBefore) {
		t.Fatalf("state after a refused request:\ngot  %v %v\nwant %v %v", got.channels, got.messages, f.stateBefore.channels, f.stateBefore.messages)
	}
}

func TestErrorsBadInput(t *testing.T) {
	f := newErrorsFixture(t)
	n, g := f.n, f.general
	long := strings.Repeat("a", 65)
	ch, msgs := n.Channels, n.Messages

	type call func(ctx context.Context) error
	post := func(req *heraldv1.PostMessageRequest) call {
		return func(ctx context.Context) error { _, err := msgs.PostMessage(ctx, req); return err }
	}
	cases := []struct {
		name string
		call call
		code connect.Code
		msg  string // the error message must contain this
	}{
		// Unknown channels and messages.
		{"post to unknown channel", post(&heraldv1.PostMessageRequest{ChannelId: "nope", Text: "x"}), connect.CodeNotFound, `channel "nope" not found`},
		{"history of unknown channel", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: "nope"})
			return err
		}, connect.CodeNotFound, `channel "nope" not found`},
		{"get unknown channel", func(ctx context.Context) error {
			_, err := ch.GetChannel(ctx, &heraldv1.GetChannelRequest{ChannelId: "nope"})
			return err
		}, connect.CodeNotFound, `channel "nope" not found`},
		{"join unknown channel", func(ctx context.Context) error {
			_, err := ch.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: "nope"})
			return err
		}, connect.CodeNotFound, `channel "nope" not found`},
		{"leave unknown channel", func(ctx context.Context) error {
			_, err := ch.LeaveChannel(ctx, &heraldv1.LeaveChannelRequest{ChannelId: "nope"})
			return err
		}, connect.CodeNotFound, `channel "nope" not found`},
		{"archive unknown channel", func(ctx context.Context) error {
			_, err := ch.ArchiveChannel(ctx, &heraldv1.ArchiveChannelRequest{ChannelId: "nope"})
			return err
		}, connect.CodeNotFound, `channel "nope" not found`},
		{"thread in unknown channel", func(ctx context.Context) error {
			_, err := msgs.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: "nope", ThreadSeq: 1})
			return err
		}, connect.CodeNotFound, `channel "nope" not found`},
		{"edit unknown message", func(ctx context.Context) error {
			_, err := msgs.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: g, Seq: 999, Text: "x"})
			return err
		}, connect.CodeNotFound, "message 999 not found"},
		{"delete unknown message", func(ctx context.Context) error {
			_, err := msgs.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: g, Seq: 999})
			return err
		}, connect.CodeNotFound, "message 999 not found"},
		{"react to unknown message", func(ctx context.Context) error {
			_, err := msgs.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: g, Seq: 999, Name: "x"})
			return err
		}, connect.CodeNotFound, "message 999 not found"},
		{"edit a deleted message", func(ctx context.Context) error {
			_, err := msgs.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: g, Seq: f.deleted, Text: "back"})
			return err
		}, connect.CodeNotFound, fmt.Sprintf("message %d not found", f.deleted)},
		{"react to a deleted message", func(ctx context.Context) error {
			_, err := msgs.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: g, Seq: f.deleted, Name: "x"})
			return err
		}, connect.CodeNotFound, fmt.Sprintf("message %d not found", f.deleted)},
		{"reply to a deleted message", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ThreadSeq: f.deleted}),
			connect.CodeNotFound, fmt.Sprintf("message %d not found", f.deleted)},
		{"reply to an unknown message", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ThreadSeq: 999}),
			connect.CodeNotFound, "message 999 not found"},
		{"thread of a reply", func(ctx context.Context) error {
			_, err := msgs.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: g, ThreadSeq: f.reply})
			return err
		}, connect.CodeNotFound, fmt.Sprintf("thread %d not found", f.reply)},
		{"reply to a reply", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ThreadSeq: f.reply}),
			connect.CodeInvalidArgument, fmt.Sprintf("thread_seq %d", f.reply)},

		// Text.
		{"empty text", post(&heraldv1.PostMessageRequest{ChannelId: g}), connect.CodeInvalidArgument, "text: must not be empty"},
		{"40,001 characters", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: strings.Repeat("a", 40_001)}),
			connect.CodeInvalidArgument, "text: 40001 characters is over the limit of 40000"},
		{"40,001 multi-byte characters", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: strings.Repeat("é", 40_001)}),
			connect.CodeInvalidArgument, "text: 40001 characters is over the limit of 40000"},
		{"empty edit", func(ctx context.Context) error {
			_, err := msgs.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: g, Seq: f.msg})
			return err
		}, connect.CodeInvalidArgument, "text: must not be empty"},
		{"edit to 40,001 characters", func(ctx context.Context) error {
			_, err := msgs.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: g, Seq: f.msg, Text: strings.Repeat("ü", 40_001)})
			return err
		}, connect.CodeInvalidArgument, "over the limit of 40000"},

		// Channel ids, wherever they appear.
		{"uppercase channel id", post(&heraldv1.PostMessageRequest{ChannelId: "General", Text: "x"}), connect.CodeInvalidArgument, `channel_id "General"`},
		{"65-character channel id", post(&heraldv1.PostMessageRequest{ChannelId: long, Text: "x"}), connect.CodeInvalidArgument, "channel_id"},
		{"channel id with '/'", post(&heraldv1.PostMessageRequest{ChannelId: "a/b", Text: "x"}), connect.CodeInvalidArgument, `channel_id "a/b"`},
		{"empty channel id", post(&heraldv1.PostMessageRequest{Text: "x"}), connect.CodeInvalidArgument, `channel_id ""`},
		{"channel id with a space", post(&heraldv1.PostMessageRequest{ChannelId: "gen eral", Text: "x"}), connect.CodeInvalidArgument, "channel_id"},
		{"non-ASCII channel id", post(&heraldv1.PostMessageRequest{ChannelId: "café", Text: "x"}), connect.CodeInvalidArgument, "channel_id"},
		{"create with a bad id", func(ctx context.Context) error {
			_, err := ch.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "Bad"})
			return err
		}, connect.CodeInvalidArgument, `channel_id "Bad"`},
		{"create with an empty id", func(ctx context.Context) error {
			_, err := ch.CreateChannel(ctx, &heraldv1.CreateChannelRequest{})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"get with a bad id", func(ctx context.Context) error {
			_, err := ch.GetChannel(ctx, &heraldv1.GetChannelRequest{ChannelId: long})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"join with a bad id", func(ctx context.Context) error {
			_, err := ch.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: "x/y"})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"history with a bad id", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: "UP"})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"thread with a bad id", func(ctx context.Context) error {
			_, err := msgs.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: "", ThreadSeq: 1})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"edit with a bad id", func(ctx context.Context) error {
			_, err := msgs.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: "a b", Seq: 1, Text: "x"})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"delete with a bad id", func(ctx context.Context) error {
			_, err := msgs.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: "a:b", Seq: 1})
			return err
		}, connect.CodeInvalidArgument, "channel_id"},
		{"list with a bad cursor", func(ctx context.Context) error {
			_, err := ch.ListChannels(ctx, &heraldv1.ListChannelsRequest{Cursor: "NOT/A/CURSOR"})
			return err
		}, connect.CodeInvalidArgument, "cursor"},

		// Channel labels.
		{"name with a control character", func(ctx context.Context) error {
			_, err := ch.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "new", Name: "a\x07b"})
			return err
		}, connect.CodeInvalidArgument, "name: must not contain control characters"},
		{"81-character name", func(ctx context.Context) error {
			_, err := ch.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "new", Name: strings.Repeat("n", 81)})
			return err
		}, connect.CodeInvalidArgument, "name: over the limit of 80"},
		{"251-character topic", func(ctx context.Context) error {
			_, err := ch.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "new", Topic: strings.Repeat("t", 251)})
			return err
		}, connect.CodeInvalidArgument, "topic: over the limit of 250"},
		{"duplicate create", func(ctx context.Context) error {
			_, err := ch.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: g, Topic: "again"})
			return err
		}, connect.CodeAlreadyExists, `channel "general" already exists`},

		// client_msg_id.
		{"client_msg_id with a space", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ClientMsgId: "a b"}), connect.CodeInvalidArgument, `client_msg_id "a b"`},
		{"65-character client_msg_id", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ClientMsgId: long}), connect.CodeInvalidArgument, "client_msg_id"},
		{"client_msg_id with '/'", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ClientMsgId: "a/b"}), connect.CodeInvalidArgument, "client_msg_id"},
		{"non-ASCII client_msg_id", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ClientMsgId: "ü"}), connect.CodeInvalidArgument, "client_msg_id"},
		{"bad client_msg_id of a retry", post(&heraldv1.PostMessageRequest{ChannelId: g, Text: "x", ClientMsgId: "m1 "}), connect.CodeInvalidArgument, "client_msg_id"},

		// Limits and windows.
		{"history limit 1001", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: g, Limit: 1001})
			return err
		}, connect.CodeInvalidArgument, "limit 1001: must be at most 1000"},
		{"thread limit 1001", func(ctx context.Context) error {
			_, err := msgs.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: g, ThreadSeq: f.parent, Limit: 1001})
			return err
		}, connect.CodeInvalidArgument, "limit 1001"},
		{"list limit 1001", func(ctx context.Context) error {
			_, err := ch.ListChannels(ctx, &heraldv1.ListChannelsRequest{Limit: 1001})
			return err
		}, connect.CodeInvalidArgument, "limit 1001"},
		{"list limit max uint32", func(ctx context.Context) error {
			_, err := ch.ListChannels(ctx, &heraldv1.ListChannelsRequest{Limit: 1<<32 - 1})
			return err
		}, connect.CodeInvalidArgument, "limit"},
		{"before_seq = after_seq", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: g, AfterSeq: 5, BeforeSeq: 5})
			return err
		}, connect.CodeInvalidArgument, "before_seq 5 and after_seq 5"},
		{"before_seq = after_seq+1", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: g, AfterSeq: 5, BeforeSeq: 6, OldestFirst: true})
			return err
		}, connect.CodeInvalidArgument, "before_seq 6 and after_seq 5"},
		{"before_seq < after_seq", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: g, AfterSeq: 9, BeforeSeq: 2})
			return err
		}, connect.CodeInvalidArgument, "before_seq 2 and after_seq 9"},
		{"before_seq 1", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: g, BeforeSeq: 1})
			return err
		}, connect.CodeInvalidArgument, "before_seq 1"},
		{"after_seq max uint64 with before_seq", func(ctx context.Context) error {
			_, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: g, AfterSeq: 1<<64 - 1, BeforeSeq: 3})
			return err
		}, connect.CodeInvalidArgument, "before_seq"},

		// Seqs and reaction names.
		{"edit seq 0", func(ctx context.Context) error {
			_, err := msgs.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: g, Text: "x"})
			return err
		}, connect.CodeInvalidArgument, "seq: must be a message's seq"},
		{"delete seq 0", func(ctx context.Context) error {
			_, err := msgs.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: g})
			return err
		}, connect.CodeInvalidArgument, "seq: must be a message's seq"},
		{"add reaction seq 0", func(ctx context.Context) error {
			_, err := msgs.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: g, Name: "x"})
			return err
		}, connect.CodeInvalidArgument, "seq: must be a message's seq"},
		{"remove reaction seq 0", func(ctx context.Context) error {
			_, err := msgs.RemoveReaction(ctx, &heraldv1.RemoveReactionRequest{ChannelId: g, Name: "tada"})
			return err
		}, connect.CodeInvalidArgument, "seq: must be a message's seq"},
		{"thread_seq 0", func(ctx context.Context) error {
			_, err := msgs.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: g})
			return err
		}, connect.CodeInvalidArgument, "thread_seq: must be a message's seq"},
	}
	for _, name := range []string{"", "ThumbsUp", ":thumbsup:", "a b", "ok.ok", "é", long} {
		cases = append(cases, struct {
			name string
			call call
			code connect.Code
			msg  string
		}{fmt.Sprintf("reaction name %q", name), func(ctx context.Context) error {
			_, err := msgs.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: g, Seq: f.msg, Name: name})
			return err
		}, connect.CodeInvalidArgument, "name"}, struct {
			name string
			call call
			code connect.Code
			msg  string
		}{fmt.Sprintf("remove reaction name %q", name), func(ctx context.Context) error {
			_, err := msgs.RemoveReaction(ctx, &heraldv1.RemoveReactionRequest{ChannelId: g, Seq: f.msg, Name: name})
			return err
		}, connect.CodeInvalidArgument, "name"})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(apiCtx(t))
			wantCode(t, err, tc.code, tc.msg)
			f.unchanged(t)
		})
	}
}

// connectErrorBody is the JSON body of a Connect unary error.
type connectErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// rawPost sends body to a procedure with net/http and returns the status,
// the response headers and the body.
func rawPost(t *testing.T, n *node, procedure, contentType string, header http.Header, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	resp, b := post(t, http.DefaultClient, n, procedure, contentType, header, body)
	return resp.StatusCode, resp.Header, b
}

// post sends body to procedure with client and returns the response, its
// body read in full (and so its trailers).
func post(t *testing.T, client *http.Client, n *node, procedure, contentType string, header http.Header, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(apiCtx(t), http.MethodPost, n.URL+procedure, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read the body: %v", procedure, err)
	}
	return resp, b
}

// wantConnectErrorBody checks that a raw response is a Connect error in
// JSON form with code and a message containing substr.
func wantConnectErrorBody(t *testing.T, status int, body []byte, code connect.Code, substr string) {
	t.Helper()
	var e connectErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("status %d body %q: not a Connect error body: %v", status, body, err)
	}
	if e.Code != code.String() {
		t.Errorf("code: got %q (status %d, message %q), want %q", e.Code, status, e.Message, code.String())
	}
	if !strings.Contains(strings.ToLower(e.Message), strings.ToLower(substr)) {
		t.Errorf("message: got %q, want it to mention %q", e.Message, substr)
	}
	if status < 400 {
		t.Errorf("status: got %d, want an HTTP error status", status)
	}
}

// protoPost encodes a PostMessageRequest by hand so that its text may hold
// bytes that are not UTF-8, which proto.Marshal refuses to send.
func protoPost(channel string, text []byte) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, channel)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, text)
	return b
}

func TestErrorsBadBodies(t *testing.T) {
	f := newErrorsFixture(t)
	const post = "/herald.v1.MessageService/PostMessage"
	jsonCT, protoCT := "application/json", "application/proto"

	cases := []struct {
		name        string
		procedure   string
		contentType string
		header      http.Header
		body        func() io.Reader
		code        connect.Code
		msg         string
	}{
		{"invalid UTF-8 text in protobuf", post, protoCT, nil,
			func() io.Reader { return bytes.NewReader(protoPost(f.general, []byte("a\xff\xfeb"))) },
			connect.CodeInvalidArgument, "utf-8"},
		{"invalid UTF-8 text in a protobuf edit", "/herald.v1.MessageService/EditMessage", protoCT, nil,
			func() io.Reader {
				var b []byte
				b = protowire.AppendTag(b, 1, protowire.BytesType)
				b = protowire.AppendString(b, f.general)
				b = protowire.AppendTag(b, 2, protowire.VarintType)
				b = protowire.AppendVarint(b, f.msg)
				b = protowire.AppendTag(b, 3, protowire.BytesType)
				b = protowire.AppendBytes(b, []byte{0xc3, 0x28})
				return bytes.NewReader(b)
			},
			connect.CodeInvalidArgument, "utf-8"},
		{"invalid UTF-8 text in JSON", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader("{\"channelId\":\"general\",\"text\":\"a\xffb\"}") },
			connect.CodeInvalidArgument, "utf-8"},
		{"truncated protobuf", post, protoCT, nil,
			func() io.Reader { return bytes.NewReader(protoPost(f.general, []byte("hello"))[:10]) },
			connect.CodeInvalidArgument, "unmarshal"},
		{"truncated JSON", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader(`{"channelId": "general", "text": "hi"`) },
			connect.CodeInvalidArgument, "unmarshal"},
		{"JSON array", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader(`[1, 2]`) },
			connect.CodeInvalidArgument, "unmarshal"},
		{"JSON of the wrong type", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader(`{"channelId": "general", "text": 5}`) },
			connect.CodeInvalidArgument, "text"},
		{"negative seq in JSON", "/herald.v1.MessageService/EditMessage", jsonCT, nil,
			func() io.Reader { return strings.NewReader(`{"channelId": "general", "seq": -1, "text": "x"}`) },
			connect.CodeInvalidArgument, "seq"},
		{"not JSON at all", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader("channel=general&text=hi") },
			connect.CodeInvalidArgument, "unmarshal"},
		{"empty JSON body", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader("") },
			connect.CodeInvalidArgument, ""},
		// Connect, like protobuf, ignores unknown fields (so that old servers
		// accept new clients); a misspelled field is therefore missing, and
		// the error names the field the server did not get.
		{"misspelled JSON field", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader(`{"channelId": "general", "txt": "hi"}`) },
			connect.CodeInvalidArgument, "text: must not be empty"},
		{"unknown JSON field only", post, jsonCT, nil,
			func() io.Reader { return strings.NewReader(`{"channel": "general", "text": "hi"}`) },
			connect.CodeInvalidArgument, "channel_id"},
		{"over 1 MiB of JSON", post, jsonCT, nil,
			func() io.Reader {
				return strings.NewReader(`{"channelId": "general", "text": "` + strings.Repeat("a", 1<<20) + `"}`)
			},
			connect.CodeResourceExhausted, "larger than configured max"},
		{"over 1 MiB of protobuf, chunked", post, protoCT, nil,
			func() io.Reader {
				// io.MultiReader hides the length: the request is chunked.
				return io.MultiReader(bytes.NewReader(protoPost(f.general, bytes.Repeat([]byte("b"), 3<<20))))
			},
			connect.CodeResourceExhausted, "larger than configured max"},
		// About 900 MiB inflated from under 1 MiB sent: the server must stop
		// inflating at the limit, not inflate it all to measure it.
		{"gzip bomb", post, jsonCT, http.Header{"Content-Encoding": {"gzip"}},
			func() io.Reader { return bytes.NewReader(gzipBomb(t, 900)) },
			connect.CodeResourceExhausted, "larger than configured max"},
		{"corrupt gzip", post, jsonCT, http.Header{"Content-Encoding": {"gzip"}},
			func() io.Reader { return strings.NewReader("this is not gzip") },
			connect.CodeInvalidArgument, ""},
		{"unsupported compression", post, jsonCT, http.Header{"Content-Encoding": {"br"}},
			func() io.Reader { return strings.NewReader(`{"channelId":"general","text":"x"}`) },
			connect.CodeUnimplemented, "br"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body()
			start := time.Now()
			status, _, resp := rawPost(t, f.n, tc.procedure, tc.contentType, tc.header, body)
			took := time.Since(start)
			t.Logf("answered in %v", took.Round(time.Millisecond))
			// Generous: a refusal costs the server next to nothing.
			if took > 5*time.Second {
				t.Errorf("answer took %v, want well under 5s", took.Round(time.Millisecond))
			}
			wantConnectErrorBody(t, status, resp, tc.code, tc.msg)
			// A refusal must not cost more than reading the limit: a
			// server that reports a size far past it read all of it.
			var e connectErrorBody
			_ = json.Unmarshal(resp, &e) // checked by wantConnectErrorBody
			var size int
			if _, err := fmt.Sscanf(e.Message, "message size %d", &size); err == nil && size > 2<<20 {
				t.Errorf("the server read %d bytes of a request to refuse it, want at most about the 1 MiB limit", size)
			}
			f.unchanged(t)
		})
	}

	t.Run("unknown JSON field with valid fields is ignored", func(t *testing.T) {
		status, _, body := rawPost(t, f.n, post, jsonCT, nil,
			strings.NewReader(`{"channelId": "`+f.archived+`", "text": "hi", "futureField": {"x": 1}}`))
		// The channel is archived, so the post is refused after decoding:
		// the unknown field did not stop it from being understood.
		wantConnectErrorBody(t, status, body, connect.CodeFailedPrecondition, "archived")
		f.unchanged(t)
	})
	t.Run("unknown content type", func(t *testing.T) {
		status, _, _ := rawPost(t, f.n, post, "text/plain", nil, strings.NewReader("hi"))
		if status != http.StatusUnsupportedMediaType {
			t.Errorf("status: got %d, want 415", status)
		}
		f.unchanged(t)
	})
	t.Run("unknown procedure", func(t *testing.T) {
		status, _, _ := rawPost(t, f.n, "/herald.v1.MessageService/Nope", jsonCT, nil, strings.NewReader("{}"))
		if status != http.StatusNotFound {
			t.Errorf("status: got %d, want 404", status)
		}
	})
}

// gzipBomb returns a gzip body of under 1 MiB that inflates to a
// PostMessage JSON body of about mib MiB: one gzip member holding the start
// of the body, then the same small member of 1 MiB of 'a's repeated (gzip
// readers join concatenated members).
func gzipBomb(t *testing.T, mib int) []byte {
	t.Helper()
	member := func(parts ...[]byte) []byte {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if _, err := zw.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	out := member([]byte(`{"channelId": "general", "text": "`))
	as := member(bytes.Repeat([]byte("a"), 1<<20))
	for range mib {
		out = append(out, as...)
	}
	return append(out, member([]byte(`"}`))...)
}

// TestErrorsOversizeEveryProtocol checks that an oversize request is
// resource_exhausted whatever the protocol.
func TestErrorsOversizeEveryProtocol(t *testing.T) {
	f := newErrorsFixture(t)
	big := &heraldv1.PostMessageRequest{ChannelId: f.general, Text: strings.Repeat("z", 1<<20+1)}
	for _, tc := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", http.DefaultClient, nil},
		{"connect-gzip", http.DefaultClient, []connect.ClientOption{connect.WithSendGzip()}},
		{"grpc", h2cClient(t), []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-gzip", h2cClient(t), []connect.ClientOption{connect.WithGRPC(), connect.WithSendGzip()}},
		{"grpcweb", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := heraldv1connect.NewMessageServiceClient(tc.client, f.n.URL, tc.opts...)
			_, err := c.PostMessage(apiCtx(t), big)
			wantCode(t, err, connect.CodeResourceExhausted, "larger than configured max")
			f.unchanged(t)
		})
	}
}

// TestErrorsEndlessBody sends a request body that never ends: the server
// must answer resource_exhausted once it has read past the limit, not read
// for ever.
func TestErrorsEndlessBody(t *testing.T) {
	f := newErrorsFixture(t)
	const post = "/herald.v1.MessageService/PostMessage"
	for _, tc := range []struct {
		name        string
		client      *http.Client
		contentType string
		gzip        bool
		prefix      []byte // sent before the endless 'a's
	}{
		{"connect", http.DefaultClient, "application/json", false, nil},
		{"connect-gzip", http.DefaultClient, "application/json", true, nil},
		{"connect-h2c", h2cClient(t), "application/proto", false, nil},
		// A gRPC envelope that announces a 4 GiB message.
		{"grpc", h2cClient(t), "application/grpc", false, []byte{0, 0xff, 0xff, 0xff, 0xff}},
		{"grpc-web", http.DefaultClient, "application/grpc-web+proto", false, []byte{0, 0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			body := io.MultiReader(bytes.NewReader(tc.prefix), endless{ctx})
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.n.URL+post, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.contentType)
			if tc.gzip {
				body = gzipReader(body)
				req.Header.Set("Content-Encoding", "gzip")
			}
			req.Body = io.NopCloser(body)
			start := time.Now()
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatalf("got %v after %v, want a resource_exhausted answer", err, time.Since(start).Round(time.Millisecond))
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read the answer: %v", err)
			}
			t.Logf("answered in %v", time.Since(start).Round(time.Millisecond))
			if tc.prefix == nil {
				wantConnectErrorBody(t, resp.StatusCode, b, connect.CodeResourceExhausted, "")
				return
			}
			// gRPC carries the status in trailers, or in headers when
			// there is no body; gRPC-Web in a trailer frame in the body.
			status := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
			if status == "" && bytes.Contains(b, []byte("grpc-status:")) {
				status = strings.TrimSpace(strings.SplitN(strings.SplitN(string(b), "grpc-status:", 2)[1], "\r\n", 2)[0])
			}
			if want := fmt.Sprint(int(connect.CodeResourceExhausted)); status != want {
				t.Errorf("grpc-status: got %q (headers %v, trailers %v, body %q), want %s", status, resp.Header, resp.Trailer, b, want)
			}
		})
	}
	f.unchanged(t)
}

// endless is a body of 'a's that ends only with its context.
type endless struct{ ctx context.Context }

func (e endless) Read(p []byte) (int, error) {
	if err := e.ctx.Err(); err != nil {
		return 0, err
	}
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// gzipReader gzips r on the fly, in stored blocks, so that the compressed
// stream is as long as r.
func gzipReader(r io.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		zw, err := gzip.NewWriterLevel(pw, gzip.NoCompression)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		_, err = io.Copy(zw, r)
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func TestErrorsTextLimits(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "general")
	for _, tc := range []struct {
		name string
		text string
	}{
		{"40,000 ASCII characters", strings.Repeat("a", 40_000)},
		{"40,000 two-byte characters", strings.Repeat("é", 40_000)},
		{"40,000 four-byte characters", strings.Repeat("😀", 40_000)},
		{"one character", "x"},
		{"NUL and control characters", "a\x00b\tc\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: tc.text})
			h, err := n.Messages.GetHistory(apiCtx(t), &heraldv1.GetHistoryRequest{ChannelId: "general", Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(h.GetMessages()) != 1 || h.GetMessages()[0].GetSeq() != m.GetSeq() || h.GetMessages()[0].GetText() != tc.text {
				t.Fatalf("newest message: got %d messages (seq %d, %d bytes), want seq %d with the %d-byte text",
					len(h.GetMessages()), h.GetMessages()[0].GetSeq(), len(h.GetMessages()[0].GetText()), m.GetSeq(), len(tc.text))
			}
			// One character more is refused for an edit too.
			_, err = n.Messages.EditMessage(apiCtx(t), &heraldv1.EditMessageRequest{ChannelId: "general", Seq: m.GetSeq(), Text: tc.text + "!"})
			if utf8.RuneCountInString(tc.text) == 40_000 {
				wantCode(t, err, connect.CodeInvalidArgument, "over the limit of 40000")
			} else if err != nil {
				t.Errorf("edit of a short message: %v", err)
			}
		})
	}
}

// TestErrorsOutcomeHeader sends posts with deadlines so short that some
// expire inside the cluster, and checks that Herald-Outcome tells the
// truth: a retry with the same client_msg_id finds no earlier post after
// not-applied, finds it after a success, and may find either after
// indeterminate. (connectError's table is tested in errmap_internal_test.)
func TestErrorsOutcomeHeader(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "general")
	seen := map[string]int{}
	for i := 0; i < 100 && (seen[gateway.OutcomeIndeterminate] < 5 || seen["ok"] < 5); i++ {
		id := fmt.Sprintf("late-%d", i)
		body := fmt.Sprintf(`{"channelId": "general", "text": "late", "clientMsgId": %q}`, id)
		timeout := fmt.Sprint(1 + i%4)
		status, header, resp := rawPost(t, n, "/herald.v1.MessageService/PostMessage", "application/json",
			http.Header{"Connect-Timeout-Ms": {timeout}}, strings.NewReader(body))
		outcome := header.Get(gateway.OutcomeHeader)
		var e connectErrorBody
		switch {
		case status == http.StatusOK:
			outcome = "ok"
		case json.Unmarshal(resp, &e) != nil:
			t.Fatalf("status %d body %q: not a Connect error", status, resp)
		case outcome == "" && e.Code == connect.CodeDeadlineExceeded.String() && e.Message == "context deadline exceeded":
			outcome = "expired before the handler" // Connect refuses it unread
		case outcome == gateway.OutcomeIndeterminate:
			if e.Code != connect.CodeDeadlineExceeded.String() && e.Code != connect.CodeUnknown.String() {
				t.Errorf("indeterminate answer: code got %s, want deadline_exceeded or unknown", e.Code)
			}
			if !strings.Contains(e.Message, "client_msg_id") {
				t.Errorf("indeterminate answer %q: want it to say to retry with the same client_msg_id", e.Message)
			}
		case outcome == gateway.OutcomeNotApplied:
			if e.Code != connect.CodeUnavailable.String() {
				t.Errorf("not-applied answer: code got %s, want unavailable", e.Code)
			}
		case outcome == "":
			t.Fatalf("post with a %sms deadline: got %s %q without %s, want it set on a failed write",
				timeout, e.Code, e.Message, gateway.OutcomeHeader)
		}
		seen[outcome]++
		retry, err := n.Messages.PostMessage(apiCtx(t), &heraldv1.PostMessageRequest{ChannelId: "general", Text: "late", ClientMsgId: id})
		if err != nil {
			t.Fatalf("retry of %s: %v", id, err)
		}
		switch outcome {
		case "ok":
			if !retry.GetDuplicate() {
				t.Errorf("retry of %s after success: duplicate got false, want true", id)
			}
		case gateway.OutcomeNotApplied, "expired before the handler":
			if retry.GetDuplicate() {
				t.Errorf("retry of %s after %q: duplicate got true, want false (the first was not applied)", id, outcome)
			}
		}
	}
	t.Logf("outcomes: %v", seen)
	// Each message is stored once, whatever the outcomes.
	ids := map[string]bool{}
	for _, m := range apiHistory(t, n, "general") {
		if ids[m.GetClientMsgId()] {
			t.Errorf("history: client_msg_id %q stored twice", m.GetClientMsgId())
		}
		ids[m.GetClientMsgId()] = true
	}
}
