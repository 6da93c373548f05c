package gateway_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// connFuzzChannel is the channel FuzzConnectRequest creates, and checks
// after every input.
const connFuzzChannel = "fuzz"

// connFuzzProc is a procedure FuzzConnectRequest posts to: a valid
// request, and the response type.
type connFuzzProc struct {
	path string
	req  proto.Message
	resp func() proto.Message
}

// connFuzzProcs are the unary Channel and Message service procedures;
// Subscribe, the one server stream, is last.
var connFuzzProcs = []connFuzzProc{
	{heraldv1connect.ChannelServiceCreateChannelProcedure,
		&heraldv1.CreateChannelRequest{ChannelId: "fuzz-2", Name: "Fuzz", Topic: "a topic"},
		func() proto.Message { return &heraldv1.CreateChannelResponse{} }},
	{heraldv1connect.ChannelServiceGetChannelProcedure,
		&heraldv1.GetChannelRequest{ChannelId: connFuzzChannel},
		func() proto.Message { return &heraldv1.GetChannelResponse{} }},
	{heraldv1connect.ChannelServiceListChannelsProcedure,
		&heraldv1.ListChannelsRequest{Limit: 2, ExcludeArchived: true},
		func() proto.Message { return &heraldv1.ListChannelsResponse{} }},
	{heraldv1connect.ChannelServiceJoinChannelProcedure,
		&heraldv1.JoinChannelRequest{ChannelId: connFuzzChannel},
		func() proto.Message { return &heraldv1.JoinChannelResponse{} }},
	{heraldv1connect.ChannelServiceLeaveChannelProcedure,
		&heraldv1.LeaveChannelRequest{ChannelId: connFuzzChannel},
		func() proto.Message { return &heraldv1.LeaveChannelResponse{} }},
	{heraldv1connect.ChannelServiceArchiveChannelProcedure,
		&heraldv1.ArchiveChannelRequest{ChannelId: "fuzz-2"},
		func() proto.Message { return &heraldv1.ArchiveChannelResponse{} }},
	{heraldv1connect.MessageServicePostMessageProcedure,
		&heraldv1.PostMessageRequest{ChannelId: connFuzzChannel, Text: "héllo ✓", ClientMsgId: "c-1"},
		func() proto.Message { return &heraldv1.PostMessageResponse{} }},
	{heraldv1connect.MessageServiceEditMessageProcedure,
		&heraldv1.EditMessageRequest{ChannelId: connFuzzChannel, Seq: 1, Text: "edited"},
		func() proto.Message { return &heraldv1.EditMessageResponse{} }},
	{heraldv1connect.MessageServiceDeleteMessageProcedure,
		&heraldv1.DeleteMessageRequest{ChannelId: connFuzzChannel, Seq: 2},
		func() proto.Message { return &heraldv1.DeleteMessageResponse{} }},
	{heraldv1connect.MessageServiceAddReactionProcedure,
		&heraldv1.AddReactionRequest{ChannelId: connFuzzChannel, Seq: 1, Name: "wave"},
		func() proto.Message { return &heraldv1.AddReactionResponse{} }},
	{heraldv1connect.MessageServiceRemoveReactionProcedure,
		&heraldv1.RemoveReactionRequest{ChannelId: connFuzzChannel, Seq: 1, Name: "wave"},
		func() proto.Message { return &heraldv1.RemoveReactionResponse{} }},
	{heraldv1connect.MessageServiceGetHistoryProcedure,
		&heraldv1.GetHistoryRequest{ChannelId: connFuzzChannel, Limit: 5, OldestFirst: true},
		func() proto.Message { return &heraldv1.GetHistoryResponse{} }},
	{heraldv1connect.MessageServiceGetThreadProcedure,
		&heraldv1.GetThreadRequest{ChannelId: connFuzzChannel, ThreadSeq: 1, Limit: 5},
		func() proto.Message { return &heraldv1.GetThreadResponse{} }},
	{heraldv1connect.MessageServiceSubscribeProcedure,
		&heraldv1.SubscribeRequest{ChannelId: connFuzzChannel, AfterSeq: proto.Uint64(0)},
		func() proto.Message { return &heraldv1.SubscribeResponse{} }},
}

// connFuzzUnary is how many of connFuzzProcs are unary.
const connFuzzUnary = 13

// The protocols of FuzzConnectRequest: mode&connFuzzProtoMask.
const (
	connFuzzConnectJSON  = iota // Connect unary, application/json
	connFuzzConnectProto        // Connect unary, application/proto
	connFuzzGRPC                // gRPC over h2c, application/grpc
	connFuzzGRPCJSON            // gRPC over h2c, application/grpc+json
	connFuzzGRPCWeb             // gRPC-Web over HTTP/1.1, application/grpc-web+proto
	connFuzzGRPCWebJSON         // gRPC-Web over HTTP/1.1, application/grpc-web+json
	connFuzzStreamJSON          // Connect server stream (Subscribe), application/connect+json
	connFuzzStreamProto         // Connect server stream (Subscribe), application/connect+proto
	connFuzzProtoMask    = 7
)

// The other bits of a FuzzConnectRequest mode.
const (
	// connFuzzRaw sends an envelope protocol's body as is, so the input
	// carries its own envelopes; a Connect unary body it gzips, with
	// Content-Encoding: gzip.
	connFuzzRaw = 1 << 3
	// connFuzzClaimGzip claims compression without compressing: a unary
	// body with Content-Encoding: gzip, an envelope with the compressed
	// flag and no encoding header.
	connFuzzClaimGzip = 1 << 4
	// connFuzzOddHeader adds a header the server must refuse: Connect
	// unary, Connect-Protocol-Version 2; streams, an unsupported encoding.
	connFuzzOddHeader = 1 << 5
	// mode>>connFuzzTimeoutShift picks the timeout header: none (200 ms
	// for streams), zero, negative, or too long.
	connFuzzTimeoutShift = 6
)

// connFuzzTimeouts are the Connect-Timeout-Ms and grpc-timeout values by
// the mode's timeout bits; the first is for streams only.
var connFuzzTimeouts = [4][2]string{
	{"200", "200m"},
	{"0", "0n"},
	{"-5", "-5m"},
	{"12345678901", "123456789S"},
}

// connFuzzEnvelope returns data in one 5-byte-prefixed envelope.
func connFuzzEnvelope(flags byte, data []byte) []byte {
	b := make([]byte, 5, 5+len(data))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(data)))
	return append(b, data...)
}

// connFuzzFrame is one envelope of a response body.
type connFuzzFrame struct {
	flags byte
	data  []byte
}

// connFuzzFrames splits a response body into envelopes.
func connFuzzFrames(body []byte) ([]connFuzzFrame, error) {
	var frames []connFuzzFrame
	for len(body) > 0 {
		if len(body) < 5 {
			return nil, fmt.Errorf("%d trailing bytes, want a 5-byte prefix", len(body))
		}
		n := binary.BigEndian.Uint32(body[1:5])
		if uint64(len(body)-5) < uint64(n) {
			return nil, fmt.Errorf("an envelope of %d bytes with only %d left", n, len(body)-5)
		}
		frames = append(frames, connFuzzFrame{body[0], body[5 : 5+n]})
		body = body[5+n:]
	}
	return frames, nil
}

// connFuzzHTTPStatus is the Connect protocol's HTTP status for each code.
var connFuzzHTTPStatus = map[connect.Code]int{
	connect.CodeCanceled: 499, connect.CodeUnknown: 500, connect.CodeInvalidArgument: 400,
	connect.CodeDeadlineExceeded: 504, connect.CodeNotFound: 404, connect.CodeAlreadyExists: 409,
	connect.CodePermissionDenied: 403, connect.CodeResourceExhausted: 429, connect.CodeFailedPrecondition: 400,
	connect.CodeAborted: 409, connect.CodeOutOfRange: 400, connect.CodeUnimplemented: 501,
	connect.CodeInternal: 500, connect.CodeUnavailable: 503, connect.CodeDataLoss: 500,
	connect.CodeUnauthenticated: 401,
}

// connFuzzServerFault reports whether an error blames the server (internal,
// unknown or data_loss): a request, however malformed, is the client's
// fault, and its answer must say what to fix.
func connFuzzServerFault(c connect.Code, msg string) error {
	switch c {
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		return fmt.Errorf("code %s (%q) for a client's request", c, msg)
	}
	return nil
}

// connFuzzCode parses a Connect error code and message: a known code
// that does not blame the server.
func connFuzzCode(s, msg string) (connect.Code, error) {
	var c connect.Code
	if err := c.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown code %q", s)
	}
	return c, connFuzzServerFault(c, msg)
}

// connFuzzGRPCStatus parses a grpc-status value, 0 to 16, and a
// grpc-message, as connFuzzCode.
func connFuzzGRPCStatus(s, msg string) (connect.Code, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > int(connect.CodeUnauthenticated) || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("grpc-status %q, want 0 to 16", s)
	}
	return connect.Code(n), connFuzzServerFault(connect.Code(n), msg)
}

// connFuzzUnmarshal decodes a response message, strictly: the server
// sends no unknown fields.
func connFuzzUnmarshal(data []byte, json bool, m proto.Message) error {
	if json {
		return protojson.Unmarshal(data, m)
	}
	return proto.Unmarshal(data, m)
}

// FuzzConnectRequest posts arbitrary bodies to the Channel and Message
// services of one real node, with net/http, in each protocol the gateway
// serves: Connect unary (JSON and binary), gRPC and gRPC-Web (binary and
// JSON), and the Connect streaming envelope (Subscribe), under odd
// compression and timeout headers. The node must not crash; every answer
// must be well formed for its protocol (decodable response messages, or a
// known error code that does not blame the server: never internal,
// unknown or data_loss);
// and afterwards GetChannel must still answer.
func FuzzConnectRequest(f *testing.F) {
	// The seeds: every procedure in every protocol, valid, then the bad
	// inputs of reliability.md 4.3.
	for pi, p := range connFuzzProcs {
		js, err := protojson.Marshal(p.req)
		if err != nil {
			f.Fatal(err)
		}
		bin, err := proto.Marshal(p.req)
		if err != nil {
			f.Fatal(err)
		}
		proc := byte(pi)
		if pi < connFuzzUnary {
			f.Add(js, proc, byte(connFuzzConnectJSON))
			f.Add(bin, proc, byte(connFuzzConnectProto))
			f.Add(js, proc, byte(connFuzzConnectJSON|connFuzzRaw))
		}
		f.Add(bin, proc, byte(connFuzzGRPC))
		f.Add(js, proc, byte(connFuzzGRPCJSON))
		f.Add(bin, proc, byte(connFuzzGRPCWeb))
		f.Add(js, proc, byte(connFuzzGRPCWebJSON))
		f.Add(connFuzzEnvelope(0, bin), proc, byte(connFuzzGRPC|connFuzzRaw))
	}
	sub := &heraldv1.SubscribeRequest{ChannelId: connFuzzChannel}
	subJS, _ := protojson.Marshal(sub)
	subBin, _ := proto.Marshal(sub)
	f.Add(subJS, byte(0), byte(connFuzzStreamJSON))
	f.Add(subBin, byte(0), byte(connFuzzStreamProto))
	f.Add(connFuzzEnvelope(0, subJS), byte(0), byte(connFuzzStreamJSON|connFuzzRaw))

	const (
		post    = 6  // PostMessage
		edit    = 7  // EditMessage
		history = 11 // GetHistory
		subIdx  = 13 // Subscribe
	)
	postBin, _ := proto.Marshal(connFuzzProcs[post].req)
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"channelId":"fuzz",}`,
		`{"channelId":"fuzz","text":"a","bogus":1}`,                    // unknown field
		`{"channelId":"fuzz","channelId":"other","text":"dup"}`,        // duplicate keys
		`{"channel_id":"fuzz","channelId":"other","text":"both"}`,      // both name forms
		`{"ChannelId":"fuzz","Text":"wrong case"}`,                     // wrong-case names
		`{"channelId":"fuzz","text":"\ud800"}`,                         // a lone surrogate
		"{\"channelId\":\"fuzz\",\"text\":\"\xff\xfe\"}",               // invalid UTF-8
		"{\"channelId\":\"fuzz\",\"text\":\"a\x00b\"}",                 // a raw NUL
		`{"channelId":"fuzz","text":"t"}garbage`,                       // trailing garbage
		`{"channelId":"fuzz","text":"t"}{"channelId":"fuzz"}`,          // two objects
		`{"channelId":"fuzz","text":"t","threadSeq":9007199254740993}`, // beyond 2^53
		`{"channelId":"fuzz","text":"t","threadSeq":18446744073709551616}`,
		`{"channelId":"fuzz","text":"t","threadSeq":-1}`,
		`{"channelId":"fuzz","text":"t","threadSeq":1e3}`,
		`{"channelId":"fuzz","text":"t","threadSeq":1.5}`,
		`{"channelId":"fuzz","text":"t","threadSeq":NaN}`,
		`{"channelId":"fuzz","text":"t","threadSeq":"NaN"}`,
		`{"channelId":"fuzz","text":"t","threadSeq":"Infinity"}`,
		`{"channelId":"fuzz","text":null,"clientMsgId":null}`,
		`{"channelId":"../etc","text":"t"}`,
		"{\"channelId\":\"fu\x00zz\",\"text\":\"t\"}",
		`{"channelId":"` + strings.Repeat("c", 1000) + `","text":"t"}`,
		`{"channelId":{"channelId":"fuzz"},"text":"t"}`,
		`{"channelId":"fuzz","text":"t","a":` + strings.Repeat(`{"a":`, 2000) + strings.Repeat(`}`, 2001), // deep nesting
		strings.Repeat(`[`, 5000),
	} {
		f.Add([]byte(s), byte(post), byte(connFuzzConnectJSON))
		f.Add([]byte(s), byte(post), byte(connFuzzGRPCWebJSON))
	}
	for _, s := range []string{
		`{"channelId":"fuzz","limit":4294967296}`, `{"channelId":"fuzz","limit":-1}`,
		`{"channelId":"fuzz","beforeSeq":"18446744073709551615","afterSeq":"1"}`,
		`{"channelId":"fuzz","limit":"NaN"}`, `{"channelId":"fuzz","stale":"yes"}`,
	} {
		f.Add([]byte(s), byte(history), byte(connFuzzConnectJSON))
	}
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	for _, b := range [][]byte{
		{0xff},       // an invalid tag
		{0x10, 0xff}, // seq: a truncated varint
		{0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // an 11-byte varint
		{0x0a, 0x02, 0xc3, 0x28},                  // channel_id: invalid UTF-8
		{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'f'}, // channel_id of 4 GiB
		{0x0a, 0x04, 'f', 'u'},                    // channel_id: shorter than its length
		{0x0b},                                    // a start group
		{0x0d, 1, 2, 3, 4},                        // channel_id as a fixed32
		append(tag(postBin, 99, protowire.VarintType), 1), // an unknown field
		append(append([]byte{}, postBin...), 0xff),        // trailing garbage
		append(append([]byte{}, postBin...), postBin...),  // fields repeated: the last wins
		protowire.AppendBytes(tag(nil, 1, protowire.BytesType), bytes.Repeat([]byte("x"), 5000)),
	} {
		f.Add(b, byte(edit), byte(connFuzzConnectProto))
		f.Add(b, byte(edit), byte(connFuzzGRPC))
		f.Add(b, byte(post), byte(connFuzzGRPCWeb))
	}
	// Envelopes sent as is.
	for _, b := range [][]byte{
		nil,
		{0},                               // a truncated prefix
		{0, 0, 0, 0, 0},                   // a zero-length message
		{0, 0xff, 0xff, 0xff, 0xff, 0x0a}, // a 4 GiB message, truncated
		{0, 0, 0, 0, 10, 0x0a},            // shorter than its length
		connFuzzEnvelope(1, postBin),      // the compressed flag, no encoding
		connFuzzEnvelope(0x04, postBin),   // an unknown flag bit
		connFuzzEnvelope(0x02, postBin),   // an end-stream flag from the client
		connFuzzEnvelope(0x80, postBin),   // a trailer flag from the client
		append(connFuzzEnvelope(0, postBin), connFuzzEnvelope(0, postBin)...), // two messages to a unary call
		append(connFuzzEnvelope(0, postBin), connFuzzEnvelope(0x02, nil)...),  // data, then end-stream
		append(connFuzzEnvelope(0x02, nil), connFuzzEnvelope(0, postBin)...),  // data after end-stream
		append(connFuzzEnvelope(0, postBin), 0xff),                            // trailing garbage
	} {
		f.Add(b, byte(post), byte(connFuzzGRPC|connFuzzRaw))
		f.Add(b, byte(post), byte(connFuzzGRPCWeb|connFuzzRaw))
		f.Add(b, byte(subIdx), byte(connFuzzGRPC|connFuzzRaw))
		f.Add(b, byte(0), byte(connFuzzStreamProto|connFuzzRaw))
	}
	// Compression and header cases.
	f.Add(postBin, byte(post), byte(connFuzzConnectProto|connFuzzRaw))       // gzipped
	f.Add(postBin, byte(post), byte(connFuzzConnectProto|connFuzzClaimGzip)) // Content-Encoding without compression
	f.Add([]byte{}, byte(post), byte(connFuzzConnectProto|connFuzzClaimGzip))
	f.Add(postBin, byte(post), byte(connFuzzGRPC|connFuzzClaimGzip)) // compressed flag, no encoding
	f.Add(postBin, byte(post), byte(connFuzzGRPCWeb|connFuzzClaimGzip))
	f.Add(subBin, byte(0), byte(connFuzzStreamProto|connFuzzClaimGzip))
	f.Add(postBin, byte(post), byte(connFuzzConnectProto|connFuzzOddHeader)) // Connect-Protocol-Version: 2
	f.Add(postBin, byte(post), byte(connFuzzGRPC|connFuzzOddHeader))         // grpc-encoding: br
	f.Add(subBin, byte(0), byte(connFuzzStreamProto|connFuzzOddHeader))
	for v := byte(1); v < 4; v++ {
		f.Add(postBin, byte(post), byte(connFuzzConnectProto)|v<<connFuzzTimeoutShift)
		f.Add(postBin, byte(post), byte(connFuzzGRPC)|v<<connFuzzTimeoutShift)
		f.Add(subBin, byte(subIdx), byte(connFuzzGRPCWeb)|v<<connFuzzTimeoutShift)
		f.Add(subBin, byte(0), byte(connFuzzStreamProto)|v<<connFuzzTimeoutShift)
	}

	// One node for every input: auth off, one channel with a message and
	// a reply.
	n := startNode(f, nodeOptions{})
	setup, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.Channels.CreateChannel(setup, &heraldv1.CreateChannelRequest{ChannelId: connFuzzChannel}); err != nil {
		f.Fatalf("CreateChannel(%q): %v", connFuzzChannel, err)
	}
	for _, req := range []*heraldv1.PostMessageRequest{
		{ChannelId: connFuzzChannel, Text: "first"},
		{ChannelId: connFuzzChannel, Text: "reply", ThreadSeq: 1},
	} {
		if _, err := n.Messages.PostMessage(setup, req); err != nil {
			f.Fatalf("PostMessage(%v): %v", req, err)
		}
	}
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: p}}
	f.Cleanup(func() {
		h1.CloseIdleConnections()
		h2.CloseIdleConnections()
	})

	f.Fuzz(func(t *testing.T, data []byte, procSel, mode byte) {
		if len(data) > 2<<20 {
			t.Skip()
		}
		protocol := mode & connFuzzProtoMask
		timeout := connFuzzTimeouts[mode>>connFuzzTimeoutShift]
		stream := protocol == connFuzzStreamJSON || protocol == connFuzzStreamProto
		envelope := protocol >= connFuzzGRPC
		jsonCodec := protocol == connFuzzConnectJSON || protocol == connFuzzGRPCJSON ||
			protocol == connFuzzGRPCWebJSON || protocol == connFuzzStreamJSON
		var proc connFuzzProc
		switch {
		case stream:
			proc = connFuzzProcs[len(connFuzzProcs)-1]
		case envelope:
			proc = connFuzzProcs[int(procSel)%len(connFuzzProcs)]
		default:
			proc = connFuzzProcs[int(procSel)%connFuzzUnary]
		}
		streaming := proc.path == heraldv1connect.MessageServiceSubscribeProcedure
		if mode>>connFuzzTimeoutShift == 0 && !streaming {
			timeout = [2]string{}
		}

		body := data
		header := http.Header{}
		switch {
		case envelope && mode&connFuzzRaw == 0:
			var flags byte
			if mode&connFuzzClaimGzip != 0 {
				flags = 1
			}
			body = connFuzzEnvelope(flags, data)
		case !envelope && mode&connFuzzRaw != 0:
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(data) // a bytes.Buffer does not fail
			_ = zw.Close()
			body = buf.Bytes()
			header.Set("Content-Encoding", "gzip")
		case !envelope && mode&connFuzzClaimGzip != 0:
			header.Set("Content-Encoding", "gzip")
		}
		client := h1
		switch protocol {
		case connFuzzConnectJSON:
			header.Set("Content-Type", "application/json")
		case connFuzzConnectProto:
			header.Set("Content-Type", "application/proto")
		case connFuzzGRPC, connFuzzGRPCJSON:
			client = h2
			header.Set("Content-Type", "application/grpc")
			if protocol == connFuzzGRPCJSON {
				header.Set("Content-Type", "application/grpc+json")
			}
			header.Set("Te", "trailers")
		case connFuzzGRPCWeb:
			header.Set("Content-Type", "application/grpc-web+proto")
		case connFuzzGRPCWebJSON:
			header.Set("Content-Type", "application/grpc-web+json")
		case connFuzzStreamJSON:
			header.Set("Content-Type", "application/connect+json")
		case connFuzzStreamProto:
			header.Set("Content-Type", "application/connect+proto")
		}
		grpcFamily := protocol >= connFuzzGRPC && protocol <= connFuzzGRPCWebJSON
		switch {
		case mode&connFuzzOddHeader == 0:
		case grpcFamily:
			header.Set("Grpc-Encoding", "br")
		case stream:
			header.Set("Connect-Content-Encoding", "br")
		default:
			header.Set("Connect-Protocol-Version", "2")
		}
		if grpcFamily && timeout[1] != "" {
			header.Set("Grpc-Timeout", timeout[1])
		} else if !grpcFamily && timeout[0] != "" {
			header.Set("Connect-Timeout-Ms", timeout[0])
		}
		what := fmt.Sprintf("POST %s %s %v (%d bytes %.300q)", proc.path, header.Get("Content-Type"), header, len(body), body)

		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL+proc.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: status %d, read body: %v", what, resp.StatusCode, err)
		}
		what += fmt.Sprintf(": status %d, headers %v, trailers %v, body %.500q", resp.StatusCode, resp.Header, resp.Trailer, got)

		var problem error
		switch {
		case protocol == connFuzzConnectJSON || protocol == connFuzzConnectProto:
			problem = connFuzzCheckUnary(resp, got, jsonCodec, proc)
		case stream:
			problem = connFuzzCheckStream(resp, got, jsonCodec, proc)
		case protocol == connFuzzGRPC || protocol == connFuzzGRPCJSON:
			problem = connFuzzCheckGRPC(resp, got, jsonCodec, proc, streaming)
		default:
			problem = connFuzzCheckGRPCWeb(resp, got, jsonCodec, proc, streaming)
		}
		if problem != nil {
			t.Fatalf("%s: %v", what, problem)
		}

		// The node still answers.
		gc, err := n.Channels.GetChannel(ctx, &heraldv1.GetChannelRequest{ChannelId: connFuzzChannel})
		if err != nil || gc.GetChannel().GetId() != connFuzzChannel {
			t.Fatalf("after %s: GetChannel(%q) = %v, %v; want the channel", what, connFuzzChannel, gc, err)
		}
	})
}

// connFuzzCheckUnary checks a Connect unary answer: 200 with a response
// message, or the status of a known code with a JSON error body.
func connFuzzCheckUnary(resp *http.Response, body []byte, jsonCodec bool, proc connFuzzProc) error {
	if resp.StatusCode == http.StatusOK {
		if err := connFuzzUnmarshal(body, jsonCodec, proc.resp()); err != nil {
			return fmt.Errorf("status 200 with a body that is not a response: %v", err)
		}
		return nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("error with Content-Type %q, want application/json", ct)
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("error body is not JSON: %v", err)
	}
	code, err := connFuzzCode(e.Code, e.Message)
	if err != nil {
		return err
	}
	if want := connFuzzHTTPStatus[code]; resp.StatusCode != want {
		return fmt.Errorf("code %v with status %d, want %d", code, resp.StatusCode, want)
	}
	return nil
}

// connFuzzCheckStream checks a Connect streaming answer: status 200, then
// response messages and one end-stream message, last.
func connFuzzCheckStream(resp *http.Response, body []byte, jsonCodec bool, proc connFuzzProc) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d, want 200", resp.StatusCode)
	}
	frames, err := connFuzzFrames(body)
	if err != nil {
		return err
	}
	if len(frames) == 0 || frames[len(frames)-1].flags != 0x02 {
		return fmt.Errorf("the stream does not end with an end-stream message")
	}
	for _, fr := range frames[:len(frames)-1] {
		if fr.flags != 0 {
			return fmt.Errorf("a message with flags %#x, want 0 before the end", fr.flags)
		}
		if err := connFuzzUnmarshal(fr.data, jsonCodec, proc.resp()); err != nil {
			return fmt.Errorf("a message that is not a response: %v", err)
		}
	}
	var end struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(frames[len(frames)-1].data, &end); err != nil {
		return fmt.Errorf("end-stream message is not JSON: %v", err)
	}
	if end.Error != nil {
		if _, err := connFuzzCode(end.Error.Code, end.Error.Message); err != nil {
			return err
		}
	}
	return nil
}

// connFuzzCheckGRPC checks a gRPC answer: status 200, a grpc-status in
// the trailers (or the headers, trailers-only), and on success the
// response messages (one, for a unary call).
func connFuzzCheckGRPC(resp *http.Response, body []byte, jsonCodec bool, proc connFuzzProc, streaming bool) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d, want 200", resp.StatusCode)
	}
	status, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if status == "" {
		status, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	code, err := connFuzzGRPCStatus(status, msg)
	if err != nil {
		return err
	}
	return connFuzzCheckMessages(body, code, jsonCodec, proc, streaming)
}

// connFuzzCheckGRPCWeb checks a gRPC-Web answer: status 200 and messages
// ended by a trailer frame with a grpc-status, or a trailers-only answer.
func connFuzzCheckGRPCWeb(resp *http.Response, body []byte, jsonCodec bool, proc connFuzzProc, streaming bool) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d, want 200", resp.StatusCode)
	}
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		code, err := connFuzzGRPCStatus(s, resp.Header.Get("Grpc-Message"))
		if err != nil {
			return err
		}
		if len(body) != 0 || code == connect.Code(0) && !streaming {
			return fmt.Errorf("a trailers-only answer with %d bytes of body and status %v", len(body), code)
		}
		return nil
	}
	frames, err := connFuzzFrames(body)
	if err != nil {
		return err
	}
	if len(frames) == 0 || frames[len(frames)-1].flags != 0x80 {
		return fmt.Errorf("the body does not end with a trailer frame")
	}
	tr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(frames[len(frames)-1].data, "\r\n"...)))).ReadMIMEHeader()
	if err != nil {
		return fmt.Errorf("trailer frame: %v", err)
	}
	code, err := connFuzzGRPCStatus(tr.Get("Grpc-Status"), tr.Get("Grpc-Message"))
	if err != nil {
		return err
	}
	return connFuzzCheckMessages(body[:len(body)-5-len(frames[len(frames)-1].data)], code, jsonCodec, proc, streaming)
}

// connFuzzCheckMessages checks the messages of a gRPC answer with status
// code: uncompressed responses, exactly one on a unary success.
func connFuzzCheckMessages(body []byte, code connect.Code, jsonCodec bool, proc connFuzzProc, streaming bool) error {
	frames, err := connFuzzFrames(body)
	if err != nil {
		return err
	}
	for _, fr := range frames {
		if fr.flags != 0 {
			return fmt.Errorf("a message with flags %#x, want 0", fr.flags)
		}
		if err := connFuzzUnmarshal(fr.data, jsonCodec, proc.resp()); err != nil {
			return fmt.Errorf("a message that is not a response: %v", err)
		}
	}
	if !streaming && code == connect.Code(0) && len(frames) != 1 {
		return fmt.Errorf("status OK with %d messages, want 1", len(frames))
	}
	return nil
}
