package transport

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/raftlog"
)

// Settings of the raft.NetworkTransport built by NewTransport.
const (
	transportMaxPool = 2
	transportTimeout = 10 * time.Second
)

// Accept-loop backoff after transient listener errors.
const (
	acceptBaseDelay = 5 * time.Millisecond
	acceptMaxDelay  = time.Second
)

// Mux routes the connections of one listener to per-group Layers.
//
// Its state is guarded by mu. It owns the accept-loop goroutine and one
// goroutine per connection in its handshake, all started in New or by the
// accept loop, stopped by Close (which closes the listener, closes every
// connection still in its handshake and closes done) and waited for by
// Close through wg.
type Mux struct {
	cfg  Config // immutable after New, defaults applied
	ln   net.Listener
	addr net.Addr
	log  *slog.Logger
	done chan struct{} // closed when the Mux shuts down
	wg   sync.WaitGroup

	// guards following
	mu      sync.Mutex
	closed  bool
	layers  map[string]*Layer
	pending map[net.Conn]struct{} // accepted, header not yet handled
}

// New starts a Mux on cfg.Listener and returns it; Close stops it. It
// returns an error wrapping ErrInvalidConfig if cfg is invalid, or
// ErrNotAdvertisable; on error the listener is left open.
func New(cfg Config) (*Mux, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var addr net.Addr
	if cfg.Advertise != "" {
		addr = advertiseAddr(cfg.Advertise)
	} else {
		addr = cfg.Listener.Addr()
		if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP == nil || tcp.IP.IsUnspecified()) {
			return nil, fmt.Errorf("%w: %s", ErrNotAdvertisable, addr)
		}
	}
	m := &Mux{
		cfg:     cfg,
		ln:      cfg.Listener,
		addr:    addr,
		log:     cfg.Logger,
		done:    make(chan struct{}),
		layers:  make(map[string]*Layer),
		pending: make(map[net.Conn]struct{}),
	}
	m.wg.Go(m.acceptLoop)
	return m, nil
}

// Addr returns the address peers dial to reach this Mux: Config.Advertise
// if set, else the listener's address. It is safe to call at any time.
func (m *Mux) Addr() net.Addr { return m.addr }

// Layer registers group and returns its Layer. Connections whose header
// names group are delivered to the Layer's Accept until the Layer or the
// Mux is closed; closing the Layer frees group for a new registration.
//
// It returns ErrBadGroup for an empty or over-long group, ErrGroupExists if
// group already has an open Layer, and ErrClosed after Close. Safe for
// concurrent use.
func (m *Mux) Layer(group string) (*Layer, error) {
	if !validGroup(group) {
		return nil, fmt.Errorf("%w: got %d bytes", ErrBadGroup, len(group))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if _, ok := m.layers[group]; ok {
		return nil, fmt.Errorf("%w: %q", ErrGroupExists, group)
	}
	l := &Layer{
		mux:      m,
		group:    group,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		noRedial: make(chan struct{}),
	}
	m.layers[group] = l
	return l, nil
}

// NewTransport registers group, as Layer does, and returns a Transport: a
// raft.NetworkTransport over its Layer with a pool of 2 connections per
// peer and a 10 s I/O timeout, whose heartbeats take the fast path only
// when they cannot change the term (see Transport). Closing the transport closes the Layer. A nil
// logger logs through Config.Logger. It returns the errors of Layer.
func (m *Mux) NewTransport(group string, logger hclog.Logger) (*Transport, error) {
	l, err := m.Layer(group)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = raftlog.New(m.log).Named("raft-net").With("group", group)
	}
	return newTransport(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  l,
		MaxPool: transportMaxPool,
		Timeout: transportTimeout,
		// 1 turns raft's pipelined replication off. With pipelining, a
		// follower's reply that ends the pipeline while another request is
		// in flight can block the sender for good (hashicorp/raft#612): the
		// follower then gets heartbeats but no entries, and Shutdown hangs.
		MaxRPCsInFlight:       1,
		ServerAddressProvider: m.cfg.AddressProvider,
		Logger:                logger,
	}), l), nil
}

// Close closes the listener, every Layer and every connection still in its
// handshake, then waits for the Mux's goroutines to exit. Connections
// already returned by Accept or Dial are left to their owners. It is
// idempotent: the first call returns the listener's close error, if any,
// and later calls return nil.
func (m *Mux) Close() error {
	err := m.shutdown()
	m.wg.Wait()
	return err
}

// shutdown stops the Mux without waiting for its goroutines, so the accept
// loop may call it. Only the first call does anything.
func (m *Mux) shutdown() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	layers, pending := m.layers, m.pending
	m.layers, m.pending = nil, nil
	m.mu.Unlock()

	err := m.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	for conn := range pending {
		_ = conn.Close() // best effort: the conn is being abandoned
	}
	for _, l := range layers {
		l.markClosed()
	}
	return err
}

// acceptLoop accepts connections until the listener fails for good or the
// Mux shuts down, starting one serve goroutine per connection. Transient
// accept errors are retried with backoff.
func (m *Mux) acceptLoop() {
	var delay time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				m.log.Error("raft listener closed; stopping mux", "err", err)
				_ = m.shutdown() // the listener is already closed
				return
			}
			delay = min(max(2*delay, acceptBaseDelay), acceptMaxDelay)
			m.log.Warn("accept raft connection", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-m.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		if !m.track(conn) {
			_ = conn.Close() // the Mux is shutting down
			return
		}
		m.wg.Go(func() { m.serve(conn) })
	}
}

// track records conn as in its handshake, so that Close can close it. It
// returns false if the Mux is closed.
func (m *Mux) track(conn net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.pending[conn] = struct{}{}
	return true
}

// untrack forgets conn and reports whether it was still tracked, that is,
// whether Close has not taken it over.
func (m *Mux) untrack(conn net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pending[conn]; !ok {
		return false
	}
	delete(m.pending, conn)
	return true
}

// serve reads conn's header, runs the handshake hook and hands conn to its
// group's Layer. It returns once conn is delivered or closed; a conn that
// is silent returns at the handshake deadline, and Close unblocks it at
// once by closing conn.
func (m *Mux) serve(conn net.Conn) {
	remote := conn.RemoteAddr().String()
	group, err := m.handshake(conn)
	if !m.untrack(conn) {
		return // Close has closed conn
	}
	if err != nil {
		m.log.Debug("drop raft connection", "remote", remote, "err", err)
		_ = conn.Close() // best effort: rejecting the peer
		return
	}
	m.mu.Lock()
	l := m.layers[group]
	m.mu.Unlock()
	if l == nil || l.refusing.Load() {
		m.log.Debug("drop raft connection for unknown or refusing group", "remote", remote, "group", group)
		_ = conn.Close() // best effort: rejecting the peer
		return
	}
	select {
	case l.conns <- conn:
	case <-l.done:
		m.log.Debug("drop raft connection for closed group", "remote", remote, "group", group)
		_ = conn.Close() // best effort: nobody will accept it
	case <-m.done:
		_ = conn.Close() // best effort: the Mux is shutting down
	}
}

// handshake reads conn's header and runs Config.Handshake under the
// handshake deadline, then clears the deadline. It returns the group.
func (m *Mux) handshake(conn net.Conn) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout)); err != nil {
		return "", fmt.Errorf("set handshake deadline: %w", err)
	}
	group, err := readHeader(conn)
	if err != nil {
		return "", err
	}
	if m.cfg.Handshake != nil {
		if err := m.cfg.Handshake(conn, false); err != nil {
			return "", fmt.Errorf("handshake for group %q: %w", group, err)
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return "", fmt.Errorf("clear handshake deadline: %w", err)
	}
	return group, nil
}

// advertiseAddr is a net.Addr for Config.Advertise.
type advertiseAddr string

// Network implements net.Addr.
func (a advertiseAddr) Network() string { return "tcp" }

// String implements net.Addr.
func (a advertiseAddr) String() string { return string(a) }
