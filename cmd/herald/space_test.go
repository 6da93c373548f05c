package main

import "testing"

func TestByteSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"4096", 4096, true}, {"512MiB", 512 << 20, true}, {"1GiB", 1 << 30, true},
		{"1.5gib", 3 << 29, true}, {"2 GB", 2e9, true}, {"10kb", 10000, true}, {"100B", 100, true},
		{"", 0, false}, {"-1GiB", 0, false}, {"1XB", 0, false}, {"GiB", 0, false}, {"1e30TiB", 0, false},
	} {
		var b byteSize
		err := b.Set(tt.in)
		if (err == nil) != tt.ok || (tt.ok && int64(b) != tt.want) {
			t.Errorf("Set(%q): got %d, %v; want %d, ok %v", tt.in, b, err, tt.want, tt.ok)
		}
	}
	for _, tt := range []struct {
		in   byteSize
		want string
	}{{0, "0"}, {1 << 30, "1GiB"}, {512 << 20, "512MiB"}, {1000, "1000"}} {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("String(%d): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
