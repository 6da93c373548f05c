package transport

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, group := range []string{"p", "meta", "p0/1", strings.Repeat("g", MaxGroupLen)} {
		b := appendHeader(nil, group)
		b = append(b, "rest"...)
		r := bytes.NewReader(b)
		got, err := readHeader(r)
		if err != nil || got != group {
			t.Errorf("readHeader(appendHeader(%q)): got %q, %v, want %q, nil", group, got, err, group)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "rest" {
			t.Errorf("after header of %q: got %q left, want %q", group, rest, "rest")
		}
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("H"))
	f.Add([]byte{'H', 1, 0, 2, 'p', '0'})
	f.Add([]byte{'H', 1, 0, 0})
	f.Add([]byte{'H', 1, 0xff, 0xff, 'x'})
	f.Add([]byte{'H', 2, 0, 1, 'x'})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		group, err := readHeader(r)
		if err != nil {
			if group != "" {
				t.Fatalf("readHeader(%q): got group %q with error %v, want empty", data, group, err)
			}
			if len(data) >= headerFixed+MaxGroupLen && !errors.Is(err, errBadHeader) {
				t.Fatalf("readHeader(%q): got %v, want %v for a complete input", data, err, errBadHeader)
			}
			return
		}
		if !validGroup(group) {
			t.Fatalf("readHeader(%q): got invalid group %q", data, group)
		}
		consumed := len(data) - r.Len()
		if want := appendHeader(nil, group); !bytes.Equal(data[:consumed], want) {
			t.Fatalf("readHeader(%q): consumed %q, want %q", data, data[:consumed], want)
		}
	})
}
