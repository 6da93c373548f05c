package transport_test

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/transport"
)

func raftAddr(m *transport.Mux) raft.ServerAddress {
	return raft.ServerAddress(m.Addr().String())
}

func TestRouting(t *testing.T) {
	a := newMux(t, transport.Config{})
	b := newMux(t, transport.Config{})
	layers := map[*transport.Mux]map[string]*transport.Layer{}
	for _, m := range []*transport.Mux{a, b} {
		layers[m] = map[string]*transport.Layer{}
		for _, g := range []string{"meta", "p0"} {
			layers[m][g] = newLayer(t, m, g)
		}
	}
	tests := []struct {
		name     string
		from, to *transport.Mux
		group    string
	}{
		{"a to b meta", a, b, "meta"},
		{"a to b p0", a, b, "p0"},
		{"b to a meta", b, a, "meta"},
		{"b to a p0", b, a, "p0"},
		{"a to itself p0", a, a, "p0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := dial(t, layers[tt.from][tt.group], tt.to)
			in := acceptWithin(t, layers[tt.to][tt.group], 5*time.Second)
			// The header is consumed exactly: the first bytes read are
			// the dialer's first write, both ways.
			exchange(t, out, in, "ping "+tt.group)
			exchange(t, in, out, "pong "+tt.group)
		})
	}
	for _, m := range []*transport.Mux{a, b} {
		for g, l := range layers[m] {
			if got, want := l.Addr().String(), m.Addr().String(); got != want {
				t.Errorf("layer %q Addr: got %s, want %s", g, got, want)
			}
		}
	}
}

func TestUnknownGroupClosed(t *testing.T) {
	a := newMux(t, transport.Config{})
	b := newMux(t, transport.Config{})
	known := newLayer(t, b, "p0")
	stranger := newLayer(t, a, "p9")

	conn := dial(t, stranger, b)
	waitClosed(t, conn, 5*time.Second)

	// The known group is unaffected.
	out := dial(t, newLayer(t, a, "p0"), b)
	in := acceptWithin(t, known, 5*time.Second)
	exchange(t, out, in, "still works")
}

func TestLayerClose(t *testing.T) {
	a := newMux(t, transport.Config{})
	b := newMux(t, transport.Config{})
	b1, b2 := newLayer(t, b, "p1"), newLayer(t, b, "p2")
	a1, a2 := newLayer(t, a, "p1"), newLayer(t, a, "p2")

	pending := acceptAsync(b1)
	for i := range 2 {
		if err := b1.Close(); err != nil {
			t.Fatalf("Close #%d: got %v, want nil", i+1, err)
		}
	}
	select {
	case r := <-pending:
		if !errors.Is(r.err, transport.ErrLayerClosed) {
			t.Errorf("pending Accept after Close: got %v, want %v", r.err, transport.ErrLayerClosed)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("pending Accept after Close: got no return within 5s")
	}
	if _, err := b1.Accept(); !errors.Is(err, transport.ErrLayerClosed) {
		t.Errorf("Accept after Close: got %v, want %v", err, transport.ErrLayerClosed)
	}
	if _, err := b1.Dial(raftAddr(a), time.Second); !errors.Is(err, transport.ErrLayerClosed) {
		t.Errorf("Dial after Close: got %v, want %v", err, transport.ErrLayerClosed)
	}

	// Streams for the closed group are dropped; the other group works.
	waitClosed(t, dial(t, a1, b), 5*time.Second)
	out := dial(t, a2, b)
	in := acceptWithin(t, b2, 5*time.Second)
	exchange(t, out, in, "p2 alive")

	// The group can be registered again.
	again := newLayer(t, b, "p1")
	out = dial(t, a1, b)
	in = acceptWithin(t, again, 5*time.Second)
	exchange(t, out, in, "p1 again")
}

func TestBadHeaderDropped(t *testing.T) {
	// A long handshake timeout shows that bad headers are dropped at once,
	// not when the timeout fires.
	m := newMux(t, transport.Config{HandshakeTimeout: time.Minute})
	l := newLayer(t, m, "p0")
	long := strings.Repeat("g", 256)
	tests := []struct {
		name   string
		header []byte
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"bad magic", []byte{'X', 1, 0, 2, 'p', '0'}},
		{"bad version", []byte{'H', 2, 0, 2, 'p', '0'}},
		{"zero length", []byte{'H', 1, 0, 0}},
		{"too long", append([]byte{'H', 1, 1, 0}, long...)},
		{"truncated then eof", []byte{'H', 1, 0, 9, 'p'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := rawDial(t, m)
			if _, err := conn.Write(tt.header); err != nil {
				t.Fatalf("write: %v", err)
			}
			if tt.name == "truncated then eof" {
				if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatalf("close write: %v", err)
				}
			}
			waitClosed(t, conn, 5*time.Second)
		})
	}
	out := dial(t, newLayer(t, newMux(t, transport.Config{}), "p0"), m)
	in := acceptWithin(t, l, 5*time.Second)
	exchange(t, out, in, "good")
}

func TestSilentClientDropped(t *testing.T) {
	const timeout = 300 * time.Millisecond
	m := newMux(t, transport.Config{HandshakeTimeout: timeout})
	l := newLayer(t, m, "p0")
	other := newLayer(t, newMux(t, transport.Config{}), "p0")

	start := time.Now()
	silent := rawDial(t, m)
	partial := rawDial(t, m)
	if _, err := partial.Write([]byte{'H', 1, 0, 2}); err != nil {
		t.Fatalf("write partial header: %v", err)
	}

	// Silent clients do not hold up others.
	out := dial(t, other, m)
	in := acceptWithin(t, l, 5*time.Second)
	exchange(t, out, in, "not blocked")

	for name, conn := range map[string]net.Conn{"silent": silent, "partial": partial} {
		waitClosed(t, conn, 10*time.Second)
		if elapsed := time.Since(start); elapsed < timeout {
			t.Errorf("%s client: got dropped after %v, want at least the handshake timeout %v", name, elapsed, timeout)
		}
	}
	t.Logf("silent clients dropped after %v (handshake timeout %v)", time.Since(start), timeout)

	// The accepted stream had its deadline cleared: it outlives the
	// handshake timeout.
	exchange(t, in, out, "deadline cleared")
}

// secretHandshake returns a HandshakeFunc that authenticates peers by a
// shared secret: the dialer sends it, the acceptor checks it and answers
// with one byte.
func secretHandshake(secret string) transport.HandshakeFunc {
	return func(conn net.Conn, dialing bool) error {
		if dialing {
			if _, err := conn.Write([]byte(secret)); err != nil {
				return err
			}
			var ack [1]byte
			if _, err := io.ReadFull(conn, ack[:]); err != nil {
				return fmt.Errorf("read ack: %w", err)
			}
			return nil
		}
		got := make([]byte, len(secret))
		if _, err := io.ReadFull(conn, got); err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(got, []byte(secret)) != 1 {
			return errors.New("bad secret")
		}
		_, err := conn.Write([]byte{1})
		return err
	}
}

func TestHandshakeHook(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	const wrong = "fedcba9876543210fedcba9876543210"
	server := newMux(t, transport.Config{Handshake: secretHandshake(secret), HandshakeTimeout: 500 * time.Millisecond})
	accepted := newLayer(t, server, "p0")
	friend := newLayer(t, newMux(t, transport.Config{Handshake: secretHandshake(secret)}), "p0")
	impostor := newLayer(t, newMux(t, transport.Config{Handshake: secretHandshake(wrong)}), "p0")
	anonymous := newLayer(t, newMux(t, transport.Config{}), "p0")

	if conn, err := impostor.Dial(raftAddr(server), 5*time.Second); err == nil {
		_ = conn.Close()
		t.Errorf("Dial with wrong secret: got nil error, want the handshake to fail")
	}
	// Without a hook the dialer sends no secret: the server drops the
	// stream at its handshake deadline instead of delivering it.
	waitClosed(t, dial(t, anonymous, server), 5*time.Second)

	out := dial(t, friend, server)
	in := acceptWithin(t, accepted, 5*time.Second)
	exchange(t, out, in, "friend")
	exchange(t, in, out, "welcome")
}

func TestCloseIdempotentNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	// A long handshake timeout: only Close can free the silent client.
	m, err := transport.New(transport.Config{Listener: ln, HandshakeTimeout: time.Minute, Logger: testLogger(t, 0)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l1, err := m.Layer("p1")
	if err != nil {
		t.Fatalf("Layer: %v", err)
	}
	if _, err := m.Layer("p2"); err != nil {
		t.Fatalf("Layer: %v", err)
	}
	pending := acceptAsync(l1)

	var clients []net.Conn
	// A silent client: its serve goroutine is stuck reading the header.
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	clients = append(clients, silent)
	// A stream for p1, taken by the pending Accept.
	accepted, err := l1.Dial(raftAddr(m), 5*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	clients = append(clients, accepted)
	// A stream for p2, which nobody accepts: its serve goroutine is stuck
	// in the hand-off.
	p2, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if _, err := p2.Write([]byte{'H', 1, 0, 2, 'p', '2'}); err != nil {
		t.Fatalf("write: %v", err)
	}
	clients = append(clients, p2)
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})

	if r := <-pending; r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	} else {
		_ = r.conn.Close()
	}

	for i := range 3 {
		if err := m.Close(); err != nil {
			t.Fatalf("Close #%d: got %v, want nil", i+1, err)
		}
	}
	if _, err := l1.Accept(); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Close: got %v, want %v", err, transport.ErrClosed)
	}
	if _, err := l1.Dial(raftAddr(m), time.Second); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close: got %v, want %v", err, transport.ErrClosed)
	}
	if _, err := m.Layer("p3"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Layer after Close: got %v, want %v", err, transport.ErrClosed)
	}
	if _, err := m.NewTransport("p3", nil); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("NewTransport after Close: got %v, want %v", err, transport.ErrClosed)
	}
	if _, err := net.DialTimeout("tcp", m.Addr().String(), time.Second); err == nil {
		t.Errorf("dial after Close: got nil error, want the listener closed")
	}
	for _, c := range []net.Conn{silent, p2} {
		waitClosed(t, c, 5*time.Second)
	}
	for _, c := range clients {
		_ = c.Close()
	}

	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("got %d goroutines, want at most %d as before New", n, before)
		}
		return nil
	})
}

func TestLayerErrors(t *testing.T) {
	m := newMux(t, transport.Config{})
	newLayer(t, m, "dup")
	tests := []struct {
		name  string
		group string
		want  error
	}{
		{"empty", "", transport.ErrBadGroup},
		{"too long", strings.Repeat("x", transport.MaxGroupLen+1), transport.ErrBadGroup},
		{"duplicate", "dup", transport.ErrGroupExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Layer(tt.group); !errors.Is(err, tt.want) {
				t.Errorf("Layer(%q): got %v, want %v", tt.group, err, tt.want)
			}
			if _, err := m.NewTransport(tt.group, nil); !errors.Is(err, tt.want) {
				t.Errorf("NewTransport(%q): got %v, want %v", tt.group, err, tt.want)
			}
		})
	}
	if _, err := m.Layer(strings.Repeat("x", transport.MaxGroupLen)); err != nil {
		t.Errorf("Layer(%d bytes): got %v, want nil", transport.MaxGroupLen, err)
	}
}

func TestConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	tests := []struct {
		name string
		cfg  transport.Config
		want string // substring naming the field; empty for valid
	}{
		{"valid zero durations", transport.Config{Listener: ln}, ""},
		{"valid defaults", func() transport.Config { c := transport.DefaultConfig(); c.Listener = ln; return c }(), ""},
		{"valid advertise", transport.Config{Listener: ln, Advertise: "node1.example:7000"}, ""},
		{"no listener", transport.Config{}, "Listener"},
		{"advertise no port", transport.Config{Listener: ln, Advertise: "node1"}, "Advertise"},
		{"advertise zero port", transport.Config{Listener: ln, Advertise: "node1:0"}, "Advertise"},
		{"advertise no host", transport.Config{Listener: ln, Advertise: ":7000"}, "Advertise"},
		{"advertise unspecified", transport.Config{Listener: ln, Advertise: "0.0.0.0:7000"}, "Advertise"},
		{"negative handshake", transport.Config{Listener: ln, HandshakeTimeout: -1}, "HandshakeTimeout"},
		{"negative dial", transport.Config{Listener: ln, DialTimeout: -1}, "DialTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate(%+v): got %v, want nil", tt.cfg, err)
				}
				return
			}
			if !errors.Is(err, transport.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate: got %v, want an ErrInvalidConfig naming %s", err, tt.want)
			}
			if _, err := transport.New(tt.cfg); !errors.Is(err, transport.ErrInvalidConfig) {
				t.Errorf("New: got %v, want %v", err, transport.ErrInvalidConfig)
			}
		})
	}
	if d := transport.DefaultConfig(); d.HandshakeTimeout != 5*time.Second || d.DialTimeout != 5*time.Second {
		t.Errorf("DefaultConfig: got HandshakeTimeout %v, DialTimeout %v, want 5s, 5s", d.HandshakeTimeout, d.DialTimeout)
	}
}

func TestAdvertise(t *testing.T) {
	m := newMux(t, transport.Config{Advertise: "node1.example:7000"})
	if got, want := m.Addr().String(), "node1.example:7000"; got != want {
		t.Errorf("Addr: got %s, want %s", got, want)
	}
	if got, want := newLayer(t, m, "p0").Addr().String(), "node1.example:7000"; got != want {
		t.Errorf("Layer Addr: got %s, want %s", got, want)
	}

	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	if _, err := transport.New(transport.Config{Listener: ln}); !errors.Is(err, transport.ErrNotAdvertisable) {
		t.Errorf("New on %s without Advertise: got %v, want %v", ln.Addr(), err, transport.ErrNotAdvertisable)
	}
}

func TestListenerFailureStopsMux(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	m, err := transport.New(transport.Config{Listener: ln, Logger: testLogger(t, 0)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	l, err := m.Layer("p0")
	if err != nil {
		t.Fatalf("Layer: %v", err)
	}
	_ = ln.Close() // simulate the listener failing under the Mux
	if _, err := l.Accept(); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after listener failure: got %v, want %v", err, transport.ErrClosed)
	}
}

func TestHeaderBytes(t *testing.T) {
	// The wire header is part of the protocol between versions: pin it.
	m := newMux(t, transport.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		buf := make([]byte, 6)
		_, _ = io.ReadFull(conn, buf)
		got <- buf
	}()
	conn, err := newLayer(t, m, "p7").Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	if b, want := <-got, []byte{'H', 1, 0, 2, 'p', '7'}; !bytes.Equal(b, want) {
		t.Errorf("header: got %q, want %q", b, want)
	}
}

func TestNewTransport(t *testing.T) {
	m := newMux(t, transport.Config{})
	trans, err := m.NewTransport("p0", nil)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	if got, want := trans.LocalAddr(), raftAddr(m); got != want {
		t.Errorf("LocalAddr: got %s, want %s", got, want)
	}
	if _, err := m.Layer("p0"); !errors.Is(err, transport.ErrGroupExists) {
		t.Errorf("Layer while transport open: got %v, want %v", err, transport.ErrGroupExists)
	}
	if err := trans.Close(); err != nil {
		t.Fatalf("transport Close: %v", err)
	}
	// Closing the transport frees the group.
	if _, err := m.Layer("p0"); err != nil {
		t.Errorf("Layer after transport Close: got %v, want nil", err)
	}
}

// transportPair returns two Muxes and a group p0 Transport on each, closed
// when the test ends: one to send from, one to receive on.
func transportPair(t *testing.T) (from, to *transport.Mux, sender, receiver *transport.Transport) {
	t.Helper()
	from, to = newMux(t, transport.Config{}), newMux(t, transport.Config{})
	var err error
	if sender, err = from.NewTransport("p0", nil); err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { sender.Close() })
	if receiver, err = to.NewTransport("p0", nil); err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { receiver.Close() })
	return from, to, sender, receiver
}

// TestHeartbeatGate sends heartbeats between two Transports: a heartbeat
// takes raft's fast-path handler only when the gate accepts its term, and
// otherwise arrives on the consumer channel like every other RPC (see
// Transport); with no gate set, every heartbeat takes the consumer.
func TestHeartbeatGate(t *testing.T) {
	from, to, sender, receiver := transportPair(t)
	fastPath := make(chan raft.RPC, 1)
	receiver.SetHeartbeatHandler(func(rpc raft.RPC) { fastPath <- rpc })

	send := func(term uint64) (viaFastPath bool) {
		t.Helper()
		heartbeat := &raft.AppendEntriesRequest{Term: term, RPCHeader: raft.RPCHeader{
			ID: []byte("n1"), Addr: sender.EncodePeer("n1", raftAddr(from))}}
		done := make(chan error, 1)
		go func() {
			var resp raft.AppendEntriesResponse
			done <- sender.AppendEntries("n2", raftAddr(to), heartbeat, &resp)
		}()
		var rpc raft.RPC
		select {
		case rpc = <-receiver.Consumer():
		case rpc = <-fastPath:
			viaFastPath = true
		case <-time.After(10 * time.Second):
			t.Fatalf("heartbeat of term %d not delivered within 10s", term)
		}
		if req, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok || req.Term != term {
			t.Errorf("got %#v, want the heartbeat of term %d", rpc.Command, term)
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: term, Success: true}, nil)
		if err := <-done; err != nil {
			t.Errorf("AppendEntries: %v", err)
		}
		return viaFastPath
	}
	if send(7) {
		t.Error("heartbeat without a gate took the fast path, want the consumer channel")
	}
	receiver.GateHeartbeats(func(term uint64) bool { return term == 7 })
	if !send(7) {
		t.Error("heartbeat the gate accepts arrived on the consumer channel, want the fast path")
	}
	if send(8) {
		t.Error("heartbeat of a term the gate refuses took the fast path, want the consumer channel")
	}
}

// TestHoldNudges sends commit nudges (no entries, previous entry = commit
// index) between two Transports: one naming an entry the receiver's log
// holds arrives at once; one naming an entry past it waits until the log
// reaches it; one whose entry never comes arrives after the wait's bound,
// for Raft to refuse; an AppendEntries of another shape is never held.
func TestHoldNudges(t *testing.T) {
	from, to, sender, receiver := transportPair(t)
	var last atomic.Uint64
	last.Store(10)
	receiver.HoldNudges(last.Load)

	// send sends req and returns the channel its delivery arrives on.
	send := func(req *raft.AppendEntriesRequest) <-chan raft.RPC {
		req.Term, req.RPCHeader = 3, raft.RPCHeader{ID: []byte("n1"), Addr: sender.EncodePeer("n1", raftAddr(from))}
		go func() {
			var resp raft.AppendEntriesResponse
			_ = sender.AppendEntries("n2", raftAddr(to), req, &resp) // checked by its delivery
		}()
		got := make(chan raft.RPC, 1)
		go func() {
			rpc := <-receiver.Consumer()
			rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: true}, nil)
			got <- rpc
		}()
		return got
	}
	within := func(got <-chan raft.RPC, d time.Duration) bool {
		t.Helper()
		select {
		case <-got:
			return true
		case <-time.After(d):
			return false
		}
	}
	nudge := func(c uint64) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{PrevLogEntry: c, PrevLogTerm: 3, LeaderCommitIndex: c}
	}

	if !within(send(nudge(10)), 5*time.Second) {
		t.Fatal("nudge naming entry 10 of a log at 10 not delivered within 5s")
	}
	ahead := send(nudge(12))
	if within(ahead, 30*time.Millisecond) {
		t.Fatal("nudge naming entry 12 of a log at 10 delivered at once, want it held")
	}
	last.Store(12)
	if !within(ahead, 5*time.Second) {
		t.Fatal("nudge naming entry 12 not delivered within 5s of the log reaching 12")
	}
	start := time.Now()
	if !within(send(nudge(20)), 5*time.Second) {
		t.Fatal("nudge naming entry 20 of a log at 12 still held after 5s, want it delivered after its bound")
	}
	t.Logf("nudge naming an entry that never came delivered after %v", time.Since(start).Round(time.Millisecond))
	other := &raft.AppendEntriesRequest{PrevLogEntry: 20, PrevLogTerm: 3, LeaderCommitIndex: 12}
	if !within(send(other), 30*time.Millisecond) {
		t.Error("AppendEntries with commit index 12 and previous entry 20 held, want it delivered at once")
	}
}

// TestDialWaitsForARefusingPeer dials a peer whose port refuses
// connections for a moment, as a restarting node's does: Dial keeps trying
// within the redial window and connects once the peer listens. Before, it
// failed at once, and hashicorp/raft's per-failure backoff then left a
// peer that was down for a while unreplicated for up to ten seconds after
// it came back.
func TestDialWaitsForARefusingPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	from := newLayer(t, newMux(t, transport.Config{}), "p0")
	up := make(chan *transport.Layer, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // the peer's restart
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen again on %s: %v", addr, err)
			up <- nil
			return
		}
		up <- newLayer(t, newMux(t, transport.Config{Listener: ln}), "p0")
	}()
	begin := time.Now()
	conn, err := from.Dial(raft.ServerAddress(addr), 10*time.Second)
	if err != nil {
		t.Fatalf("Dial while the peer restarts: %v", err)
	}
	defer conn.Close()
	t.Logf("connected %v after the first dial", time.Since(begin).Round(time.Millisecond))
	if to := <-up; to != nil {
		acceptWithin(t, to, 5*time.Second).Close()
	}

	// Once the transport is told its Raft instance is stopping, a dial
	// waits no more: raft's Shutdown waits for its goroutines.
	m := newMux(t, transport.Config{})
	trans, err := m.NewTransport("p1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	dialed := make(chan error, 1)
	go func() {
		dialed <- trans.AppendEntries("n9", raft.ServerAddress(freeAddr(t)),
			&raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{})
	}()
	time.Sleep(200 * time.Millisecond) // the dial is waiting for the peer
	trans.Stopping()
	select {
	case err := <-dialed:
		if err == nil {
			t.Error("AppendEntries to a closed port: got nil error")
		}
	case <-time.After(5 * time.Second):
		t.Error("dial still waiting 5s after Stopping, want it to give up")
	}

	// Off, a refused dial fails at once.
	off := newLayer(t, newMux(t, transport.Config{RedialWindow: -1}), "p0")
	if _, err := off.Dial(raft.ServerAddress(freeAddr(t)), 10*time.Second); err == nil {
		t.Error("Dial to a closed port with the redial window off: got a connection, want an error")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
