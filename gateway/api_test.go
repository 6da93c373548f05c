package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/gateway"
)

// apiCtx returns a context for one test's requests, bounded so that a hung
// request fails the test instead of the run.
func apiCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// apiCreate creates a channel and returns it.
func apiCreate(t *testing.T, n *node, id string) *heraldv1.Channel {
	t.Helper()
	resp, err := n.Channels.CreateChannel(apiCtx(t), &heraldv1.CreateChannelRequest{ChannelId: id})
	if err != nil {
		t.Fatalf("CreateChannel(%q): %v", id, err)
	}
	return resp.GetChannel()
}

// apiPost posts a message and returns it.
func apiPost(t *testing.T, n *node, req *heraldv1.PostMessageRequest) *heraldv1.Message {
	t.Helper()
	resp, err := n.Messages.PostMessage(apiCtx(t), req)
	if err != nil {
		t.Fatalf("PostMessage(%v): %v", req, err)
	}
	return resp.GetMessage()
}

// apiChannel returns the channel's current record.
func apiChannel(t *testing.T, n *node, id string) *heraldv1.Channel {
	t.Helper()
	resp, err := n.Channels.GetChannel(apiCtx(t), &heraldv1.GetChannelRequest{ChannelId: id})
	if err != nil {
		t.Fatalf("GetChannel(%q): %v", id, err)
	}
	return resp.GetChannel()
}

// apiHistory returns every top-level message of a channel, oldest first.
func apiHistory(t *testing.T, n *node, id string) []*heraldv1.Message {
	t.Helper()
	resp, err := n.Messages.GetHistory(apiCtx(t), &heraldv1.GetHistoryRequest{
		ChannelId: id, OldestFirst: true, Limit: 1000})
	if err != nil {
		t.Fatalf("GetHistory(%q): %v", id, err)
	}
	if resp.GetHasMore() {
		t.Fatalf("GetHistory(%q): more than 1000 messages; the helper reads one page", id)
	}
	return resp.GetMessages()
}

// apiEvents reads a channel's events after after through the Subscribe
// stream until it has want of them, and checks that they come in seq order
// without a gap.
func apiEvents(t *testing.T, n *node, id string, after uint64, want int) []*heraldv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := n.Messages.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: id, AfterSeq: proto.Uint64(after)})
	if err != nil {
		t.Fatalf("Subscribe(%q, after %d): %v", id, after, err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("Subscribe(%q): no first message: %v", id, stream.Err())
	}
	if stream.Msg().GetSubscribed() == nil {
		t.Fatalf("Subscribe(%q) first message: got %v, want subscribed", id, stream.Msg())
	}
	var evs []*heraldv1.Event
	for len(evs) < want {
		if !stream.Receive() {
			t.Fatalf("Subscribe(%q) ended after %d events, want %d: %v", id, len(evs), want, stream.Err())
		}
		ev := stream.Msg().GetEvent()
		if ev == nil {
			t.Fatalf("Subscribe(%q): got %v, want an event", id, stream.Msg())
		}
		if got, want := ev.GetSeq(), after+uint64(len(evs))+1; got != want {
			t.Fatalf("Subscribe(%q): event seq: got %d, want %d", id, got, want)
		}
		evs = append(evs, ev)
	}
	return evs
}

// seqsOf returns the seqs of messages.
func seqsOf(ms []*heraldv1.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetSeq()
	}
	return out
}

func TestAPICreateAndGetChannel(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := apiCtx(t)
	before := time.Now().Add(-time.Second)
	resp, err := n.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{
		ChannelId: "eng.backend-2", Name: "Backend ✓", Topic: "builds and deploys"})
	if err != nil {
		t.Fatal(err)
	}
	ch := resp.GetChannel()
	if ch.GetId() != "eng.backend-2" || ch.GetName() != "Backend ✓" || ch.GetTopic() != "builds and deploys" {
		t.Errorf("created channel: got id %q name %q topic %q, want the request's", ch.GetId(), ch.GetName(), ch.GetTopic())
	}
	if got := ch.GetCreator(); got != "anonymous" {
		t.Errorf("creator: got %q, want %q", got, "anonymous")
	}
	if got := ch.GetMemberCount(); got != 1 {
		t.Errorf("member_count: got %d, want 1", got)
	}
	if ch.GetHeadSeq() != 0 || ch.GetOldestSeq() != 0 {
		t.Errorf("head_seq, oldest_seq: got %d, %d, want 0, 0 (creating appends no event)", ch.GetHeadSeq(), ch.GetOldestSeq())
	}
	if ch.GetPrivate() || ch.GetArchived() {
		t.Errorf("private, archived: got %v, %v, want false, false", ch.GetPrivate(), ch.GetArchived())
	}
	if ts := ch.GetCreatedAt().AsTime(); ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("created_at: got %v, want about now", ts)
	}

	got, err := n.Channels.GetChannel(ctx, &heraldv1.GetChannelRequest{ChannelId: "eng.backend-2"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetChannel(), ch) {
		t.Errorf("GetChannel: got %v, want %v", got.GetChannel(), ch)
	}
	if !got.GetIsMember() {
		t.Errorf("is_member: got false, want true for the creator")
	}

	// Without a name the id is the display name.
	plain := apiCreate(t, n, "plain")
	if plain.GetName() != "plain" {
		t.Errorf("name of a channel created without one: got %q, want %q", plain.GetName(), "plain")
	}
}

func TestAPIListChannelsPaging(t *testing.T) {
	n := startNode(t, nodeOptions{})
	var want []string
	parts := map[uint32]int{}
	for i := range 30 {
		id := fmt.Sprintf("room-%02d", i)
		apiCreate(t, n, id)
		want = append(want, id)
		parts[n.Node.PartitionOf(id)]++
	}
	slices.Sort(want)
	if len(parts) < 3 {
		t.Fatalf("the channels spread over %d partitions (%v); the test needs at least 3", len(parts), parts)
	}
	t.Logf("channels per partition: %v", parts)

	list := func(t *testing.T, limit uint32, excludeArchived bool) (ids []string, pages int) {
		t.Helper()
		cursor := ""
		for {
			resp, err := n.Channels.ListChannels(apiCtx(t), &heraldv1.ListChannelsRequest{
				Limit: limit, Cursor: cursor, ExcludeArchived: excludeArchived})
			if err != nil {
				t.Fatalf("ListChannels(limit %d, cursor %q): %v", limit, cursor, err)
			}
			pages++
			chs := resp.GetChannels()
			if limit > 0 && len(chs) > int(limit) {
				t.Fatalf("page %d: got %d channels, want at most %d", pages, len(chs), limit)
			}
			for _, ch := range chs {
				ids = append(ids, ch.GetId())
			}
			if resp.GetNextCursor() == "" {
				return ids, pages
			}
			if len(chs) == 0 {
				t.Fatalf("page %d: got no channels and next_cursor %q, want a last page with an empty cursor", pages, resp.GetNextCursor())
			}
			if got, last := resp.GetNextCursor(), chs[len(chs)-1].GetId(); got != last {
				t.Fatalf("page %d: next_cursor got %q, want the page's last id %q", pages, got, last)
			}
			if pages > 100 {
				t.Fatalf("more than 100 pages for 30 channels")
			}
			cursor = resp.GetNextCursor()
		}
	}

	for _, tc := range []struct {
		limit     uint32
		wantPages int // 0: do not check
	}{{1, 0}, {4, 0}, {7, 5}, {10, 3}, {15, 2}, {29, 2}, {30, 1}, {0, 1}, {1000, 1}} {
		t.Run(fmt.Sprintf("limit=%d", tc.limit), func(t *testing.T) {
			got, pages := list(t, tc.limit, false)
			if !slices.Equal(got, want) {
				t.Fatalf("ids: got %v, want %v", got, want)
			}
			if tc.wantPages != 0 && pages != tc.wantPages {
				t.Errorf("pages: got %d, want %d", pages, tc.wantPages)
			}
		})
	}

	// Archived channels are listed unless exclude_archived.
	var active []string
	for i, id := range want {
		if i%3 == 0 {
			if _, err := n.Channels.ArchiveChannel(apiCtx(t), &heraldv1.ArchiveChannelRequest{ChannelId: id}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		active = append(active, id)
	}
	if got, _ := list(t, 4, true); !slices.Equal(got, active) {
		t.Errorf("exclude_archived ids: got %v, want %v", got, active)
	}
	if got, _ := list(t, 4, false); !slices.Equal(got, want) {
		t.Errorf("ids with archived: got %v, want %v", got, want)
	}
}

func TestAPIPostAndRetry(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := apiCtx(t)
	apiCreate(t, n, "general")
	first, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{
		ChannelId: "general", Text: "hello", ClientMsgId: "web:1.a_B-9"})
	if err != nil {
		t.Fatal(err)
	}
	m := first.GetMessage()
	if first.GetDuplicate() {
		t.Errorf("first post: duplicate got true, want false")
	}
	if m.GetSeq() != 1 || m.GetText() != "hello" || m.GetAuthor() != "anonymous" ||
		m.GetChannelId() != "general" || m.GetClientMsgId() != "web:1.a_B-9" || m.GetTs() == nil {
		t.Errorf("first post: got %v, want seq 1, text hello, author anonymous, the client_msg_id and a ts", m)
	}

	// A retry with the same id returns the first result, even with other text.
	for _, text := range []string{"hello", "something else"} {
		again, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{
			ChannelId: "general", Text: text, ClientMsgId: "web:1.a_B-9"})
		if err != nil {
			t.Fatal(err)
		}
		if !again.GetDuplicate() {
			t.Errorf("retry with text %q: duplicate got false, want true", text)
		}
		if !proto.Equal(again.GetMessage(), m) {
			t.Errorf("retry with text %q: got %v, want the first result %v", text, again.GetMessage(), m)
		}
	}
	if got := apiChannel(t, n, "general").GetHeadSeq(); got != 1 {
		t.Errorf("head_seq after retries: got %d, want 1", got)
	}
	if h := apiHistory(t, n, "general"); len(h) != 1 || !proto.Equal(h[0], m) {
		t.Errorf("history after retries: got %v, want only %v", h, m)
	}

	// Without a client_msg_id there is no dedup; ids are per channel.
	a := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "hello"})
	b := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "hello"})
	if a.GetSeq() != 2 || b.GetSeq() != 3 {
		t.Errorf("posts without client_msg_id: got seqs %d, %d, want 2, 3", a.GetSeq(), b.GetSeq())
	}
	apiCreate(t, n, "random")
	other, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{
		ChannelId: "random", Text: "elsewhere", ClientMsgId: "web:1.a_B-9"})
	if err != nil {
		t.Fatal(err)
	}
	if other.GetDuplicate() || other.GetMessage().GetSeq() != 1 {
		t.Errorf("same client_msg_id in another channel: got duplicate %v seq %d, want false, 1",
			other.GetDuplicate(), other.GetMessage().GetSeq())
	}
	if got := seqsOf(apiHistory(t, n, "general")); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("history seqs: got %v, want [1 2 3]", got)
	}
}

// TestAPIPostConcurrentRetries sends the same client_msg_id from many
// goroutines at once: exactly one post is stored.
func TestAPIPostConcurrentRetries(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "general")
	const senders = 16
	var wg sync.WaitGroup
	resps := make([]*heraldv1.PostMessageResponse, senders)
	errs := make([]error, senders)
	for i := range senders {
		wg.Go(func() {
			resps[i], errs[i] = n.Messages.PostMessage(apiCtx(t), &heraldv1.PostMessageRequest{
				ChannelId: "general", Text: fmt.Sprintf("try %d", i), ClientMsgId: "same"})
		})
	}
	wg.Wait()
	originals := 0
	for i := range senders {
		if errs[i] != nil {
			t.Fatalf("sender %d: %v", i, errs[i])
		}
		if resps[i].GetMessage().GetSeq() != 1 {
			t.Errorf("sender %d: seq got %d, want 1", i, resps[i].GetMessage().GetSeq())
		}
		if !resps[i].GetDuplicate() {
			originals++
		}
	}
	if originals != 1 {
		t.Errorf("responses with duplicate=false: got %d, want 1", originals)
	}
	if h := apiHistory(t, n, "general"); len(h) != 1 {
		t.Errorf("history: got %d messages, want 1", len(h))
	}
}

// TestAPICreateConcurrently creates one channel from many goroutines at
// once: one create succeeds, the others get already_exists.
func TestAPICreateConcurrently(t *testing.T) {
	n := startNode(t, nodeOptions{})
	const callers = 12
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			_, errs[i] = n.Channels.CreateChannel(apiCtx(t), &heraldv1.CreateChannelRequest{
				ChannelId: "contested", Topic: fmt.Sprint("from ", i)})
		})
	}
	wg.Wait()
	created := 0
	for i, err := range errs {
		if err == nil {
			created++
			if got := apiChannel(t, n, "contested").GetTopic(); got != fmt.Sprint("from ", i) {
				t.Errorf("topic: got %q, want %q, the successful create's", got, fmt.Sprint("from ", i))
			}
			continue
		}
		wantCode(t, err, connect.CodeAlreadyExists, `channel "contested" already exists`)
	}
	if created != 1 {
		t.Errorf("successful creates: got %d, want 1", created)
	}
}

func TestAPIHistoryPaging(t *testing.T) {
	n := startNode(t, nodeOptions{})
	apiCreate(t, n, "busy")
	const total = 250
	// Post from a few goroutines; a reaction on some messages takes a seq
	// too, so message ids are not contiguous.
	var mu sync.Mutex
	var posted []uint64
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for i := w; i < total; i += 5 {
				resp, err := n.Messages.PostMessage(apiCtx(t), &heraldv1.PostMessageRequest{
					ChannelId: "busy", Text: fmt.Sprintf("message %d", i)})
				if err != nil {
					t.Errorf("post %d: %v", i, err)
					return
				}
				seq := resp.GetMessage().GetSeq()
				if i%10 == 0 {
					if _, err := n.Messages.AddReaction(apiCtx(t), &heraldv1.AddReactionRequest{
						ChannelId: "busy", Seq: seq, Name: "eyes"}); err != nil {
						t.Errorf("react to %d: %v", seq, err)
						return
					}
				}
				mu.Lock()
				posted = append(posted, seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(posted)
	if distinct := len(slices.Compact(slices.Clone(posted))); distinct != total {
		t.Fatalf("posted seqs: got %d distinct, want %d", distinct, total)
	}
	if got, want := apiChannel(t, n, "busy").GetHeadSeq(), uint64(total+total/10); got != want {
		t.Fatalf("head_seq: got %d, want %d (posts and reactions)", got, want)
	}

	page := func(t *testing.T, req *heraldv1.GetHistoryRequest) *heraldv1.GetHistoryResponse {
		t.Helper()
		resp, err := n.Messages.GetHistory(apiCtx(t), req)
		if err != nil {
			t.Fatalf("GetHistory(%v): %v", req, err)
		}
		return resp
	}

	t.Run("newest first", func(t *testing.T) {
		var got []uint64
		var before uint64
		for pages := 0; ; pages++ {
			if pages > total {
				t.Fatal("too many pages")
			}
			resp := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", BeforeSeq: before, Limit: 7})
			ms := resp.GetMessages()
			if len(ms) > 7 {
				t.Fatalf("page: got %d messages, want at most 7", len(ms))
			}
			got = append(got, seqsOf(ms)...)
			if !resp.GetHasMore() {
				break
			}
			if len(ms) != 7 {
				t.Fatalf("page with has_more: got %d messages, want 7", len(ms))
			}
			before = ms[len(ms)-1].GetSeq()
		}
		want := slices.Clone(posted)
		slices.Reverse(want)
		if !slices.Equal(got, want) {
			t.Fatalf("seqs newest first: got %v, want %v", got, want)
		}
	})
	t.Run("oldest first", func(t *testing.T) {
		var got []uint64
		var after uint64
		for pages := 0; ; pages++ {
			if pages > total {
				t.Fatal("too many pages")
			}
			resp := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", AfterSeq: after, Limit: 7, OldestFirst: true})
			ms := resp.GetMessages()
			got = append(got, seqsOf(ms)...)
			if !resp.GetHasMore() {
				break
			}
			if len(ms) != 7 {
				t.Fatalf("page with has_more: got %d messages, want 7", len(ms))
			}
			after = ms[len(ms)-1].GetSeq()
		}
		if !slices.Equal(got, posted) {
			t.Fatalf("seqs oldest first: got %v, want %v", got, posted)
		}
	})
	t.Run("default page", func(t *testing.T) {
		resp := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy"})
		want := slices.Clone(posted[total-100:])
		slices.Reverse(want)
		if got := seqsOf(resp.GetMessages()); !slices.Equal(got, want) || !resp.GetHasMore() {
			t.Fatalf("default page: got %v has_more %v, want the newest 100 %v and has_more", got, resp.GetHasMore(), want)
		}
		if resp.GetAppliedIndex() == 0 {
			t.Errorf("applied_index: got 0, want the answering replica's index")
		}
		// A stale read of the leader's own state is the same page.
		stale := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", Stale: true})
		if got := seqsOf(stale.GetMessages()); !slices.Equal(got, want) || !stale.GetHasMore() {
			t.Fatalf("stale page: got %v has_more %v, want %v and has_more", got, stale.GetHasMore(), want)
		}
	})
	t.Run("window", func(t *testing.T) {
		// Both bounds are exclusive, in both directions.
		lo, hi := posted[20], posted[40]
		var want []uint64
		for _, s := range posted {
			if s > lo && s < hi {
				want = append(want, s)
			}
		}
		up := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", AfterSeq: lo, BeforeSeq: hi, OldestFirst: true})
		if got := seqsOf(up.GetMessages()); !slices.Equal(got, want) || up.GetHasMore() {
			t.Errorf("window (%d, %d) oldest first: got %v has_more %v, want %v, false", lo, hi, got, up.GetHasMore(), want)
		}
		down := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", AfterSeq: lo, BeforeSeq: hi})
		slices.Reverse(want)
		if got := seqsOf(down.GetMessages()); !slices.Equal(got, want) || down.GetHasMore() {
			t.Errorf("window (%d, %d) newest first: got %v has_more %v, want %v, false", lo, hi, got, down.GetHasMore(), want)
		}
		limited := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", AfterSeq: lo, BeforeSeq: hi, Limit: 3})
		if got := seqsOf(limited.GetMessages()); !slices.Equal(got, want[:3]) || !limited.GetHasMore() {
			t.Errorf("window (%d, %d) limit 3: got %v has_more %v, want %v, true", lo, hi, got, limited.GetHasMore(), want[:3])
		}
		// The smallest window that may hold a message.
		one := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", AfterSeq: posted[5] - 1, BeforeSeq: posted[5] + 1})
		if got := seqsOf(one.GetMessages()); !slices.Equal(got, []uint64{posted[5]}) {
			t.Errorf("window around %d: got %v, want [%d]", posted[5], got, posted[5])
		}
		// Past the end, and before the start.
		if got := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", AfterSeq: 1 << 40, OldestFirst: true}); len(got.GetMessages()) != 0 || got.GetHasMore() {
			t.Errorf("after_seq past the head: got %v, want nothing", seqsOf(got.GetMessages()))
		}
		if got := page(t, &heraldv1.GetHistoryRequest{ChannelId: "busy", BeforeSeq: posted[1], Limit: 1}); !slices.Equal(seqsOf(got.GetMessages()), posted[:1]) || got.GetHasMore() {
			t.Errorf("before_seq at the second message, limit 1: got %v has_more %v, want %v, false", seqsOf(got.GetMessages()), got.GetHasMore(), posted[:1])
		}
	})
}

func TestAPIEditDeleteReact(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := apiCtx(t)
	apiCreate(t, n, "general")
	m := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "helo", ClientMsgId: "c1"})
	other := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "untouched"})

	head := func() uint64 { t.Helper(); return apiChannel(t, n, "general").GetHeadSeq() }
	view := func(seq uint64) *heraldv1.Message {
		t.Helper()
		for _, msg := range apiHistory(t, n, "general") {
			if msg.GetSeq() == seq {
				return msg
			}
		}
		t.Fatalf("message %d not in history", seq)
		return nil
	}

	// Edit.
	ed, err := n.Messages.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: "general", Seq: m.GetSeq(), Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if e := ed.GetMessage(); e.GetText() != "hello" || e.GetEditedAt() == nil || e.GetSeq() != m.GetSeq() ||
		e.GetTs().AsTime() != m.GetTs().AsTime() || e.GetEditedAt().AsTime().Before(m.GetTs().AsTime()) {
		t.Errorf("edited message: got %v, want text hello, edited_at >= ts, seq and ts unchanged", e)
	}
	if got := head(); got != 3 {
		t.Errorf("head_seq after an edit: got %d, want 3", got)
	}
	if v := view(m.GetSeq()); !proto.Equal(v, ed.GetMessage()) {
		t.Errorf("history view after edit: got %v, want %v", v, ed.GetMessage())
	}
	// An edit to the same text changes nothing and appends no event.
	same, err := n.Messages.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: "general", Seq: m.GetSeq(), Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(same.GetMessage(), ed.GetMessage()) || head() != 3 {
		t.Errorf("no-op edit: got %v head %d, want %v head 3", same.GetMessage(), head(), ed.GetMessage())
	}

	// Reactions.
	react := func(add bool, name string) *heraldv1.Message {
		t.Helper()
		if add {
			r, err := n.Messages.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: "general", Seq: m.GetSeq(), Name: name})
			if err != nil {
				t.Fatalf("AddReaction(%q): %v", name, err)
			}
			return r.GetMessage()
		}
		r, err := n.Messages.RemoveReaction(ctx, &heraldv1.RemoveReactionRequest{ChannelId: "general", Seq: m.GetSeq(), Name: name})
		if err != nil {
			t.Fatalf("RemoveReaction(%q): %v", name, err)
		}
		return r.GetMessage()
	}
	reactions := func(msg *heraldv1.Message) string {
		var b strings.Builder
		for _, r := range msg.GetReactions() {
			fmt.Fprintf(&b, "%s:%d:%s ", r.GetName(), r.GetCount(), strings.Join(r.GetUsers(), ","))
		}
		return strings.TrimSpace(b.String())
	}
	for _, step := range []struct {
		add       bool
		name      string
		want      string
		wantHead  uint64
		operation string
	}{
		{true, "thumbsup", "thumbsup:1:anonymous", 4, "add"},
		{true, "thumbsup", "thumbsup:1:anonymous", 4, "add again (no-op)"},
		{true, "+1_skin-tone-2", "thumbsup:1:anonymous +1_skin-tone-2:1:anonymous", 5, "add a second"},
		{false, "thumbsup", "+1_skin-tone-2:1:anonymous", 6, "remove the first"},
		{false, "thumbsup", "+1_skin-tone-2:1:anonymous", 6, "remove it again (no-op)"},
		{false, "never-added", "+1_skin-tone-2:1:anonymous", 6, "remove a missing one (no-op)"},
	} {
		got := react(step.add, step.name)
		if reactions(got) != step.want {
			t.Errorf("%s %q: reactions got %q, want %q", step.operation, step.name, reactions(got), step.want)
		}
		if v := view(m.GetSeq()); reactions(v) != step.want {
			t.Errorf("%s %q: history reactions got %q, want %q", step.operation, step.name, reactions(v), step.want)
		}
		if h := head(); h != step.wantHead {
			t.Errorf("%s %q: head_seq got %d, want %d", step.operation, step.name, h, step.wantHead)
		}
	}

	// Delete leaves a tombstone; deleting again changes nothing.
	del, err := n.Messages.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: "general", Seq: m.GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	if d := del.GetMessage(); !d.GetDeleted() || d.GetText() != "" || len(d.GetReactions()) != 0 || d.GetSeq() != m.GetSeq() {
		t.Errorf("deleted message: got %v, want a tombstone: deleted, no text, no reactions", d)
	}
	if h := head(); h != 7 {
		t.Errorf("head_seq after delete: got %d, want 7", h)
	}
	if v := view(m.GetSeq()); !v.GetDeleted() || v.GetText() != "" {
		t.Errorf("history view after delete: got %v, want a tombstone", v)
	}
	if _, err := n.Messages.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: "general", Seq: m.GetSeq()}); err != nil {
		t.Errorf("delete again: got %v, want success without change", err)
	}
	if h := head(); h != 7 {
		t.Errorf("head_seq after a second delete: got %d, want 7", h)
	}
	if v := view(other.GetSeq()); !proto.Equal(v, other) {
		t.Errorf("the other message: got %v, want it unchanged %v", v, other)
	}
	// The dedup entry outlives the message: a retry still gets the first
	// result, which is now the tombstone.
	retry, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "helo", ClientMsgId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if !retry.GetDuplicate() || retry.GetMessage().GetSeq() != m.GetSeq() || head() != 7 {
		t.Errorf("retry of a deleted post: got %v duplicate %v head %d, want seq %d, duplicate, head 7",
			retry.GetMessage(), retry.GetDuplicate(), head(), m.GetSeq())
	}

	// Every change is an event with its own seq, and the deleted text is
	// redacted from the events that carried it.
	evs := apiEvents(t, n, "general", 0, 7)
	kinds := make([]string, len(evs))
	for i, ev := range evs {
		kinds[i] = fmt.Sprintf("%T", ev.GetBody())
		if ev.GetChannelId() != "general" || ev.GetTs() == nil {
			t.Errorf("event %d: got channel %q ts %v, want general and a ts", ev.GetSeq(), ev.GetChannelId(), ev.GetTs())
		}
		if i > 0 && ev.GetTs().AsTime().Before(evs[i-1].GetTs().AsTime()) {
			t.Errorf("event %d: ts %v before the previous event's %v", ev.GetSeq(), ev.GetTs().AsTime(), evs[i-1].GetTs().AsTime())
		}
	}
	wantKinds := []string{
		"*heraldv1.Event_MessagePosted", "*heraldv1.Event_MessagePosted", "*heraldv1.Event_MessageEdited",
		"*heraldv1.Event_ReactionAdded", "*heraldv1.Event_ReactionAdded", "*heraldv1.Event_ReactionRemoved",
		"*heraldv1.Event_MessageDeleted",
	}
	if !slices.Equal(kinds, wantKinds) {
		t.Fatalf("event kinds: got %v, want %v", kinds, wantKinds)
	}
	if p := evs[0].GetMessagePosted().GetMessage(); p.GetSeq() != m.GetSeq() || p.GetText() != "" {
		t.Errorf("posted event of the deleted message: got %v, want seq %d with its text redacted", p, m.GetSeq())
	}
	if p := evs[1].GetMessagePosted().GetMessage(); p.GetText() != "untouched" {
		t.Errorf("posted event of the other message: got text %q, want %q", p.GetText(), "untouched")
	}
	if e := evs[2].GetMessageEdited().GetMessage(); e.GetSeq() != m.GetSeq() || e.GetText() != "" {
		t.Errorf("edited event of the deleted message: got %v, want its text redacted", e)
	}
	if r := evs[3].GetReactionAdded(); r.GetMessageSeq() != m.GetSeq() || r.GetName() != "thumbsup" || r.GetUser() != "anonymous" {
		t.Errorf("reaction_added: got %v, want thumbsup by anonymous on %d", r, m.GetSeq())
	}
	if r := evs[5].GetReactionRemoved(); r.GetMessageSeq() != m.GetSeq() || r.GetName() != "thumbsup" {
		t.Errorf("reaction_removed: got %v, want thumbsup on %d", r, m.GetSeq())
	}
	if d := evs[6].GetMessageDeleted(); d.GetMessageSeq() != m.GetSeq() || d.GetUser() != "anonymous" || d.GetThreadSeq() != 0 {
		t.Errorf("message_deleted: got %v, want message %d by anonymous", d, m.GetSeq())
	}
}

func TestAPIThreads(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := apiCtx(t)
	apiCreate(t, n, "general")
	parent := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "question?"})
	var replies []uint64
	for i := range 5 {
		r := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: fmt.Sprintf("answer %d", i), ThreadSeq: parent.GetSeq()})
		if r.GetThreadSeq() != parent.GetSeq() {
			t.Fatalf("reply: thread_seq got %d, want %d", r.GetThreadSeq(), parent.GetSeq())
		}
		replies = append(replies, r.GetSeq())
	}
	after := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "next topic"})

	h := apiHistory(t, n, "general")
	if got, want := seqsOf(h), []uint64{parent.GetSeq(), after.GetSeq()}; !slices.Equal(got, want) {
		t.Fatalf("history: got %v, want only the top-level messages %v", got, want)
	}
	if got := h[0].GetReplyCount(); got != 5 {
		t.Errorf("reply_count: got %d, want 5", got)
	}

	th, err := n.Messages.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: "general", ThreadSeq: parent.GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	if th.GetParent().GetSeq() != parent.GetSeq() || th.GetParent().GetReplyCount() != 5 {
		t.Errorf("thread parent: got %v, want seq %d with reply_count 5", th.GetParent(), parent.GetSeq())
	}
	if got := seqsOf(th.GetReplies()); !slices.Equal(got, replies) || th.GetHasMore() {
		t.Errorf("thread replies: got %v has_more %v, want %v oldest first, false", got, th.GetHasMore(), replies)
	}
	for i, r := range th.GetReplies() {
		if r.GetText() != fmt.Sprintf("answer %d", i) {
			t.Errorf("reply %d: text got %q, want %q", i, r.GetText(), fmt.Sprintf("answer %d", i))
		}
	}

	// Paging through replies with after_seq and limit.
	var paged []uint64
	var cursor uint64
	for {
		p, err := n.Messages.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: "general",
			ThreadSeq: parent.GetSeq(), AfterSeq: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, seqsOf(p.GetReplies())...)
		if !p.GetHasMore() {
			break
		}
		cursor = p.GetReplies()[len(p.GetReplies())-1].GetSeq()
	}
	if !slices.Equal(paged, replies) {
		t.Errorf("thread paged by 2: got %v, want %v", paged, replies)
	}

	// Deleting a reply decrements the parent's reply_count.
	if _, err := n.Messages.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: "general", Seq: replies[1]}); err != nil {
		t.Fatal(err)
	}
	th, err = n.Messages.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: "general", ThreadSeq: parent.GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	if got := th.GetParent().GetReplyCount(); got != 4 {
		t.Errorf("reply_count after deleting a reply: got %d, want 4", got)
	}
	for _, r := range th.GetReplies() {
		if r.GetSeq() == replies[1] && (!r.GetDeleted() || r.GetText() != "") {
			t.Errorf("deleted reply in the thread: got %v, want a tombstone", r)
		}
	}
	if got := apiHistory(t, n, "general")[0].GetReplyCount(); got != 4 {
		t.Errorf("history reply_count after deleting a reply: got %d, want 4", got)
	}
	evs := apiEvents(t, n, "general", replies[4], 2) // "next topic", then the delete
	if d := evs[1].GetMessageDeleted(); d.GetMessageSeq() != replies[1] || d.GetThreadSeq() != parent.GetSeq() {
		t.Errorf("message_deleted of a reply: got %v, want message %d in thread %d", d, replies[1], parent.GetSeq())
	}
}

func TestAPIMembershipAndArchive(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := apiCtx(t)
	apiCreate(t, n, "general")
	apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "before"})

	// Joining as a member already appends nothing.
	j, err := n.Channels.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if j.GetChannel().GetMemberCount() != 1 || j.GetChannel().GetHeadSeq() != 1 {
		t.Errorf("join as a member: got member_count %d head_seq %d, want 1, 1", j.GetChannel().GetMemberCount(), j.GetChannel().GetHeadSeq())
	}

	l, err := n.Channels.LeaveChannel(ctx, &heraldv1.LeaveChannelRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if l.GetChannel().GetMemberCount() != 0 || l.GetChannel().GetHeadSeq() != 2 {
		t.Errorf("leave: got member_count %d head_seq %d, want 0, 2", l.GetChannel().GetMemberCount(), l.GetChannel().GetHeadSeq())
	}
	g, err := n.Channels.GetChannel(ctx, &heraldv1.GetChannelRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if g.GetIsMember() {
		t.Errorf("is_member after leave: got true, want false")
	}
	// A non-member may read a public channel but not post to it.
	if got := len(apiHistory(t, n, "general")); got != 1 {
		t.Errorf("history as a non-member: got %d messages, want 1", got)
	}
	_, err = n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "x"})
	wantCode(t, err, connect.CodePermissionDenied, "join")

	j, err = n.Channels.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if j.GetChannel().GetMemberCount() != 1 || j.GetChannel().GetHeadSeq() != 3 {
		t.Errorf("join: got member_count %d head_seq %d, want 1, 3", j.GetChannel().GetMemberCount(), j.GetChannel().GetHeadSeq())
	}
	m := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "after", ClientMsgId: "k1"})

	a, err := n.Channels.ArchiveChannel(ctx, &heraldv1.ArchiveChannelRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.GetChannel().GetArchived() || a.GetChannel().GetHeadSeq() != 5 {
		t.Errorf("archive: got archived %v head_seq %d, want true, 5", a.GetChannel().GetArchived(), a.GetChannel().GetHeadSeq())
	}
	if _, err := n.Channels.ArchiveChannel(ctx, &heraldv1.ArchiveChannelRequest{ChannelId: "general"}); err != nil {
		t.Errorf("archive again: got %v, want success without change", err)
	}
	_, err = n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "late"})
	wantCode(t, err, connect.CodeFailedPrecondition, "archived")
	_, err = n.Messages.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: "general", Seq: m.GetSeq(), Text: "changed"})
	wantCode(t, err, connect.CodeFailedPrecondition, "archived")
	_, err = n.Messages.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: "general", Seq: m.GetSeq(), Name: "x"})
	wantCode(t, err, connect.CodeFailedPrecondition, "archived")
	_, err = n.Messages.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: "general", Seq: m.GetSeq()})
	wantCode(t, err, connect.CodeFailedPrecondition, "archived")
	_, err = n.Channels.LeaveChannel(ctx, &heraldv1.LeaveChannelRequest{ChannelId: "general"})
	wantCode(t, err, connect.CodeFailedPrecondition, "archived")
	// A retry of a post applied before the archive still gets its result.
	retry, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "after", ClientMsgId: "k1"})
	if err != nil || !retry.GetDuplicate() || retry.GetMessage().GetSeq() != m.GetSeq() {
		t.Errorf("retry after archive: got %v, %v, want the first result (seq %d, duplicate)", retry, err, m.GetSeq())
	}
	if got := apiChannel(t, n, "general").GetHeadSeq(); got != 5 {
		t.Errorf("head_seq after refused writes: got %d, want 5", got)
	}

	evs := apiEvents(t, n, "general", 1, 4)
	if u := evs[0].GetMemberLeft(); u.GetUser() != "anonymous" {
		t.Errorf("event 2: got %v, want member_left anonymous", evs[0])
	}
	if u := evs[1].GetMemberJoined(); u.GetUser() != "anonymous" {
		t.Errorf("event 3: got %v, want member_joined anonymous", evs[1])
	}
	if c := evs[3].GetChannelUpdated().GetChannel(); !c.GetArchived() || c.GetHeadSeq() != 5 {
		t.Errorf("event 5: got %v, want channel_updated with archived and head_seq 5", evs[3])
	}
}

// wantCode fails the test unless err is a Connect error with code whose
// message contains substr (case-insensitive).
func wantCode(t *testing.T, err error, code connect.Code, substr string) *connect.Error {
	t.Helper()
	if err == nil {
		t.Errorf("got no error, want %v (%q)", code, substr)
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Errorf("got %v (%T), want a *connect.Error with code %v", err, err, code)
		return nil
	}
	if ce.Code() != code {
		t.Errorf("code: got %v (%q), want %v", ce.Code(), ce.Message(), code)
	}
	if !strings.Contains(strings.ToLower(ce.Message()), strings.ToLower(substr)) {
		t.Errorf("message: got %q, want it to mention %q", ce.Message(), substr)
	}
	return ce
}

// h2cClient returns an HTTP client that speaks cleartext HTTP/2 only.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// postJSON posts a JSON body to a Connect procedure with net/http and
// returns the status and body.
func postJSON(t *testing.T, n *node, procedure, body string) (int, []byte) {
	t.Helper()
	status, _, b := rawPost(t, n, procedure, "application/json", nil, strings.NewReader(body))
	return status, b
}

func TestAPIPlainHTTPJSON(t *testing.T) {
	n := startNode(t, nodeOptions{})
	status, body := postJSON(t, n, "/herald.v1.ChannelService/CreateChannel", `{"channel_id": "json-chan", "topic": "via curl"}`)
	if status != http.StatusOK {
		t.Fatalf("CreateChannel: got status %d body %s, want 200", status, body)
	}
	var created heraldv1.CreateChannelResponse
	if err := protojson.Unmarshal(body, &created); err != nil {
		t.Fatalf("CreateChannel response %s: %v", body, err)
	}
	if created.GetChannel().GetId() != "json-chan" || created.GetChannel().GetTopic() != "via curl" {
		t.Errorf("CreateChannel: got %v, want json-chan with the topic", created.GetChannel())
	}

	// Both field-name forms are accepted.
	for i, req := range []string{
		`{"channelId": "json-chan", "text": "héllo", "clientMsgId": "j1"}`,
		`{"channel_id": "json-chan", "text": "héllo", "client_msg_id": "j1"}`,
	} {
		status, body = postJSON(t, n, "/herald.v1.MessageService/PostMessage", req)
		if status != http.StatusOK {
			t.Fatalf("PostMessage %s: got status %d body %s, want 200", req, status, body)
		}
		var posted heraldv1.PostMessageResponse
		if err := protojson.Unmarshal(body, &posted); err != nil {
			t.Fatalf("PostMessage response %s: %v", body, err)
		}
		if posted.GetMessage().GetSeq() != 1 || posted.GetMessage().GetText() != "héllo" || posted.GetDuplicate() != (i == 1) {
			t.Errorf("PostMessage %s: got %v, want seq 1, text héllo, duplicate %v", req, &posted, i == 1)
		}
		// Output uses protojson's lowerCamel names; uint64 is a string.
		if !bytes.Contains(body, []byte(`"seq":"1"`)) || !bytes.Contains(body, []byte(`"channelId":"json-chan"`)) {
			t.Errorf("PostMessage response body %s: want lowerCamel names and \"seq\":\"1\"", body)
		}
	}

	status, body = postJSON(t, n, "/herald.v1.MessageService/GetHistory", `{"channelId": "json-chan", "oldestFirst": true}`)
	var hist heraldv1.GetHistoryResponse
	if status != http.StatusOK || protojson.Unmarshal(body, &hist) != nil {
		t.Fatalf("GetHistory: got status %d body %s, want 200 and a GetHistoryResponse", status, body)
	}
	if len(hist.GetMessages()) != 1 || hist.GetMessages()[0].GetText() != "héllo" {
		t.Errorf("GetHistory: got %v, want the one message", hist.GetMessages())
	}

	// A Connect error in JSON: status 400 for invalid_argument.
	status, body = postJSON(t, n, "/herald.v1.MessageService/PostMessage", `{"channelId": "json-chan", "text": ""}`)
	if status != http.StatusBadRequest || !bytes.Contains(body, []byte(`"code":"invalid_argument"`)) || !bytes.Contains(body, []byte("text")) {
		t.Errorf("empty text: got status %d body %s, want 400 with code invalid_argument naming text", status, body)
	}
	status, body = postJSON(t, n, "/herald.v1.MessageService/PostMessage", `{"channelId": "nowhere", "text": "x"}`)
	if status != http.StatusNotFound || !bytes.Contains(body, []byte(`"code":"not_found"`)) {
		t.Errorf("unknown channel: got status %d body %s, want 404 with code not_found", status, body)
	}

	// GetHistory has no side effects, so Connect also serves it over GET.
	req, err := http.NewRequestWithContext(apiCtx(t), http.MethodGet, n.URL+
		"/herald.v1.MessageService/GetHistory?encoding=json&message=%7B%22channelId%22%3A%22json-chan%22%7D", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET GetHistory: read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("héllo")) {
		t.Errorf("GET GetHistory: got status %d body %s, want 200 with the message", resp.StatusCode, body)
	}
}

func TestAPIProtocols(t *testing.T) {
	n := startNode(t, nodeOptions{})
	for _, tc := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect-proto-http1", http.DefaultClient, nil},
		{"connect-json-http1", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"connect-proto-h2c", h2cClient(t), nil},
		{"connect-gzip", http.DefaultClient, []connect.ClientOption{connect.WithSendGzip()}},
		{"grpc-h2c", h2cClient(t), []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-json-h2c", h2cClient(t), []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()}},
		{"grpcweb-http1", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpcweb-h2c", h2cClient(t), []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := apiCtx(t)
			chans := heraldv1connect.NewChannelServiceClient(tc.client, n.URL, tc.opts...)
			msgs := heraldv1connect.NewMessageServiceClient(tc.client, n.URL, tc.opts...)
			id := "proto-" + tc.name
			if _, err := chans.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: id}); err != nil {
				t.Fatalf("CreateChannel: %v", err)
			}
			var seqs []uint64
			for i := range 3 {
				resp, err := msgs.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: id,
					Text: fmt.Sprintf("over %s %d ✓", tc.name, i), ClientMsgId: fmt.Sprint(i)})
				if err != nil {
					t.Fatalf("PostMessage: %v", err)
				}
				seqs = append(seqs, resp.GetMessage().GetSeq())
			}
			if !slices.Equal(seqs, []uint64{1, 2, 3}) {
				t.Errorf("seqs: got %v, want [1 2 3]", seqs)
			}
			dup, err := msgs.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: id, Text: "again", ClientMsgId: "0"})
			if err != nil || !dup.GetDuplicate() || dup.GetMessage().GetSeq() != 1 {
				t.Errorf("retry: got %v, %v, want seq 1 duplicate", dup, err)
			}
			h, err := msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: id, OldestFirst: true})
			if err != nil {
				t.Fatalf("GetHistory: %v", err)
			}
			if got := seqsOf(h.GetMessages()); !slices.Equal(got, seqs) || h.GetMessages()[2].GetText() != fmt.Sprintf("over %s 2 ✓", tc.name) {
				t.Errorf("history: got %v, want seqs %v with their text", h.GetMessages(), seqs)
			}
			// Errors keep their code and message in every protocol.
			_, err = msgs.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "no-such-channel", Text: "x"})
			wantCode(t, err, connect.CodeNotFound, `"no-such-channel" not found`)
			_, err = msgs.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: id, Limit: 1001})
			wantCode(t, err, connect.CodeInvalidArgument, "limit")
			// The server stream works in every protocol.
			evs := subscribeWith(t, msgs, id, 0, 3)
			if evs[2].GetMessagePosted().GetMessage().GetClientMsgId() != "2" {
				t.Errorf("third event: got %v, want the third post", evs[2])
			}
		})
	}
}

// subscribeWith reads want events after after from a Subscribe stream of
// client c.
func subscribeWith(t *testing.T, c heraldv1connect.MessageServiceClient, id string, after uint64, want int) []*heraldv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: id, AfterSeq: proto.Uint64(after)})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer stream.Close()
	var evs []*heraldv1.Event
	for len(evs) < want && stream.Receive() {
		if ev := stream.Msg().GetEvent(); ev != nil {
			if got, want := ev.GetSeq(), after+uint64(len(evs))+1; got != want {
				t.Fatalf("Subscribe: event seq got %d, want %d", got, want)
			}
			evs = append(evs, ev)
		}
	}
	if len(evs) < want {
		t.Fatalf("Subscribe: got %d events, want %d: %v", len(evs), want, stream.Err())
	}
	return evs
}

// TestAPIPagesOfLargeMessages reads pages of messages near the text limit:
// a page whose encoding would exceed the server's response limit comes back
// shorter, with has_more, rather than failing, so every message can be
// read at any page size, in every codec, compressed or not.
func TestAPIPagesOfLargeMessages(t *testing.T) {
	// Responses may be 4 × 256 KiB = 1 MiB.
	n := startNode(t, nodeOptions{gateway: gateway.Config{MaxRequestBytes: 256 << 10}})
	ctx := apiCtx(t)
	// Text that does not compress: 40,000 random 4-byte characters (160 kB;
	// four fit in a page).
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for range 40_000 {
		b.WriteRune(rune(0x20000 + rng.IntN(0xA000)))
	}
	bulky := b.String()
	// Text that JSON escapes six-fold: \u0001 for each character (40 kB in
	// protobuf, 240 kB in JSON; three fit in a page).
	escaped := strings.Repeat("\x01", 40_000)

	apiCreate(t, n, "big")
	parent := apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "big", Text: "thread"})
	var roots, replies []uint64
	roots = append(roots, parent.GetSeq())
	// Seven bulky messages, 1.1 MB, are more than one response can hold.
	start := time.Now()
	for i := range 9 {
		if i < 7 {
			roots = append(roots, apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "big", Text: bulky}).GetSeq())
		}
		text := bulky
		if i >= 7 {
			text = escaped
		}
		replies = append(replies, apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "big", Text: text, ThreadSeq: parent.GetSeq()}).GetSeq())
	}
	apiCreate(t, n, "escaped")
	var escapedRoots []uint64
	for range 6 {
		escapedRoots = append(escapedRoots, apiPost(t, n, &heraldv1.PostMessageRequest{ChannelId: "escaped", Text: escaped}).GetSeq())
	}

	t.Logf("posted in %v", time.Since(start).Round(time.Millisecond))

	plain := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	noGzip := connect.WithAcceptCompression("gzip", nil, nil)
	for _, tc := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"proto", plain, []connect.ClientOption{noGzip}},
		{"json", plain, []connect.ClientOption{noGzip, connect.WithProtoJSON()}},
		{"json-gzip", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", h2cClient(t), []connect.ClientOption{noGzip, connect.WithGRPC()}},
		{"grpcweb-json", plain, []connect.ClientOption{noGzip, connect.WithGRPCWeb(), connect.WithProtoJSON()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := heraldv1connect.NewMessageServiceClient(tc.client, n.URL, tc.opts...)
			for _, ch := range []struct {
				id   string
				want []uint64
			}{{"big", roots}, {"escaped", escapedRoots}} {
				for _, oldestFirst := range []bool{false, true} {
					var got []uint64
					var cursor uint64
					for pages := 0; ; pages++ {
						if pages > 20 {
							t.Fatalf("%s: more than 20 pages", ch.id)
						}
						req := &heraldv1.GetHistoryRequest{ChannelId: ch.id, Limit: 1000, OldestFirst: oldestFirst}
						if oldestFirst {
							req.AfterSeq = cursor
						} else {
							req.BeforeSeq = cursor
						}
						resp, err := c.GetHistory(ctx, req)
						if err != nil {
							t.Fatalf("%s page %d (oldest_first %v): %v", ch.id, pages, oldestFirst, err)
						}
						ms := resp.GetMessages()
						if len(ms) == 0 {
							t.Fatalf("%s page %d: got no messages (has_more %v), want progress", ch.id, pages, resp.GetHasMore())
						}
						got = append(got, seqsOf(ms)...)
						if !resp.GetHasMore() {
							break
						}
						cursor = ms[len(ms)-1].GetSeq()
					}
					want := slices.Clone(ch.want)
					if !oldestFirst {
						slices.Reverse(want)
					}
					if !slices.Equal(got, want) {
						t.Errorf("%s (oldest_first %v): got seqs %v, want %v", ch.id, oldestFirst, got, want)
					}
				}
			}
			var got []uint64
			var cursor uint64
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("thread: more than 20 pages")
				}
				th, err := c.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: "big", ThreadSeq: parent.GetSeq(), AfterSeq: cursor, Limit: 1000})
				if err != nil {
					t.Fatalf("thread page %d: %v", pages, err)
				}
				if th.GetParent().GetSeq() != parent.GetSeq() || len(th.GetReplies()) == 0 {
					t.Fatalf("thread page %d: got parent %d and %d replies, want parent %d and progress",
						pages, th.GetParent().GetSeq(), len(th.GetReplies()), parent.GetSeq())
				}
				got = append(got, seqsOf(th.GetReplies())...)
				if !th.GetHasMore() {
					break
				}
				cursor = th.GetReplies()[len(th.GetReplies())-1].GetSeq()
			}
			if !slices.Equal(got, replies) {
				t.Errorf("thread: got seqs %v, want %v", got, replies)
			}
		})
	}
}

// TestSmallResponsesNotCompressed asks for gzip and gets it only for a
// response of 1 KiB or more: gzipping a post's small answer cost more CPU
// than it saved.
func TestSmallResponsesNotCompressed(t *testing.T) {
	n := startNode(t, nodeOptions{})
	gz := http.Header{"Accept-Encoding": {"gzip"}}
	if status, _, body := rawPost(t, n, "/herald.v1.ChannelService/CreateChannel", "application/json", gz,
		strings.NewReader(`{"channel_id": "gz"}`)); status != http.StatusOK {
		t.Fatalf("CreateChannel: status %d, body %q", status, body)
	}
	text := strings.Repeat("y", 200)
	for i := range 20 {
		status, h, body := rawPost(t, n, "/herald.v1.MessageService/PostMessage", "application/json", gz,
			strings.NewReader(fmt.Sprintf(`{"channel_id": "gz", "text": %q, "client_msg_id": "m%d"}`, text, i)))
		if status != http.StatusOK {
			t.Fatalf("PostMessage: status %d, body %q", status, body)
		}
		if enc := h.Get("Content-Encoding"); enc != "" || len(body) >= 1024 {
			t.Fatalf("PostMessage answer of %d bytes: Content-Encoding %q, want none below 1 KiB", len(body), enc)
		}
	}
	status, h, body := rawPost(t, n, "/herald.v1.MessageService/GetHistory", "application/json", gz,
		strings.NewReader(`{"channel_id": "gz", "limit": 20}`))
	if status != http.StatusOK || h.Get("Content-Encoding") != "gzip" {
		t.Fatalf("GetHistory of 20 messages: status %d, Content-Encoding %q (%d bytes), want 200 and gzip",
			status, h.Get("Content-Encoding"), len(body))
	}
}
