package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/gateway"
)

// h2cMessages is a MessageService client speaking HTTP/2 in cleartext,
// which a bidirectional stream needs.
func h2cMessages(n *node) heraldv1connect.MessageServiceClient {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return heraldv1connect.NewMessageServiceClient(&http.Client{Transport: tr}, n.URL)
}

// postStream sends reqs on one PostMessages stream without waiting, then
// closes its side and returns every answer, keyed by client_msg_id (the
// answers to requests without one under "").
func postStream(t *testing.T, c heraldv1connect.MessageServiceClient, reqs []*heraldv1.PostMessageRequest) map[string][]*heraldv1.PostMessagesResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := c.PostMessages(ctx)
	if err != nil {
		t.Fatalf("PostMessages: %v", err)
	}
	sent := make(chan error, 1)
	go func() {
		for _, r := range reqs {
			if err := stream.Send(r); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseRequest()
	}()
	got := map[string][]*heraldv1.PostMessagesResponse{}
	for {
		resp, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("PostMessages: receive after %d answers: %v", len(got), err)
		}
		got[resp.GetClientMsgId()] = append(got[resp.GetClientMsgId()], resp)
	}
	if err := <-sent; err != nil {
		t.Fatalf("PostMessages: send: %v", err)
	}
	return got
}

// TestPostMessagesStream pipelines 300 posts on one stream, with a post
// that lacks a client_msg_id, one with no text and a repeat among them:
// each post gets one answer carrying its client_msg_id, the good ones in
// the order sent by seq, the bad ones an invalid_argument saying what to
// fix (and the stream goes on), the repeat the first result.
func TestPostMessagesStream(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	const ch = "pipelined"
	apiCreate(t, n, ch)
	const posts = 300
	var reqs []*heraldv1.PostMessageRequest
	for k := range posts {
		reqs = append(reqs, &heraldv1.PostMessageRequest{ChannelId: ch, Text: fmt.Sprint("hello ", k), ClientMsgId: fmt.Sprintf("p-%03d", k)})
		switch k {
		case 100:
			reqs = append(reqs, &heraldv1.PostMessageRequest{ChannelId: ch, Text: "no id"})
		case 200:
			reqs = append(reqs, &heraldv1.PostMessageRequest{ChannelId: ch, ClientMsgId: "no-text"})
		}
	}
	reqs = append(reqs, &heraldv1.PostMessageRequest{ChannelId: ch, Text: "again", ClientMsgId: "p-007"})
	got := postStream(t, h2cMessages(n), reqs)

	for k := range posts {
		id := fmt.Sprintf("p-%03d", k)
		answers := got[id]
		want := 1
		if id == "p-007" {
			want = 2
		}
		if len(answers) != want {
			t.Fatalf("%s: got %d answers, want %d", id, len(answers), want)
		}
		for _, a := range answers {
			if a.GetError() != nil {
				t.Fatalf("%s: got error %v", id, a.GetError())
			}
			if seq := a.GetOk().GetMessage().GetSeq(); seq != uint64(k+1) {
				t.Fatalf("%s: got seq %d, want %d (the order sent)", id, seq, k+1)
			}
		}
	}
	dups := 0
	for _, a := range got["p-007"] {
		if a.GetOk().GetDuplicate() {
			dups++
			if a.GetOk().GetMessage().GetText() != "hello 7" {
				t.Errorf("repeat of p-007: got text %q, want the first post's", a.GetOk().GetMessage().GetText())
			}
		}
	}
	if dups != 1 {
		t.Errorf("p-007 twice: got %d duplicate answers, want 1", dups)
	}
	for id, wantMsg := range map[string]string{"": "needs a client_msg_id", "no-text": "text"} {
		answers := got[id]
		if len(answers) != 1 || answers[0].GetError().GetCode() != connect.CodeInvalidArgument.String() ||
			!strings.Contains(answers[0].GetError().GetMessage(), wantMsg) {
			t.Errorf("answer for client_msg_id %q: got %v, want one invalid_argument mentioning %q", id, answers, wantMsg)
		}
	}
	if head := wsHead(t, n, ch); head != posts {
		t.Errorf("head seq: got %d, want %d", head, posts)
	}
}

// TestPostMessagesStreamLimits: a stream may carry more than the request
// size limit in all, and outlive the body timeout while it keeps sending;
// a stream that goes quiet for the body timeout ends with
// deadline_exceeded saying so.
func TestPostMessagesStreamLimits(t *testing.T) {
	t.Parallel()
	const timeout = 400 * time.Millisecond
	n := startNode(t, nodeOptions{gateway: gateway.Config{MaxRequestBytes: 4 << 10, BodyTimeout: timeout}})
	const ch = "long-stream"
	apiCreate(t, n, ch)
	c := h2cMessages(n)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := c.PostMessages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("x", 2000)
	begin := time.Now()
	k := 0
	// 2.5 body timeouts of posts, 2 KB each: 100 KB or more in all.
	for ; time.Since(begin) < 5*timeout/2 || k < 50; k++ {
		if err := stream.Send(&heraldv1.PostMessageRequest{ChannelId: ch, Text: text, ClientMsgId: fmt.Sprint("l-", k)}); err != nil {
			t.Fatalf("send %d: %v", k, err)
		}
		resp, err := stream.Receive()
		if err != nil {
			t.Fatalf("post %d, %v into the stream: %v", k, time.Since(begin), err)
		}
		if resp.GetError() != nil {
			t.Fatalf("post %d: %v", k, resp.GetError())
		}
		time.Sleep(timeout / 8) // a client with a post now and then
	}
	t.Logf("%d posts of %d bytes over %v on one stream", k, len(text), time.Since(begin).Round(time.Millisecond))
	_, err = stream.Receive() // nothing more sent: the stream ends
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded || !strings.Contains(err.Error(), "no whole message") {
		t.Fatalf("quiet stream: got %v, want deadline_exceeded saying it sent no message", err)
	}
}

// TestWSPipelinedPosts sends 200 post frames with client_msg_ids without
// waiting: each gets one reply to its frame id, with seqs in the order the
// frames were sent, and the subscriber on the same socket sees every
// event once, in order.
func TestWSPipelinedPosts(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	const ch = "ws-pipelined"
	wsCreateChannel(t, n, ch)
	c := dialWS(t, n, wsOptions{})
	c.subscribe("s", ch, wsSeq(0))
	const posts = 200
	for k := range posts {
		f := wsPostFrame(fmt.Sprint("f", k), ch, fmt.Sprint("hello ", k))
		f.GetPost().ClientMsgId = fmt.Sprint("w-", k)
		c.send(f)
	}
	replies := map[string]uint64{}
	var events []uint64
	for len(replies) < posts || len(events) < posts {
		f := c.next()
		switch f.GetKind().(type) {
		case *heraldv1.ServerFrame_Reply:
			if _, dup := replies[f.GetReplyTo()]; dup {
				t.Fatalf("two replies to %s", f.GetReplyTo())
			}
			replies[f.GetReplyTo()] = f.GetReply().GetMessage().GetSeq()
		case *heraldv1.ServerFrame_Event:
			events = append(events, f.GetEvent().GetSeq())
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	for k := range posts {
		if got := replies[fmt.Sprint("f", k)]; got != uint64(k+1) {
			t.Fatalf("reply to f%d: seq %d, want %d (the order sent)", k, got, k+1)
		}
		if events[k] != uint64(k+1) {
			t.Fatalf("event %d: seq %d, want %d", k, events[k], k+1)
		}
	}
}
