package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
)

// syncBuffer is a bytes.Buffer that a logger writes while a test reads it.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialWSWith connects to /ws sending header (nil: none) and reads nothing.
// It returns the upgrade response too, whose status tells why an upgrade
// was refused.
func dialWSWith(t *testing.T, n *node, header http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	c := &wsClient{t: t, done: make(chan struct{}), closed: make(chan struct{}), notify: make(chan struct{}, 1)}
	h := http.Header{}
	for k, v := range header {
		h[k] = v
	}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + n.Addr + "/ws", RequestHeader: h})
	if err != nil {
		return nil, resp, err
	}
	c.conn = conn
	go func() { // ends when the connection closes; waited for in cleanup
		defer close(c.done)
		conn.ReadLoop()
	}()
	t.Cleanup(c.shutdown)
	return c, resp, nil
}

// upgradeRequest is a WebSocket upgrade request for n's /ws with header.
func upgradeRequest(t *testing.T, n *node, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return req
}

// wsUpgrade sends a WebSocket upgrade request with header with a plain
// HTTP client, for a refusal: it returns the status, headers and body.
func wsUpgrade(t *testing.T, n *node, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req := upgradeRequest(t, n, header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("upgrade %s/ws: %v", n.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("upgrade %s/ws: switched protocols, want a refusal", n.Addr)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("upgrade %s/ws: read the body: %v", n.Addr, err)
	}
	return resp.StatusCode, resp.Header, body
}

// dialWSToken connects with token in the Authorization header and checks
// that the first frame is hello for user.
func dialWSToken(t *testing.T, n *node, token, user string) *wsClient {
	t.Helper()
	c, resp, err := dialWSWith(t, n, bearerHeader(token))
	if err != nil {
		t.Fatalf("dial %s/ws with a token for %q: %v (response %v)", n.Addr, user, err, statusOf(resp))
	}
	c.expectHello("", user)
	return c
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "none"
	}
	return resp.Status
}

// expectHello reads the next frame, which must be hello for user answering
// replyTo.
func (c *wsClient) expectHello(replyTo, user string) {
	c.t.Helper()
	f := c.expectReply("hello", replyTo)
	if got := f.GetHello().GetUser(); got != user {
		c.t.Fatalf("hello.user: got %q, want %q", got, user)
	}
}

// expectRefused reads an error with code answering replyTo, and then
// expects the server to close the connection (1008, policy violation).
func (c *wsClient) expectRefused(replyTo, code string) {
	c.t.Helper()
	c.expectError(replyTo, code)
	err, closed := c.waitClosed(wsWait)
	if !closed {
		c.t.Fatalf("connection still open %v after error %s, want it closed", wsWait, code)
	}
	if got := wsCloseCode(err); got != 1008 {
		c.t.Errorf("close code: got %d (%v), want 1008", got, err)
	}
}

func wsAuthFrame(id, token string) *heraldv1.ClientFrame {
	return &heraldv1.ClientFrame{Id: id, Kind: &heraldv1.ClientFrame_Auth{Auth: &heraldv1.Auth{Token: token}}}
}

// tokenExpiry returns the exp of a token this test minted.
func tokenExpiry(t *testing.T, token string) time.Time {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil || c.ExpiresAt == nil {
		t.Fatalf("parse the test's own token: %v", err)
	}
	return c.ExpiresAt.Time
}

// TestWSAuth covers how a WebSocket connection authenticates, with a
// header at upgrade or an auth first frame, how its token's expiry ends
// it, and that a subscription ends when its user leaves the channel. No
// token ever reaches the log.
func TestWSAuth(t *testing.T) {
	t.Parallel()
	const authTimeout = 300 * time.Millisecond
	logs := &syncBuffer{}
	n := startAuthNode(t, gateway.Config{AuthTimeout: authTimeout,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	// Every token this test makes, to look for in the log at the end.
	var (
		mu     sync.Mutex
		tokens []string
	)
	keep := func(tok string) string {
		mu.Lock()
		defer mu.Unlock()
		tokens = append(tokens, tok)
		return tok
	}
	mint := func(t *testing.T, user string, ttl time.Duration) string {
		return keep(n.mint(t, user, false, ttl))
	}
	other := gateway.NewAuthenticator([]byte("some other cluster's secret"))
	wrongKey := func(t *testing.T, user string) string {
		tok, err := other.Mint(user, false, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return keep(tok)
	}

	alice := clientsFor(n.node, mint(t, "alice", time.Hour))
	for _, ch := range []string{"general", "room-ws", "room-connect"} {
		if _, err := alice.Channels.CreateChannel(apiCtx(t), &heraldv1.CreateChannelRequest{ChannelId: ch}); err != nil {
			t.Fatalf("CreateChannel(%q): %v", ch, err)
		}
	}

	runConcurrently(t, map[string]func(t *testing.T){
		"header/valid": func(t *testing.T) {
			c := dialWSToken(t, n.node, mint(t, "alice", time.Hour), "alice")
			c.ping("p1")
			c.subscribe("s1", "general", nil)
		},
		"header/refused": func(t *testing.T) {
			for _, tc := range []struct{ name, token string }{
				{"wrong signature", wrongKey(t, "alice")},
				{"expired", keep(expiredToken(t, "alice"))},
				{"not a token", keep("not-a-token")},
			} {
				c, resp, err := dialWSWith(t, n.node, bearerHeader(tc.token))
				if err == nil {
					t.Errorf("%s: the upgrade succeeded (first frame %v), want HTTP 401", tc.name, c.next())
					continue
				}
				if resp == nil || resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s: got %v (%v), want HTTP 401", tc.name, statusOf(resp), err)
				}
			}
		},
		"frame/valid": func(t *testing.T) {
			c, _, err := dialWSWith(t, n.node, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.send(wsAuthFrame("a1", mint(t, "alice", time.Hour)))
			c.expectHello("a1", "alice")
			c.subscribe("s1", "general", nil)
			c.ping("p1")
		},
		"frame/refused": func(t *testing.T) {
			for _, tc := range []struct {
				name    string
				replyTo string
				send    func(c *wsClient)
			}{
				{"ping first", "f1", func(c *wsClient) {
					c.send(&heraldv1.ClientFrame{Id: "f1", Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}})
				}},
				{"subscribe first", "f2", func(c *wsClient) { c.send(wsSubscribeFrame("f2", "general", nil)) }},
				{"post first", "f3", func(c *wsClient) { c.send(wsPostFrame("f3", "general", "hi")) }},
				{"auth with a wrong signature", "f4", func(c *wsClient) { c.send(wsAuthFrame("f4", wrongKey(t, "alice"))) }},
				{"auth with an expired token", "f5", func(c *wsClient) { c.send(wsAuthFrame("f5", keep(expiredToken(t, "alice")))) }},
				{"auth without a token", "f6", func(c *wsClient) { c.send(wsAuthFrame("f6", "")) }},
				{"not a frame", "", func(c *wsClient) { c.sendText(`{"hello": "server"}`) }},
				{"not JSON", "", func(c *wsClient) { c.sendText("GET / HTTP/1.1") }},
				{"binary garbage", "", func(c *wsClient) { c.sendRaw(gws.OpcodeBinary, []byte{0xff, 0x00, 0x13}) }},
				{"oversize", "", func(c *wsClient) { c.sendText(strings.Repeat(" ", 1<<20+1)) }},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c, _, err := dialWSWith(t, n.node, nil)
					if err != nil {
						t.Fatal(err)
					}
					tc.send(c)
					c.expectRefused(tc.replyTo, "unauthenticated")
				})
			}
		},
		"frame/timeout": func(t *testing.T) {
			start := time.Now()
			c, _, err := dialWSWith(t, n.node, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.expectRefused("", "unauthenticated")
			took := time.Since(start)
			t.Logf("closed %v after dialing, with an auth timeout of %v", took.Round(time.Millisecond), authTimeout)
			if took < authTimeout {
				t.Errorf("closed after %v, want not before the auth timeout of %v", took, authTimeout)
			}
		},
		"expiry/header": func(t *testing.T) {
			tok := mint(t, "alice", 2*time.Second)
			c := dialWSToken(t, n.node, tok, "alice")
			c.subscribe("s1", "general", nil)
			checkClosedAtExpiry(t, c, tokenExpiry(t, tok))
		},
		"expiry/frame": func(t *testing.T) {
			tok := mint(t, "alice", 2*time.Second)
			c, _, err := dialWSWith(t, n.node, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.send(wsAuthFrame("a1", tok))
			c.expectHello("a1", "alice")
			checkClosedAtExpiry(t, c, tokenExpiry(t, tok))
		},
		"expiry/connect subscribe": func(t *testing.T) {
			tok := mint(t, "alice", 2*time.Second)
			exp := tokenExpiry(t, tok)
			st := subOpen(t, clientsFor(n.node, tok).Messages, "general", nil)
			st.subscribed("general")
			st.ended(connect.CodeUnauthenticated)
			at := time.Since(exp)
			t.Logf("stream ended %v after the token's expiry", at.Round(time.Millisecond))
			if at < -50*time.Millisecond || at > 5*time.Second {
				t.Errorf("stream ended %v after the token's expiry, want at expiry", at)
			}
		},
		"reauth keeps the connection": func(t *testing.T) {
			short := mint(t, "alice", 2*time.Second)
			exp := tokenExpiry(t, short)
			c := dialWSToken(t, n.node, short, "alice")
			c.subscribe("s1", "general", nil)
			// A token for someone else, or a bad one, changes nothing.
			c.send(wsAuthFrame("r0", mint(t, "mallory", time.Hour)))
			c.expectError("r0", "invalid_argument")
			c.send(wsAuthFrame("r1", wrongKey(t, "alice")))
			c.expectError("r1", "unauthenticated")
			c.send(wsAuthFrame("r2", mint(t, "alice", time.Hour)))
			c.expectHello("r2", "alice")
			// Keep using it until well past the first token's expiry.
			for i := 0; time.Now().Before(exp.Add(1500 * time.Millisecond)); i++ {
				c.ping(fmt.Sprintf("p%d", i))
				time.Sleep(100 * time.Millisecond) // pacing, not waiting for state
			}
			if c.isClosed() {
				t.Fatal("connection closed, want it open with the fresh token")
			}
			wsPostAs(t, alice, "general", "still here")
			if ev := c.nextEvent(); ev.GetMessagePosted().GetMessage().GetText() != "still here" {
				t.Errorf("event: got %v, want the post", ev)
			}
		},
		"leave ends a websocket subscription": func(t *testing.T) {
			const ch = "room-ws"
			bobToken := mint(t, "bob", time.Hour)
			bob := clientsFor(n.node, bobToken)
			if _, err := bob.Channels.JoinChannel(apiCtx(t), &heraldv1.JoinChannelRequest{ChannelId: ch}); err != nil {
				t.Fatal(err)
			}
			c := dialWSToken(t, n.node, bobToken, "bob")
			c.subscribe("s1", ch, nil)
			watcher := dialWSToken(t, n.node, mint(t, "alice", time.Hour), "alice")
			watcher.subscribe("w1", ch, nil)
			if p := c.expect("presence").GetPresence(); p.GetUser() != "alice" || p.GetStatus() != "online" {
				t.Fatalf("bob: got presence %v, want alice online", p)
			}

			if _, err := bob.Channels.LeaveChannel(apiCtx(t), &heraldv1.LeaveChannelRequest{ChannelId: ch}); err != nil {
				t.Fatal(err)
			}
			if ev := c.nextEvent(); ev.GetMemberLeft().GetUser() != "bob" {
				t.Fatalf("event: got %v, want member_left bob", ev)
			}
			c.expectError("s1", "permission_denied")

			seq := wsPostAs(t, alice, ch, "after bob left")
			if ev := watcher.nextEvent(); ev.GetMemberLeft().GetUser() != "bob" {
				t.Fatalf("watcher: got %v, want member_left bob", ev)
			}
			if p := watcher.expect("presence").GetPresence(); p.GetUser() != "bob" || p.GetStatus() != "away" {
				t.Fatalf("watcher: got presence %v, want bob away (his subscription ended)", p)
			}
			if ev := watcher.nextEvent(); ev.GetSeq() != seq {
				t.Fatalf("watcher: got %v, want the post at seq %d", ev, seq)
			}
			// The watcher has the post, so bob would have it by now too:
			// his next frame must be the answer to his ping.
			c.ping("p1")
			if got := c.pending(); got != 0 {
				t.Errorf("bob has %d more frames, want none", got)
			}
		},
		"leave ends a connect subscription": func(t *testing.T) {
			const ch = "room-connect"
			bob := clientsFor(n.node, mint(t, "bob", time.Hour))
			if _, err := bob.Channels.JoinChannel(apiCtx(t), &heraldv1.JoinChannelRequest{ChannelId: ch}); err != nil {
				t.Fatal(err)
			}
			st := subOpen(t, bob.Messages, ch, nil)
			head := st.subscribed(ch)
			if _, err := bob.Channels.LeaveChannel(apiCtx(t), &heraldv1.LeaveChannelRequest{ChannelId: ch}); err != nil {
				t.Fatal(err)
			}
			if ev := st.events(head, head+1)[0]; ev.GetMemberLeft().GetUser() != "bob" {
				t.Fatalf("event: got %v, want member_left bob", ev)
			}
			wsPostAs(t, alice, ch, "after bob left")
			st.ended(connect.CodePermissionDenied)
		},
	})

	t.Run("no token in the log", func(t *testing.T) {
		// A Connect call with a bad token logs its refusal too.
		if _, err := clientsFor(n.node, wrongKey(t, "alice")).Channels.GetChannel(apiCtx(t),
			&heraldv1.GetChannelRequest{ChannelId: "general"}); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("GetChannel with a bad token: got %v, want unauthenticated", err)
		}
		log := logs.String()
		if !strings.Contains(log, "token refused") {
			t.Fatalf("the log has no refusal, want the debug lines captured:\n%s", log)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, tok := range tokens {
			// The signature alone identifies a token.
			sig := tok[strings.LastIndex(tok, ".")+1:]
			if strings.Contains(log, tok) || len(sig) >= 16 && strings.Contains(log, sig) {
				t.Errorf("the log holds token %q", tok)
			}
		}
		t.Logf("checked %d tokens against %d bytes of log", len(tokens), len(log))
	})
}

// checkClosedAtExpiry waits for the connection to end with error
// unauthenticated at its token's expiry.
func checkClosedAtExpiry(t *testing.T, c *wsClient, exp time.Time) {
	t.Helper()
	c.expectRefused("", "unauthenticated")
	at := time.Since(exp)
	t.Logf("closed %v after the token's expiry", at.Round(time.Millisecond))
	if at < -50*time.Millisecond || at > 5*time.Second {
		t.Errorf("closed %v after the token's expiry, want at expiry", at)
	}
}

// wsPostAs posts through the Connect API as c and returns the seq.
func wsPostAs(t *testing.T, c apiClients, channel, text string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wsWait)
	defer cancel()
	resp, err := c.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: channel, Text: text})
	if err != nil {
		t.Fatalf("post to %q: %v", channel, err)
	}
	return resp.GetMessage().GetSeq()
}
