package gateway

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// frameSeeds holds one frame of every kind, as a client would send them.
func frameSeeds() []*heraldv1.ClientFrame {
	after := uint64(7)
	zero := uint64(0)
	return []*heraldv1.ClientFrame{
		{Id: "a1", Kind: &heraldv1.ClientFrame_Auth{Auth: &heraldv1.Auth{Token: "tok.en.x"}}},
		{Kind: &heraldv1.ClientFrame_Auth{Auth: &heraldv1.Auth{}}},
		{Id: "s1", Kind: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeRequest{ChannelId: "general"}}},
		{Id: "s2", Kind: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeRequest{ChannelId: "general", AfterSeq: &after}}},
		{Id: "s3", Kind: &heraldv1.ClientFrame_Subscribe{Subscribe: &heraldv1.SubscribeRequest{ChannelId: "general", AfterSeq: &zero}}},
		{Id: "u1", Kind: &heraldv1.ClientFrame_Unsubscribe{Unsubscribe: &heraldv1.Unsubscribe{ChannelId: "general"}}},
		{Id: "p1", Kind: &heraldv1.ClientFrame_Post{Post: &heraldv1.PostMessageRequest{
			ChannelId: "general", Text: "héllo ✓", ClientMsgId: "c-1", ThreadSeq: 3}}},
		{Id: "t1", Kind: &heraldv1.ClientFrame_Typing{Typing: &heraldv1.Typing{ChannelId: "general"}}},
		{Id: strings.Repeat("x", maxFrameIDLen), Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}},
		{Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}},
	}
}

// withUnknown appends an unknown field (number 99) to an encoded message.
func withUnknown(b []byte) []byte {
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, fr := range frameSeeds() {
		js, err := protojson.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js, false)
		snake, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(snake, false)
		bin, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bin, true)
		f.Add(withUnknown(bin), true)
		f.Add(js, true)   // JSON bytes as binary
		f.Add(bin, false) // binary bytes as JSON
	}
	// A subscribe frame whose SubscribeRequest carries an unknown field.
	sub := protowire.AppendTag(withUnknown(nil), 1, protowire.BytesType)
	sub = protowire.AppendString(sub, "general")
	nested := protowire.AppendTag(nil, 11, protowire.BytesType)
	nested = protowire.AppendBytes(nested, sub)
	f.Add(nested, true)
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"ping"`, `{"ping":null}`, `{"id":"x"}`,
		`{"id":"x","ping":{}`, `{"id":"x","ping":{},"bogus":1}`,
		`{"subscribe":{"channelId":"general","bogus":true}}`,
		`{"id":"x","shout":{}}`, `{"ping":{},"typing":{"channelId":"a"}}`,
		`{"id":"` + strings.Repeat("i", maxFrameIDLen+1) + `","ping":{}}`,
		`{"id":"\ud800","ping":{}}`, "{\"id\":\"\xff\",\"ping\":{}}",
		`{"subscribe":{"channelId":"a","afterSeq":"18446744073709551616"}}`,
		`{"subscribe":{"channelId":"a","afterSeq":-1}}`,
		`{"subscribe":{"channelId":"a","afterSeq":1e3}}`,
		`{"post":{"channel_id":"a","text":"t","channelId":"b"}}`,
	} {
		f.Add([]byte(s), false)
	}
	for _, b := range [][]byte{
		nil, {0xff}, {0x0a, 0xff}, {0x82, 0x01, 0x00}, {0x7a, 0x00, 0x7a, 0x00},
		{0x0a, 0x02, 0xc3, 0x28, 0x7a, 0x00}, // id is not UTF-8
	} {
		f.Add(b, true)
	}

	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		fr, err := decodeClientFrame(data, binary)
		if (fr == nil) == (err == nil) {
			t.Fatalf("decode %q (binary %v): got frame %v and error %v, want exactly one", data, binary, fr, err)
		}
		if err != nil {
			if !errors.Is(err, errFrame) {
				t.Fatalf("decode %q (binary %v): got error %v, want one wrapping errFrame", data, binary, err)
			}
			return
		}
		if fr.GetKind() == nil {
			t.Fatalf("decode %q (binary %v): got frame %v without a kind, want an error", data, binary, fr)
		}
		if len(fr.GetId()) > maxFrameIDLen {
			t.Fatalf("decode %q (binary %v): got id of %d bytes, want at most %d", data, binary, len(fr.GetId()), maxFrameIDLen)
		}
		// Re-encoded in either form, the frame decodes to itself.
		for _, form := range []bool{binary, !binary} {
			var b []byte
			if form {
				b, err = proto.Marshal(fr)
			} else {
				b, err = protojson.Marshal(fr)
			}
			if err != nil {
				t.Fatalf("re-encode %v (binary %v): %v", fr, form, err)
			}
			again, err := decodeClientFrame(b, form)
			if err != nil {
				t.Fatalf("decode %q, re-encoded as binary=%v from %q: %v", b, form, data, err)
			}
			if !proto.Equal(fr, again) {
				t.Fatalf("round trip through binary=%v of %q: got %v, want %v", form, data, again, fr)
			}
		}
	})
}

// Unknown fields are rejected in both forms and at any depth, so a client
// learns at once that it sent something this server does not understand.
func TestFrameRejectsUnknownFields(t *testing.T) {
	sub, err := proto.Marshal(&heraldv1.SubscribeRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	nested := protowire.AppendTag(nil, 11, protowire.BytesType) // ClientFrame.subscribe
	nested = protowire.AppendBytes(nested, withUnknown(sub))
	ping, err := proto.Marshal(&heraldv1.ClientFrame{Kind: &heraldv1.ClientFrame_Ping{Ping: &heraldv1.Ping{}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		data   []byte
		binary bool
	}{
		{"json top level", []byte(`{"ping":{},"bogus":1}`), false},
		{"json nested", []byte(`{"subscribe":{"channelId":"general","bogus":1}}`), false},
		{"binary top level", withUnknown(ping), true},
		{"binary nested", nested, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr, err := decodeClientFrame(tt.data, tt.binary)
			if err == nil {
				t.Fatalf("decode %q (binary %v): got frame %v, want an unknown-field error", tt.data, tt.binary, fr)
			}
		})
	}
}
