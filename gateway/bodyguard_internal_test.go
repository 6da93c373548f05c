package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"connectrpc.com/connect"
)

// TestBodyGuard reads enveloped bodies through bodyGuard whole and one
// byte at a time: good ones pass unchanged, bad ones end in an
// invalid_argument error, and a bad prefix never reaches the reader whole.
func TestBodyGuard(t *testing.T) {
	env := func(flags byte, msg string) string {
		return string([]byte{flags, 0, 0, 0, byte(len(msg))}) + msg
	}
	for _, tc := range []struct {
		name, body string
		encoding   string // Grpc-Encoding
		want       string // in the error; "" = none
		badAt      int    // where a bad prefix starts, if any
	}{
		{"two messages", env(0, "ab") + env(0, ""), "", "", -1},
		{"compressed with an encoding", env(1, "zz"), "gzip", "", -1},
		{"empty", "", "", "", -1},
		{"cut in the prefix", env(0, "ab")[:3], "", "ends 3 bytes into a 5-byte envelope prefix", -1},
		{"cut in the message", env(0, "abcd")[:6], "", "ends 3 bytes short", -1},
		{"cut in the second prefix", env(0, "ab") + "\x00\x00", "", "ends 2 bytes into", -1},
		{"end-stream flag", env(0, "ab") + env(2, "x"), "", "flags 0x02", 7},
		{"trailer flag", env(0x80, ""), "", "flags 0x80", 0},
		{"compressed without an encoding", env(1, ""), "", "names no encoding", 0},
		{"compressed with identity", env(1, "x"), "identity", "names no encoding", 0},
	} {
		for _, oneByte := range []bool{false, true} {
			r := &http.Request{Header: http.Header{"Content-Type": {"application/grpc"}}}
			if tc.encoding != "" {
				r.Header.Set("Grpc-Encoding", tc.encoding)
			}
			var src io.Reader = strings.NewReader(tc.body)
			if oneByte {
				src = iotest.OneByteReader(src)
			}
			g := newBodyGuard(io.NopCloser(src), r, time.Second)
			got, err := io.ReadAll(g)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s (one byte %v): got %v, want no error", tc.name, oneByte, err)
			case tc.want == "" && string(got) != tc.body:
				t.Errorf("%s (one byte %v): read %q, want %q", tc.name, oneByte, got, tc.body)
			case tc.want != "" && (connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s (one byte %v): got %v, want invalid_argument with %q", tc.name, oneByte, err, tc.want)
			case !strings.HasPrefix(tc.body, string(got)):
				t.Errorf("%s (one byte %v): read %q, not the start of the body", tc.name, oneByte, got)
			case tc.badAt >= 0 && len(got) >= tc.badAt+5:
				t.Errorf("%s (one byte %v): read %q, past the bad prefix at %d", tc.name, oneByte, got, tc.badAt)
			}
		}
	}
}
