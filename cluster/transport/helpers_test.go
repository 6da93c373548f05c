package transport_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/transport"
)

// testLogger returns a logger writing to t.Output() at level.
func testLogger(t *testing.T, level slog.Level) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(testkit.Output(t), &slog.HandlerOptions{Level: level}))
}

// newMux starts a Mux on 127.0.0.1:0 (or cfg.Listener) with cfg (Logger
// filled in if nil) and closes it when the test ends.
func newMux(t *testing.T, cfg transport.Config) *transport.Mux {
	t.Helper()
	if cfg.Listener == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		cfg.Listener = ln
	}
	ln := cfg.Listener
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t, slog.LevelDebug)
	}
	m, err := transport.New(cfg)
	if err != nil {
		_ = ln.Close()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// newLayer registers group on m.
func newLayer(t *testing.T, m *transport.Mux, group string) *transport.Layer {
	t.Helper()
	l, err := m.Layer(group)
	if err != nil {
		t.Fatalf("Layer(%q): %v", group, err)
	}
	return l
}

type acceptResult struct {
	conn net.Conn
	err  error
}

// acceptAsync calls l.Accept in a goroutine and returns a channel with its
// result. The goroutine exits when Accept returns, at the latest when the
// Mux is closed.
func acceptAsync(l *transport.Layer) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		conn, err := l.Accept()
		ch <- acceptResult{conn, err}
	}()
	return ch
}

// acceptWithin returns the next connection accepted by l, failing the test
// if there is none within d. The connection is closed when the test ends.
func acceptWithin(t *testing.T, l *transport.Layer, d time.Duration) net.Conn {
	t.Helper()
	select {
	case r := <-acceptAsync(l):
		if r.err != nil {
			t.Fatalf("Accept on %q: %v", l.Group(), r.err)
		}
		t.Cleanup(func() { _ = r.conn.Close() })
		return r.conn
	case <-time.After(d):
		t.Fatalf("Accept on %q: got nothing within %v", l.Group(), d)
		return nil
	}
}

// dial opens a stream from l to m and closes it when the test ends.
func dial(t *testing.T, l *transport.Layer, m *transport.Mux) net.Conn {
	t.Helper()
	conn, err := l.Dial(raftAddr(m), 5*time.Second)
	if err != nil {
		t.Fatalf("Dial %q to %s: %v", l.Group(), m.Addr(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rawDial opens a plain TCP connection to m and closes it when the test
// ends.
func rawDial(t *testing.T, m *transport.Mux) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", m.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", m.Addr(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitClosed waits up to d for the peer to close conn, failing the test if
// conn yields data or stays open.
func waitClosed(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatalf("set read deadline: %v", err)
	}
	var b [1]byte
	n, err := conn.Read(b[:])
	var ne net.Error
	switch {
	case n > 0:
		t.Fatalf("read: got %d bytes, want the connection closed", n)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("read: got no close within %v, want the connection closed", d)
	case err == nil:
		t.Fatalf("read: got no error, want the connection closed")
	}
}

// exchange writes msg on from and checks that to reads exactly msg.
func exchange(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	if err := to.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatalf("set read deadline: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(to, buf); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if got := string(buf); got != msg {
		t.Fatalf("read: got %q, want %q", got, msg)
	}
	if err := to.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("clear read deadline: %v", err)
	}
}
