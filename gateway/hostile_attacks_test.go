package gateway_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
)

// hostile holds the attacks of TestHostileClients. Each attack runs as
// its own user, so that per-user limits trip only where the attack means
// them to, and repeats until until.
type hostile struct {
	n     *authNode
	until time.Time
	acked *ackLog
}

// repeat runs fn at least once and again until h.until.
func (h *hostile) repeat(fn func()) {
	for first := true; first || time.Now().Before(h.until); first = false {
		fn()
	}
}

// header returns an Authorization header for a new token of user.
func (h *hostile) header(t *testing.T, user string) http.Header {
	return bearerHeader(h.n.mint(t, user, false, time.Hour))
}

const (
	subscribeProc = "/herald.v1.MessageService/Subscribe"
	postProc      = "/herald.v1.MessageService/PostMessage"
)

// envelope frames a message as Connect streaming and gRPC do.
func envelope(flags byte, msg []byte) []byte {
	b := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// endStreamError returns the error of a Connect streaming response: the
// code and message of its end-stream message.
func endStreamError(t *testing.T, body []byte) (code, msg string) {
	t.Helper()
	for len(body) >= 5 {
		flags, n := body[0], binary.BigEndian.Uint32(body[1:5])
		if uint32(len(body)-5) < n {
			t.Fatalf("streaming response: envelope of %d bytes, %d left", n, len(body)-5)
		}
		m := body[5 : 5+n]
		body = body[5+n:]
		if flags&0x02 == 0 {
			continue
		}
		if flags&0x01 != 0 { // compressed: the request's encoding, gzip
			zr, err := gzip.NewReader(bytes.NewReader(m))
			if err != nil {
				t.Fatalf("end-stream message: %v", err)
			}
			if m, err = io.ReadAll(zr); err != nil {
				t.Fatalf("end-stream message: %v", err)
			}
		}
		var end struct {
			Error *connectErrorBody `json:"error"`
		}
		if err := json.Unmarshal(m, &end); err != nil {
			t.Fatalf("end-stream message %q: %v", m, err)
		}
		if end.Error == nil {
			return "", ""
		}
		return end.Error.Code, end.Error.Message
	}
	t.Fatalf("streaming response without an end-stream message")
	return "", ""
}

// wantGRPCStatus checks a gRPC response's status trailer.
func wantGRPCStatus(t *testing.T, what string, resp *http.Response, code connect.Code) {
	t.Helper()
	s := resp.Trailer.Get("Grpc-Status")
	if s == "" {
		s = resp.Header.Get("Grpc-Status") // a trailers-only response
	}
	if s != strconv.Itoa(int(code)) {
		t.Errorf("%s over gRPC: got grpc-status %q (%q), want %d (%s)", what, s,
			resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"), code, code)
	}
}

func (h *hostile) malformedEnvelopes(t *testing.T) {
	hdr := h.header(t, "mallory-envelopes")
	h2c := h2cClient(t)
	subJS := []byte(`{"channelId":"general"}`)
	postBin, err := proto.Marshal(&heraldv1.PostMessageRequest{ChannelId: "general", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		body     func(msg []byte) []byte
		code     connect.Code
		contains string
	}{
		{"truncated prefix", func([]byte) []byte { return []byte{0, 0, 0} }, connect.CodeInvalidArgument, "ends 3 bytes into a 5-byte envelope prefix"},
		{"shorter than its length", func([]byte) []byte { return []byte{0, 0, 0, 0, 100, '{'} }, connect.CodeInvalidArgument, "ends 99 bytes short"},
		{"4 GiB length", func([]byte) []byte { return []byte{0, 0xff, 0xff, 0xff, 0xff, '{'} }, connect.CodeResourceExhausted, "larger than configured max"},
		{"compressed flag without an encoding", func(m []byte) []byte { return envelope(1, m) }, connect.CodeInvalidArgument, "names no encoding"},
		{"an unknown flag", func(m []byte) []byte { return envelope(0x04, m) }, connect.CodeInvalidArgument, "only the compressed flag"},
		{"an end-stream flag from the client", func(m []byte) []byte { return envelope(0x02, m) }, connect.CodeInvalidArgument, "only the compressed flag"},
		{"garbage in the envelope", func([]byte) []byte { return envelope(0, []byte{0xff, 0xfe, '{'}) }, connect.CodeInvalidArgument, "unmarshal"},
	}
	h.repeat(func() {
		for _, tc := range cases {
			resp, body := post(t, http.DefaultClient, h.n.node, subscribeProc, "application/connect+json", hdr, bytes.NewReader(tc.body(subJS)))
			code, msg := endStreamError(t, body)
			if resp.StatusCode != http.StatusOK || code != tc.code.String() || !strings.Contains(msg, tc.contains) {
				t.Errorf("Subscribe with %s: got status %d, %s %q; want 200 and %s %q", tc.name, resp.StatusCode, code, msg, tc.code, tc.contains)
			}
			resp, _ = post(t, h2c, h.n.node, postProc, "application/grpc", hdr, bytes.NewReader(tc.body(postBin)))
			wantGRPCStatus(t, "PostMessage with "+tc.name, resp, tc.code)
		}
	})
}

func (h *hostile) compressionBombs(t *testing.T) {
	hdr := h.header(t, "mallory-bombs")
	bomb := gzipBomb(t, 64) // 64 MiB of PostMessage JSON in well under 1 MiB
	h2c := h2cClient(t)
	h.repeat(func() {
		gz := http.Header{"Content-Encoding": {"gzip"}, "Authorization": hdr["Authorization"]}
		resp, body := post(t, http.DefaultClient, h.n.node, postProc, "application/json", gz, bytes.NewReader(bomb))
		wantConnectErrorBody(t, resp.StatusCode, body, connect.CodeResourceExhausted, "larger than configured max")

		st := http.Header{"Connect-Content-Encoding": {"gzip"}, "Authorization": hdr["Authorization"]}
		resp, body = post(t, http.DefaultClient, h.n.node, subscribeProc, "application/connect+json", st, bytes.NewReader(envelope(1, bomb)))
		if code, msg := endStreamError(t, body); code != connect.CodeResourceExhausted.String() {
			t.Errorf("Subscribe with a compressed bomb: got status %d, %s %q; want resource_exhausted", resp.StatusCode, code, msg)
		}

		g := http.Header{"Grpc-Encoding": {"gzip"}, "Authorization": hdr["Authorization"]}
		resp, _ = post(t, h2c, h.n.node, postProc, "application/grpc", g, bytes.NewReader(envelope(1, bomb)))
		wantGRPCStatus(t, "PostMessage with a compressed bomb", resp, connect.CodeResourceExhausted)

		// No compression is negotiated on WebSockets: a compressed frame
		// is a protocol error.
		ws := h.rawWS(t, hdr)
		if err := ws.writeFrame(wsFin|wsRSV1|wsOpText, bomb[:1024], -1); err != nil {
			t.Fatal(err)
		}
		wantClose(t, ws, "a frame with RSV1 set", 1002)
	})
}

// rawWS opens a raw WebSocket with hdr and reads its hello.
func (h *hostile) rawWS(t *testing.T, hdr http.Header) *rawWS {
	t.Helper()
	ws, resp := dialRawWS(t, h.n.node, hdr)
	if ws == nil {
		t.Fatalf("WebSocket upgrade: got %s, want 101", resp.Status)
	}
	f := rawServerFrame(t, ws, false)
	if f.GetHello() == nil {
		t.Fatalf("first frame: got %v, want hello", f)
	}
	return ws
}

// rawServerFrame reads and decodes the next data frame.
func rawServerFrame(t *testing.T, ws *rawWS, binary bool) *heraldv1.ServerFrame {
	t.Helper()
	p, err := ws.nextData(wsWait)
	if err != nil {
		t.Fatalf("read a frame: %v", err)
	}
	f := &heraldv1.ServerFrame{}
	if binary {
		err = proto.Unmarshal(p, f)
	} else {
		err = protojson.Unmarshal(p, f)
	}
	if err != nil {
		t.Fatalf("server frame %q: %v", p, err)
	}
	return f
}

// wantClose checks that the server closes ws with code after what.
func wantClose(t *testing.T, ws *rawWS, what string, code uint16) {
	t.Helper()
	got, err := ws.closeCode(wsWait)
	if err != nil || got != code {
		t.Errorf("after %s: got close %d (%v), want close %d", what, got, err, code)
	}
}

// wantAlive checks that ws still answers a ping frame with its pong.
func wantAlive(t *testing.T, ws *rawWS, binary bool, what string) {
	t.Helper()
	op, b := byte(wsOpText), []byte(`{"id":"p","ping":{}}`)
	if binary {
		op = wsOpBinary
		b, _ = proto.Marshal(&heraldv1.ClientFrame{Id: "p", Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}})
	}
	if err := ws.writeFrame(wsFin|op, b, -1); err != nil {
		t.Fatalf("after %s: write a ping: %v", what, err)
	}
	if f := rawServerFrame(t, ws, binary); f.GetPong() == nil || f.GetReplyTo() != "p" {
		t.Errorf("after %s: got %v, want the pong: the connection should stay usable", what, f)
	}
}

// wantErrorFrame reads the next frame and checks it is an error with code.
func wantErrorFrame(t *testing.T, ws *rawWS, binary bool, what, code string) {
	t.Helper()
	f := rawServerFrame(t, ws, binary)
	if e := f.GetError(); e.GetCode() != code || e.GetMessage() == "" {
		t.Errorf("%s: got %v, want an error frame %s with a message", what, f, code)
	}
}

func (h *hostile) frames(t *testing.T) {
	hdr := h.header(t, "mallory-frames")
	limit := hostileConfig().MaxRequestBytes
	h.repeat(func() {
		ws := h.rawWS(t, hdr)
		if err := ws.writeFrame(wsFin|wsOpText, bytes.Repeat([]byte("a"), limit+1), -1); err != nil {
			t.Fatal(err)
		}
		wantErrorFrame(t, ws, false, "a frame over the limit", "resource_exhausted")
		wantAlive(t, ws, false, "a frame over the limit")
		// A frame announcing far more than the limit is refused from its
		// header, before its payload.
		if err := ws.writeFrame(wsFin|wsOpText, []byte("{"), 64<<20); err != nil {
			t.Fatal(err)
		}
		wantClose(t, ws, "a frame announcing 64 MiB", 1009)

		for _, tc := range []struct {
			name    string
			head    byte
			payload []byte
		}{
			{"a continuation with nothing to continue", wsFin | 0x0, []byte("x")},
			{"a fragmented ping", wsOpPing, nil},
			{"a ping of 126 bytes", wsFin | wsOpPing, make([]byte, 126)},
			{"a reserved opcode", wsFin | 0x3, []byte("x")},
		} {
			ws := h.rawWS(t, hdr)
			if err := ws.writeFrame(tc.head, tc.payload, -1); err != nil {
				t.Fatal(err)
			}
			wantClose(t, ws, tc.name, 1002)
		}

		// A frame cut short, and then silence: the connection is closed
		// once it has been silent for three ping intervals.
		ws = h.rawWS(t, hdr)
		if err := ws.writeFrame(wsFin|wsOpText, []byte(`{"id":"x"`), 1000); err != nil {
			t.Fatal(err)
		}
		if _, err := ws.closeCode(wsWait); err != nil && !errors.Is(err, errNoCloseFrame) {
			t.Errorf("a frame cut short: got %v, want the connection closed", err)
		}
	})
}

func (h *hostile) invalidUTF8(t *testing.T) {
	hdr := h.header(t, "mallory-utf8")
	h.repeat(func() {
		resp, body := post(t, http.DefaultClient, h.n.node, postProc, "application/json", hdr,
			strings.NewReader("{\"channelId\":\"general\",\"text\":\"bad \xff\xfe\"}"))
		wantConnectErrorBody(t, resp.StatusCode, body, connect.CodeInvalidArgument, "utf-8")
		resp, body = post(t, http.DefaultClient, h.n.node, postProc, "application/proto", hdr,
			bytes.NewReader(protoPost("general", []byte("bad \xff\xfe"))))
		wantConnectErrorBody(t, resp.StatusCode, body, connect.CodeInvalidArgument, "utf-8")

		ws := h.rawWS(t, hdr)
		if err := ws.writeFrame(wsFin|wsOpText, []byte("{\"id\":\"\xff\"}"), -1); err != nil {
			t.Fatal(err)
		}
		wantClose(t, ws, "a text frame of invalid UTF-8", 1007)

		bin := http.Header{"Sec-Websocket-Protocol": {gateway.ProtoSubprotocol}, "Authorization": hdr["Authorization"]}
		ws, resp = dialRawWS(t, h.n.node, bin)
		if ws == nil {
			t.Fatalf("binary WebSocket upgrade: got %s, want 101", resp.Status)
		}
		if f := rawServerFrame(t, ws, true); f.GetHello() == nil {
			t.Fatalf("first frame: got %v, want hello", f)
		}
		// A post frame whose text is not UTF-8, encoded by hand.
		frame := append([]byte{0x0a, 1, 'u'}, 0x6a) // id "u", post (13, bytes)
		p := protoPost("general", []byte("bad \xff\xfe"))
		frame = append(append(frame, byte(len(p))), p...)
		if err := ws.writeFrame(wsFin|wsOpBinary, frame, -1); err != nil {
			t.Fatal(err)
		}
		wantErrorFrame(t, ws, true, "a binary frame with invalid UTF-8", "invalid_argument")
		wantAlive(t, ws, true, "a binary frame with invalid UTF-8")
		ws.Close() // the user may hold only so many connections
	})
}

func (h *hostile) subscriptionLimit(t *testing.T) {
	tok := h.n.mint(t, "mallory-subs", false, time.Hour)
	limit := hostileConfig().MaxSubscriptions
	h.repeat(func() {
		c := dialWSToken(t, h.n.node, tok, "mallory-subs")
		for i := 1; i <= limit; i++ {
			c.subscribe(fmt.Sprint(i), fmt.Sprintf("c%d", i), nil)
		}
		c.send(wsSubscribeFrame("over", fmt.Sprintf("c%d", limit+1), nil))
		if e := c.expectError("over", "resource_exhausted"); !strings.Contains(e.GetMessage(), strconv.Itoa(limit)) {
			t.Errorf("subscription %d: got %q, want the message to give the limit", limit+1, e.GetMessage())
		}
		c.ping("alive")
		c.shutdown()
	})
}

func (h *hostile) connectionLimit(t *testing.T) {
	tok := h.n.mint(t, "mallory-conns", false, time.Hour)
	limit := hostileConfig().MaxConnsPerUser
	c := clientsFor(h.n.node, tok)
	h.repeat(func() {
		// The last round's connections are released as the node notices
		// they closed: until then, a refusal here is the limit holding.
		var streams []*connect.ServerStreamForClient[heraldv1.SubscribeResponse]
		var conns []*wsClient
		for i := range limit {
			checkFor(t, wsWait, 20*time.Millisecond, func() bool {
				if i%2 == 0 {
					ws, resp, err := dialWSWith(t, h.n.node, bearerHeader(tok))
					if err != nil {
						if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
							t.Fatalf("WebSocket %d: %v (%s)", i, err, statusOf(resp))
						}
						return false
					}
					ws.expectHello("", "mallory-conns")
					conns = append(conns, ws)
					return true
				}
				st, err := c.Messages.Subscribe(apiCtx(t), &heraldv1.SubscribeRequest{ChannelId: "c1"})
				if err == nil && st.Receive() {
					streams = append(streams, st)
					return true
				}
				if err == nil {
					err = st.Err()
					st.Close()
				}
				if connect.CodeOf(err) != connect.CodeResourceExhausted {
					t.Fatalf("Subscribe %d: %v", i, err)
				}
				return false
			})
		}
		ws, resp, err := dialWSWith(t, h.n.node, bearerHeader(tok))
		if err == nil {
			ws.shutdown()
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(gateway.RetryAfterHeader) == "" {
			t.Errorf("WebSocket %d: got %s (%v), want 429 with %s", limit+1, statusOf(resp), err, gateway.RetryAfterHeader)
		}
		// The refused upgrade, as a browser sees it: the status, and a
		// Connect error body saying what to do.
		status, header, body := wsUpgrade(t, h.n.node, bearerHeader(tok))
		if status != http.StatusTooManyRequests || !strings.HasPrefix(header.Get("Content-Type"), "application/json") {
			t.Errorf("WebSocket %d upgrade: got status %d, Content-Type %q; want 429, application/json", limit+1, status, header.Get("Content-Type"))
		}
		wantConnectErrorBody(t, status, body, connect.CodeResourceExhausted, fmt.Sprintf("at most %d", limit))
		wantConnLimitAdvice(t, fmt.Sprintf("WebSocket %d upgrade", limit+1), string(body))
		wantRetryAfter(t, fmt.Sprintf("WebSocket %d upgrade", limit+1), header.Get(gateway.RetryAfterHeader))
		// Authenticated by its first frame instead, over the limit too.
		ws, _, err = dialWSWith(t, h.n.node, nil)
		if err != nil {
			t.Fatalf("WebSocket without a header: %v", err)
		}
		ws.send(wsAuthFrame("a1", tok))
		e := ws.expectError("a1", "resource_exhausted")
		wantConnLimitAdvice(t, fmt.Sprintf("WebSocket %d auth frame", limit+1), e.GetMessage())
		ws.shutdown()
		st, err := c.Messages.Subscribe(apiCtx(t), &heraldv1.SubscribeRequest{ChannelId: "c1"})
		if err == nil {
			if st.Receive() {
				t.Errorf("Subscribe %d: got %v, want resource_exhausted", limit+1, st.Msg())
			}
			err = st.Err()
			st.Close()
		}
		wantCode(t, err, connect.CodeResourceExhausted, fmt.Sprintf("at most %d", limit))
		if ce, ok := errors.AsType[*connect.Error](err); ok {
			wantConnLimitAdvice(t, fmt.Sprintf("Subscribe %d", limit+1), ce.Message())
			wantRetryAfter(t, fmt.Sprintf("Subscribe %d", limit+1), ce.Meta().Get(gateway.RetryAfterHeader))
		}
		for _, st := range streams {
			st.Close()
		}
		for _, ws := range conns {
			ws.shutdown()
		}
		// Closed, they no longer count.
		checkFor(t, wsWait, 20*time.Millisecond, func() bool {
			ws, _, err := dialWSWith(t, h.n.node, bearerHeader(tok))
			if err != nil {
				return false
			}
			ws.shutdown()
			return true
		})
	})
}

// wantConnLimitAdvice checks the message of a refusal for the per-user
// connection limit: it says what to do.
func wantConnLimitAdvice(t *testing.T, what, msg string) {
	t.Helper()
	if !strings.Contains(msg, "close one") || !strings.Contains(msg, "retry after") {
		t.Errorf("%s: message %q; want it to say to close a connection or retry after a while", what, msg)
	}
}

// wantRetryAfter checks a Retry-After-Ms value: a positive number of
// milliseconds.
func wantRetryAfter(t *testing.T, what, retryAfter string) {
	t.Helper()
	if ms, err := strconv.Atoi(retryAfter); err != nil || ms <= 0 {
		t.Errorf("%s: %s %q; want a positive number of ms", what, gateway.RetryAfterHeader, retryAfter)
	}
}

func (h *hostile) postRateLimit(t *testing.T) {
	c := clientsFor(h.n.node, h.n.mint(t, "mallory-flood", false, time.Hour))
	if _, err := c.Channels.JoinChannel(apiCtx(t), &heraldv1.JoinChannelRequest{ChannelId: "general"}); err != nil {
		t.Fatal(err)
	}
	var (
		mu          sync.Mutex
		ok, limited int
		wg          sync.WaitGroup
	)
	// Enough posters to outrun the limit on a loaded machine, until the
	// attack ends and one post has been limited (or a cap passes).
	start := time.Now()
	hardStop := h.until.Add(20 * time.Second)
	flooding := func() bool {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		return now.Before(h.until) || (limited == 0 && now.Before(hardStop))
	}
	for range 16 {
		wg.Go(func() {
			for flooding() {
				resp, err := c.Messages.PostMessage(apiCtx(t), &heraldv1.PostMessageRequest{ChannelId: "general", Text: "flood"})
				mu.Lock()
				switch ce := new(connect.Error); {
				case err == nil:
					ok++
					h.acked.add(resp.GetMessage())
				case errors.As(err, &ce) && ce.Code() == connect.CodeResourceExhausted:
					limited++
					if ms, perr := strconv.Atoi(ce.Meta().Get(gateway.RetryAfterHeader)); perr != nil || ms <= 0 {
						t.Errorf("rate limited post: %s %q, want a positive number of ms", gateway.RetryAfterHeader, ce.Meta().Get(gateway.RetryAfterHeader))
					}
				default:
					t.Errorf("flood post: got %v, want ok or resource_exhausted", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	rate := hostileConfig().MaxPostsPerUser
	allowed := int(rate*(1+time.Since(start).Seconds())) + 1 // the burst, then the rate
	t.Logf("flood: %d posts acknowledged, %d rate limited", ok, limited)
	if limited == 0 || ok > allowed {
		t.Errorf("flood: %d acknowledged and %d limited, want some limited and at most %d acknowledged", ok, limited, allowed)
	}
}

// closedWithin reads conn until the server closes it, fails if it is
// still open after d, and returns what the server sent.
func closedWithin(t *testing.T, conn net.Conn, d time.Duration, what string) []byte {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Errorf("%s: connection still open after %v, want it closed", what, d)
	}
	return b
}

// trickle writes b one byte every 100 ms until a write fails.
func trickle(conn net.Conn, b []byte) {
	for i := 0; ; i++ {
		if _, err := conn.Write([]byte{b[i%len(b)]}); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *hostile) slowHeaders(t *testing.T) {
	h.repeat(func() {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				conn, err := net.DialTimeout("tcp", h.n.Addr, 5*time.Second)
				if err != nil {
					t.Errorf("dial %s: %v", h.n.Addr, err)
					return
				}
				defer conn.Close()
				if i%2 == 0 { // half say nothing at all
					go trickle(conn, []byte("GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n"))
				}
				closedWithin(t, conn, hostileHeaderTimeout+wsWait, "slow headers")
			})
		}
		wg.Wait()
	})
}

func (h *hostile) slowBodies(t *testing.T) {
	hdr := h.header(t, "mallory-bodies")
	h.repeat(func() {
		var wg sync.WaitGroup
		for _, proc := range []string{postProc, subscribeProc} {
			wg.Go(func() {
				conn, err := net.DialTimeout("tcp", h.n.Addr, 5*time.Second)
				if err != nil {
					t.Errorf("dial %s: %v", h.n.Addr, err)
					return
				}
				defer conn.Close()
				ct := "application/json"
				if proc == subscribeProc {
					ct = "application/connect+json"
				}
				fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: herald\r\nContent-Type: %s\r\nAuthorization: %s\r\nContent-Length: 1000\r\n\r\n",
					proc, ct, hdr.Get("Authorization"))
				if proc == subscribeProc { // an envelope for the rest of the body
					if _, err := conn.Write(binary.BigEndian.AppendUint32([]byte{0}, 1000-5)); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
				go trickle(conn, []byte(`{"channelId":"general","text":"`))
				got := closedWithin(t, conn, hostileConfig().BodyTimeout+wsWait, "slow body to "+proc)
				resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
				if err != nil {
					t.Errorf("slow body to %s: got %q, want an HTTP response: %v", proc, got, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Errorf("slow body to %s: read the response: %v", proc, err)
					return
				}
				var code, msg string
				if proc == subscribeProc {
					code, msg = endStreamError(t, body)
				} else {
					var e connectErrorBody
					_ = json.Unmarshal(body, &e) // an error shows as the wrong code below
					code, msg = e.Code, e.Message
				}
				if code != connect.CodeDeadlineExceeded.String() || !strings.Contains(msg, "did not arrive within") {
					t.Errorf("slow body to %s: got %s %q (status %d), want deadline_exceeded saying so", proc, code, msg, resp.StatusCode)
				}
			})
		}
		wg.Wait()
	})
}

func (h *hostile) slowWebSockets(t *testing.T) {
	hdr := h.header(t, "mallory-silent")
	h.repeat(func() {
		// No Authorization header and no auth frame.
		ws, resp := dialRawWS(t, h.n.node, nil)
		if ws == nil {
			t.Fatalf("WebSocket upgrade without a token: got %s, want 101 and an auth deadline", resp.Status)
		}
		wantClose(t, ws, "no auth frame", 1008)
		// Authenticated, then silent: no frames and no pongs.
		ws = h.rawWS(t, hdr)
		if _, err := ws.closeCode(wsWait); err != nil && !errors.Is(err, errNoCloseFrame) {
			t.Errorf("a silent connection: got %v, want it closed", err)
		}
	})
}
