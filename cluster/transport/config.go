package transport

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults applied by DefaultConfig and to zero fields of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultDialTimeout      = 5 * time.Second
	DefaultRedialWindow     = 10 * time.Second
)

// HandshakeFunc authenticates a node-to-node connection. The Mux runs it on
// accepted connections (dialing == false) right after reading the header,
// and Layer.Dial runs it on dialed connections (dialing == true) right
// after writing the header; both sides run under the handshake deadline,
// which is cleared afterwards. It may read from and write to conn but must
// not keep it or close it. A non-nil error closes the connection: Dial
// returns the error, the accepting side logs it at debug level.
//
// This is the hook for node-to-node authentication, for example a
// challenge-response over a key derived from the cluster secret.
type HandshakeFunc func(conn net.Conn, dialing bool) error

// Config configures a Mux. Zero values mean defaults.
type Config struct {
	// Listener accepts the node's Raft connections. Required. The Mux owns
	// it from New on and closes it in Close.
	Listener net.Listener

	// Advertise is the host:port peers should dial to reach this node. If
	// empty, the listener's address is used, which then must not be an
	// unspecified address such as 0.0.0.0.
	Advertise string

	// HandshakeTimeout bounds how long an accepted connection may take to
	// send its header and complete Handshake, and how long Dial may take to
	// write the header and complete Handshake. Default 5 s.
	HandshakeTimeout time.Duration

	// DialTimeout bounds the TCP connect in Layer.Dial when the caller
	// passes no positive timeout of its own. Default 5 s.
	DialTimeout time.Duration

	// RedialWindow is how long Layer.Dial keeps dialing a peer that
	// refuses connections (see Layer.dial), within the timeout it is given.
	// Default 10 s (the I/O timeout NewTransport gives raft); negative
	// turns it off.
	RedialWindow time.Duration

	// Handshake, if non-nil, runs on both ends of every connection after
	// the header; see HandshakeFunc. Nil means no authentication.
	Handshake HandshakeFunc

	// DialTLS, if non-nil, makes Layer.Dial run TLS as the client over
	// each connection it opens, with this configuration (its ServerName,
	// if empty, set to the host of the address dialed, so the peer's
	// certificate must name that host). The header and Handshake then run
	// inside TLS. The accepting side must wrap Listener to match, e.g.
	// with tls.NewListener and a configuration that verifies client
	// certificates (mutual TLS). The TLS handshake runs under
	// HandshakeTimeout. Nil means plaintext.
	DialTLS *tls.Config

	// AddressProvider, if non-nil, resolves a Raft server id to the address
	// to dial, for every transport NewTransport builds; raft falls back to
	// the address in its configuration when it fails. It lets peers move
	// (or be reached through a proxy) without a configuration change.
	AddressProvider raft.ServerAddressProvider

	// Logger receives connection-level diagnostics. Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in. Listener is
// left nil and must be set by the caller.
func DefaultConfig() Config {
	return Config{
		HandshakeTimeout: DefaultHandshakeTimeout,
		DialTimeout:      DefaultDialTimeout,
		RedialWindow:     DefaultRedialWindow,
	}
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.RedialWindow == 0 {
		c.RedialWindow = d.RedialWindow
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field, as an error wrapping
// ErrInvalidConfig that names it. Zero durations are valid (they mean the
// default); negative ones are not.
func (c *Config) Validate() error {
	if c.Listener == nil {
		return fmt.Errorf("%w: Listener is required", ErrInvalidConfig)
	}
	if c.Advertise != "" {
		if err := checkAdvertise(c.Advertise); err != nil {
			return fmt.Errorf("%w: Advertise %q: %v", ErrInvalidConfig, c.Advertise, err)
		}
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("%w: HandshakeTimeout %v is negative", ErrInvalidConfig, c.HandshakeTimeout)
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("%w: DialTimeout %v is negative", ErrInvalidConfig, c.DialTimeout)
	}
	return nil
}

// checkAdvertise reports whether addr is a host:port peers can dial.
func checkAdvertise(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("missing host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("bad port %q", port)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("unspecified address")
	}
	return nil
}
