package loopback

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestFreePortsBelowEphemeralRange(t *testing.T) {
	lo, hi := reservedRange()
	addrs, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s returned twice in %v", a, addrs)
		}
		seen[a] = true
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		if host != "127.0.0.1" || p < lo || p >= hi {
			t.Fatalf("%s: want 127.0.0.1 and a port in [%d, %d)", a, lo, hi)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("returned %s is not free: %v", a, err)
		}
		l.Close()
	}
	// A port the kernel hands out for ":0" is never among them.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	if p, _ := strconv.Atoi(port); p >= lo && p < hi {
		t.Fatalf("the kernel handed out %d for :0, inside the range FreePorts picks from [%d, %d)", p, lo, hi)
	}
}

// TestHoldPort keeps a free port from a listener and refuses connections
// to it until released; then the port can be listened on again.
func TestHoldPort(t *testing.T) {
	addrs, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	h, err := HoldPort(addrs[0])
	if err != nil {
		t.Fatalf("HoldPort(%s): %v", addrs[0], err)
	}
	if l, err := net.Listen("tcp", addrs[0]); err == nil {
		l.Close()
		t.Fatalf("Listen on held %s succeeded, want address in use", addrs[0])
	}
	if c, err := net.DialTimeout("tcp", addrs[0], 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("dial to held %s connected, want refused", addrs[0])
	}
	h.Release()
	h.Release() // twice is harmless
	l, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatalf("Listen on %s after Release: %v", addrs[0], err)
	}
	l.Close()
	if _, err := HoldPort("localhost"); err == nil {
		t.Error("HoldPort without a port succeeded, want an error")
	}
}
