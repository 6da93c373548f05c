package faultnet_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/faultnet"
)

// echo serves lines back, upper-cased, until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(strings.ToUpper(line))); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

// ask sends a line and waits up to wait for the answer; "" means none came.
func (c *client) ask(t *testing.T, line string, wait time.Duration) string {
	t.Helper()
	if _, err := c.c.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	return c.answer(t, wait)
}

func (c *client) answer(t *testing.T, wait time.Duration) string {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(wait))
	got, err := c.r.ReadString('\n')
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return ""
		}
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSpace(got)
}

// TestFaults drives one proxied connection through each fault: traffic
// stops while the fault holds (no answer within a short wait), and what
// was held arrives whole once the fault heals.
func TestFaults(t *testing.T) {
	n := faultnet.New()
	defer n.Close()
	addr, err := n.Proxy("a", "b", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	const quiet = 200 * time.Millisecond // long enough to see nothing pass on loopback
	if got := c.ask(t, "hello", 5*time.Second); got != "HELLO" {
		t.Fatalf("through the proxy: got %q, want HELLO", got)
	}
	for _, tc := range []struct {
		name  string
		fault func()
	}{
		{"cut a→b", func() { n.Cut("a", "b") }},
		{"partition", func() { n.Partition("a", "b") }},
		{"stall a→b", func() { n.Stall("a", "b") }},
		{"stall b→a", func() { n.Stall("b", "a") }},
	} {
		tc.fault()
		if got := c.ask(t, tc.name, quiet); got != "" {
			t.Errorf("%s (%s): got %q through the fault, want nothing", tc.name, n, got)
		}
		n.Heal()
		if got := c.answer(t, 5*time.Second); got != strings.ToUpper(tc.name) {
			t.Errorf("%s healed: got %q, want the held %q", tc.name, got, strings.ToUpper(tc.name))
		}
	}

	// A cut is one way: connections b opens to a still work.
	back, err := n.Proxy("b", "a", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	n.Cut("a", "b")
	fresh := dial(t, addr)
	if got := fresh.ask(t, "new", quiet); got != "" {
		t.Errorf("new connection across the cut: got %q, want nothing", got)
	}
	if got := dial(t, back).ask(t, "other way", 5*time.Second); got != "OTHER WAY" {
		t.Errorf("b→a while a→b is cut: got %q, want OTHER WAY", got)
	}
	n.Heal()
	if got := fresh.answer(t, 5*time.Second); got != "NEW" {
		t.Errorf("new connection healed: got %q, want NEW", got)
	}

	n.Delay("a", "b", 300*time.Millisecond)
	begin := time.Now()
	if got := c.ask(t, "slow", 5*time.Second); got != "SLOW" {
		t.Errorf("delayed: got %q, want SLOW", got)
	}
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Errorf("delayed round trip took %v, want at least the 300ms delay", took)
	}
}

// TestUndoOneFault heals one fault of a link at a time: the others stay.
func TestUndoOneFault(t *testing.T) {
	n := faultnet.New()
	defer n.Close()
	addr, err := n.Proxy("a", "b", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	const quiet = 200 * time.Millisecond
	if got := c.ask(t, "hello", 5*time.Second); got != "HELLO" {
		t.Fatalf("through the proxy: got %q, want HELLO", got)
	}
	n.Cut("a", "b")
	n.Stall("b", "a")
	if got := c.ask(t, "held", quiet); got != "" {
		t.Fatalf("cut and stalled (%s): got %q, want nothing", n, got)
	}
	n.Uncut("a", "b")
	if got := c.answer(t, quiet); got != "" {
		t.Errorf("uncut, still stalled b→a (%s): got %q, want nothing", n, got)
	}
	n.Unstall("b", "a")
	if got := c.answer(t, 5*time.Second); got != "HELD" {
		t.Errorf("unstalled (%s): got %q, want the held HELD", n, got)
	}
	n.Delay("a", "b", time.Second)
	n.Delay("a", "b", 0)
	if s := n.String(); s != "no faults" {
		t.Errorf("after Delay 0: got faults %q, want none", s)
	}
}
