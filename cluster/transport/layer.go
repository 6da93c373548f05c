package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// Layer is one Raft group's view of a Mux: a raft.StreamLayer whose Accept
// returns the connections routed to the group and whose Dial opens
// connections to the same group on other nodes.
//
// All methods are safe for concurrent use. Closing a Layer never closes the
// Mux's listener or other Layers.
type Layer struct {
	mux   *Mux
	group string
	// conns is unbuffered: a hand-off completes only when Accept takes the
	// connection, so none is left stranded in a buffer at Close.
	conns chan net.Conn
	done  chan struct{} // closed by markClosed
	once  sync.Once
	// refusing makes the Mux close connections for the group (see
	// Transport.Refuse).
	refusing atomic.Bool
	// noRedial is closed by stopRedial: dial gives up redialing.
	noRedial     chan struct{}
	noRedialOnce sync.Once
}

// stopRedial makes Dial stop waiting for refusing peers, now and later.
func (l *Layer) stopRedial() { l.noRedialOnce.Do(func() { close(l.noRedial) }) }

var _ raft.StreamLayer = (*Layer)(nil)

// Group returns the group id the Layer was registered for.
func (l *Layer) Group() string { return l.group }

// Accept waits for and returns the next connection routed to the Layer's
// group; the caller owns it. It returns ErrClosed once the Mux is closed,
// else ErrLayerClosed once the Layer is closed.
func (l *Layer) Accept() (net.Conn, error) {
	if err := l.err(); err != nil {
		return nil, err
	}
	select {
	case conn := <-l.conns:
		return conn, nil
	case <-l.done:
	case <-l.mux.done:
	}
	return nil, l.err()
}

// err returns ErrClosed if the Mux is closed (closing the Mux also closes
// its Layers), else ErrLayerClosed if the Layer is closed, else nil.
func (l *Layer) err() error {
	select {
	case <-l.mux.done:
		return ErrClosed
	default:
	}
	select {
	case <-l.done:
		return ErrLayerClosed
	default:
	}
	return nil
}

// Close unregisters the Layer from its Mux, making pending and future
// Accept calls fail, and frees its group for a new registration. It leaves
// the listener, other Layers and connections already accepted or dialed
// open. It is idempotent and always returns nil.
func (l *Layer) Close() error {
	l.markClosed()
	m := l.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.layers[l.group] == l {
		delete(m.layers, l.group)
	}
	return nil
}

// markClosed closes done once.
func (l *Layer) markClosed() {
	l.once.Do(func() { close(l.done) })
}

// Addr returns the Mux's advertised address (see Mux.Addr).
func (l *Layer) Addr() net.Addr { return l.mux.addr }

// Dial connects to the Mux at address and opens a stream for the Layer's
// group: a TCP connect bounded by timeout (Config.DialTimeout if timeout
// is not positive), then the TLS handshake if Config.DialTLS is set, the
// header and Config.Handshake under Config.HandshakeTimeout, after which
// the deadline is cleared. The caller
// owns the returned connection. It returns ErrClosed or ErrLayerClosed if
// the Mux or Layer is closed, else the dial, write or handshake error.
func (l *Layer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if err := l.err(); err != nil {
		return nil, err
	}
	cfg := &l.mux.cfg
	if timeout <= 0 {
		timeout = cfg.DialTimeout
	}
	conn, err := l.dial(string(address), timeout)
	if err != nil {
		return nil, err
	}
	if cfg.DialTLS != nil {
		conn = tls.Client(conn, clientTLS(cfg.DialTLS, string(address)))
	}
	if err := l.open(conn); err != nil {
		_ = conn.Close() // best effort: the stream failed to open
		return nil, fmt.Errorf("open group %q stream to %s: %w", l.group, address, err)
	}
	return conn, nil
}

// redialPause is how long Dial waits before it dials a peer that refused
// the connection again.
const redialPause = 100 * time.Millisecond

// dial connects to address within timeout. A peer that refuses the
// connection (its process is down) is dialed again every redialPause for
// up to Config.RedialWindow: hashicorp/raft backs off from a peer after
// each failed RPC, doubling up to about ten seconds, and a peer that
// failed fast many times is then retried that rarely once it is back. A
// dial that waits makes each failure take RedialWindow (10 s), so the
// backoff stays under a second for a peer down a minute or two, and the
// replication to it resumes as soon as it listens again.
func (l *Layer) dial(address string, timeout time.Duration) (net.Conn, error) {
	begin := time.Now()
	window := min(timeout, l.mux.cfg.RedialWindow)
	for {
		conn, err := net.DialTimeout("tcp", address, timeout-time.Since(begin))
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Since(begin)+redialPause > window {
			return conn, err
		}
		t := time.NewTimer(redialPause)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return nil, l.err()
		case <-l.mux.done:
			t.Stop()
			return nil, l.err()
		case <-l.noRedial:
			t.Stop()
			return conn, err
		}
	}
}

// clientTLS returns c for dialing address: a copy with ServerName set to
// the address's host when c names none.
func clientTLS(c *tls.Config, address string) *tls.Config {
	if c.ServerName != "" {
		return c
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return c // the dial succeeded, so this does not happen
	}
	c = c.Clone()
	c.ServerName = host
	return c
}

// open writes the header and runs the handshake hook on a dialed conn.
func (l *Layer) open(conn net.Conn) error {
	cfg := &l.mux.cfg
	if err := conn.SetDeadline(time.Now().Add(cfg.HandshakeTimeout)); err != nil {
		return err
	}
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return err
		}
	}
	if _, err := conn.Write(appendHeader(nil, l.group)); err != nil {
		return err
	}
	if cfg.Handshake != nil {
		if err := cfg.Handshake(conn, true); err != nil {
			return err
		}
	}
	return conn.SetDeadline(time.Time{})
}
