package gateway

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/gateway/console"
	"github.com/heraldhq/herald/storage"
)

// Cluster is what the gateway needs from the cluster: routed writes and
// reads, and event streams. *cluster.Node implements it.
type Cluster interface {
	Apply(ctx context.Context, cmd *clusterv1.Command) (*storage.Result, error)
	// Submit is Apply without waiting: see cluster.Node.Submit.
	Submit(ctx context.Context, cmd *clusterv1.Command) *cluster.Pending
	GetChannel(ctx context.Context, c storage.Caller, id string) (*heraldv1.Channel, bool, error)
	ListChannels(ctx context.Context, c storage.Caller, req *heraldv1.ListChannelsRequest) (*heraldv1.ListChannelsResponse, error)
	History(ctx context.Context, c storage.Caller, req *heraldv1.GetHistoryRequest) (*heraldv1.GetHistoryResponse, error)
	Thread(ctx context.Context, c storage.Caller, req *heraldv1.GetThreadRequest) (*heraldv1.GetThreadResponse, error)
	Events(ctx context.Context, channel string, after uint64, limit int) ([]*heraldv1.Event, uint64, uint64, error)
	Watch(channel string, after uint64) (cluster.Stream, error)
	Ready() bool
}

// Stream is an upstream of one channel's events in seq order.
type Stream = cluster.Stream

// Anonymous is the caller of every request while authentication is off:
// user "anonymous", an admin (DESIGN.md "Security").
var Anonymous = storage.Caller{User: "anonymous", Admin: true}

// Config configures the gateway. Zero values mean the defaults.
type Config struct {
	// Auth verifies bearer tokens; nil turns authentication off, and every
	// caller is Anonymous (DESIGN.md "Security").
	Auth *Authenticator
	// Logger receives errors and state transitions; nil discards them.
	Logger *slog.Logger
	// Version is reported in the WebSocket hello frame.
	Version string
	// MaxRequestBytes caps a Connect request message and a WebSocket
	// frame; 0 means 1 MiB.
	MaxRequestBytes int
	// MaxSubscriptions caps the subscriptions of one WebSocket
	// connection; 0 means 100.
	MaxSubscriptions int
	// QueueFrames caps the frames queued to one WebSocket connection or
	// Subscribe stream before it is a slow consumer; 0 means 1024.
	QueueFrames int
	// PingInterval is how often the gateway pings WebSocket clients; a
	// connection silent for three intervals is closed. 0 means 15 s.
	PingInterval time.Duration
	// WriteTimeout bounds one write to a WebSocket client: a client that
	// has not taken a frame within it is closed. 0 means 10 s.
	WriteTimeout time.Duration
	// ReconnectJitter is the longest delay a client is told to wait before
	// it reconnects elsewhere when the node shuts down (a reconnect frame;
	// each gets a random delay below it); 0 means 5 s.
	ReconnectJitter time.Duration
	// MaxPostsPerUser is how many posts a second one user may make through
	// this node (a token bucket with that burst); 0 means no limit.
	MaxPostsPerUser float64
	// MaxConnsPerUser caps one user's WebSocket connections plus Subscribe
	// streams on this node; 0 means no limit.
	MaxConnsPerUser int
	// AuthTimeout is how long a WebSocket connection without an
	// Authorization header has to send its auth frame; 0 means 10 s.
	AuthTimeout time.Duration
	// BodyTimeout bounds how long a client may take to send a request
	// body to the Connect API; 0 means BodyTimeout.
	BodyTimeout time.Duration
	// Pprof serves Go's profiler at /debug/pprof/ to admins (pprof.go).
	Pprof bool
	// Roles are the node's roles (meta.AllRoles); nil means all. Without
	// edge, the public API answers unimplemented; without gateway, so do
	// Subscribe and /ws (501); without admin, the admin API (roles.go).
	Roles []string
	// Metrics is the registry the gateway adds its series to and serves
	// at /metrics (to admins; see MetricsHandler). Nil means a registry of
	// the gateway's series only.
	Metrics *prometheus.Registry
	// UnsafeSkipEvent is a planted defect, for herald torture's canary
	// only: no subscriber is sent the event with this seq (0: none) of any
	// channel, a gap.
	UnsafeSkipEvent uint64
}

// compressMinBytes is the least response size that is gzipped for a
// client that accepts gzip.
const compressMinBytes = 1024

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxRequestBytes:  1 << 20,
		MaxSubscriptions: 100,
		QueueFrames:      1024,
		PingInterval:     15 * time.Second,
		WriteTimeout:     10 * time.Second,
		ReconnectJitter:  5 * time.Second,
	}
}

// Validate reports the first out-of-range field.
func (c Config) Validate() error {
	if c.MaxRequestBytes < 0 || c.MaxSubscriptions < 0 || c.QueueFrames < 0 || c.PingInterval < 0 || c.WriteTimeout < 0 || c.ReconnectJitter < 0 ||
		c.MaxPostsPerUser < 0 || c.MaxConnsPerUser < 0 || c.AuthTimeout < 0 || c.BodyTimeout < 0 {
		return errors.New("gateway: limits must not be negative")
	}
	if len(c.Roles) > 0 {
		if err := meta.CheckRoles(c.Roles); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Roles == nil {
		c.Roles = meta.AllRoles
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = d.MaxSubscriptions
	}
	if c.QueueFrames == 0 {
		c.QueueFrames = d.QueueFrames
	}
	if c.PingInterval == 0 {
		c.PingInterval = d.PingInterval
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.ReconnectJitter == 0 {
		c.ReconnectJitter = d.ReconnectJitter
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = BodyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is the edge and gateway roles: the Connect services, the
// WebSocket endpoint, and health checks, all on one http.Handler. Close
// ends every subscription and WebSocket connection; it is idempotent.
type Server struct {
	cfg     Config
	cl      Cluster
	log     *slog.Logger
	hub     *hub
	ws      *wsServer
	posts   *rateLimiter
	conns   *connLimiter
	handler http.Handler
	cancel  context.CancelFunc
	m       *gwMetrics
	gather  prometheus.Gatherer

	closeOnce sync.Once
}

// New builds a Server over a cluster.
func New(cfg Config, cl Cluster) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, cl: cl, log: cfg.Logger, cancel: cancel,
		posts: newRateLimiter(cfg.MaxPostsPerUser), conns: newConnLimiter(cfg.MaxConnsPerUser)}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.m, s.gather = newGWMetrics(), reg
	if err := s.m.register(reg, s); err != nil {
		cancel()
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	s.hub = newHub(ctx, cl, cfg.Logger, cfg.UnsafeSkipEvent, s.m)
	s.ws = newWSServer(ctx, s)

	opts := []connect.HandlerOption{
		connect.WithInterceptors(s.m.interceptor()),
		connect.WithRequestGate(s.requestGate),
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		connect.WithSendMaxBytes(s.sendMaxBytes()),
		// Replace the default gzip with one that stops inflating past the
		// limit: Connect inflates an oversize message to its end to report
		// its size, which a compression bomb turns into seconds of CPU.
		connect.WithCompression("gzip", nil, nil),
		connect.WithCompression("gzip", func() connect.Decompressor {
			return &limitedGzip{limit: int64(cfg.MaxRequestBytes)}
		}, func() connect.Compressor { return gzip.NewWriter(io.Discard) }),
		// A small response costs more to gzip (a compressor reset alone
		// was 6% of a node's CPU under posts) than it saves.
		connect.WithCompressMinBytes(compressMinBytes),
	}
	mux := http.NewServeMux()
	mux.Handle(limitBody(cfg.MaxRequestBytes, cfg.BodyTimeout)(heraldv1connect.NewChannelServiceHandler(&channelService{s}, opts...)))
	mux.Handle(limitBody(cfg.MaxRequestBytes, cfg.BodyTimeout)(heraldv1connect.NewMessageServiceHandler(&messageService{s}, opts...)))
	if admin, ok := cl.(Admin); ok {
		// Restores stream whole snapshots: no message limit beyond the chunk.
		mux.Handle(heraldv1connect.NewAdminServiceHandler(&adminService{s: s, a: admin},
			connect.WithInterceptors(s.m.interceptor()), connect.WithRequestGate(s.requestGate),
			connect.WithReadMaxBytes(8<<20), connect.WithSendMaxBytes(8<<20), connect.WithCompressMinBytes(compressMinBytes)))
	}
	mux.Handle("GET /ws", s.gatewayOnly(s.ws))
	page := console.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET "+console.Prefix, page)
	mux.Handle("GET /metrics", s.adminOnly("reading a node's metrics", s.MetricsHandler()))
	if cfg.Pprof {
		s.handlePprof(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n")) // best effort: the client may be gone
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !cl.Ready() {
			http.Error(w, "not ready: a partition has no leader or is catching up", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n")) // best effort: the client may be gone
	})
	s.handler = mux
	return s, nil
}

// sendMaxBytes caps a Connect response message.
func (s *Server) sendMaxBytes() int { return 4 * s.cfg.MaxRequestBytes }

// Handler returns the HTTP handler serving every endpoint.
func (s *Server) Handler() http.Handler { return s.handler }

// reconnect is what a client is told when the node shuts down under it:
// come back elsewhere after a random delay below ReconnectJitter, so that
// a node's clients do not all reconnect at once.
func (s *Server) reconnect() *heraldv1.Reconnect {
	return &heraldv1.Reconnect{Reason: "node is shutting down",
		DelayMs: uint32(rand.N(s.cfg.ReconnectJitter) / time.Millisecond)}
}

// Close tells every WebSocket connection and Subscribe stream to
// reconnect elsewhere (a reconnect frame), closes the connections (going
// away) and ends every subscription and stream, then waits for the
// gateway's goroutines.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.ws.close()
		s.hub.close()
	})
	return nil
}

// NewHTTPServer returns an http.Server for h that speaks HTTP/1.1 and
// cleartext HTTP/2 (h2c) on one port, so Connect, gRPC and gRPC-Web
// clients and WebSockets all work, with header and idle timeouts. Served
// with ServeTLS (set TLSConfig), it speaks HTTP/2 and HTTP/1.1 over TLS,
// chosen by ALPN; WebSocket upgrades use HTTP/1.1. It sets no read or
// write timeout: those would cut long-lived streams.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	var errLog *slog.Logger = log
	if errLog == nil {
		errLog = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(errLog.Handler(), slog.LevelWarn),
	}
}

// BodyTimeout is the default bound on how long a client may take to send
// a request body to the Connect API, so a slow-loris body cannot hold a
// handler.
const BodyTimeout = 30 * time.Second

// limitBody caps the request bodies of a Connect handler at the message
// limit plus room for framing, and the time to send them at timeout
// (for longRequestStreams: each message, and the time between them).
// Connect reads an oversize body to its end to report its size; past the
// cap it stops with resource_exhausted instead, so a body that never ends
// cannot hold a handler. A body cut short or too slow is the client's
// error (see bodyGuard). The read deadline ends with the body: net/http
// clears it once the body is read to its end, and nothing else is read
// from a streaming call's connection meanwhile.
//
// The handler gets a shallow copy of the request: net/http decides whether
// to reuse the connection from the original request's body, which must
// stay the one it made. Replaced in place, a body the handler closed
// unread (a request refused before its body, such as one without a valid
// token) would leave its remaining bytes on the connection, to be parsed
// as the next request.
func limitBody(maxMessage int, timeout time.Duration) func(string, http.Handler) (string, http.Handler) {
	const framing = 4 << 10 // envelope prefixes, with room to spare
	limit := int64(maxMessage) + framing
	return func(path string, h http.Handler) (string, http.Handler) {
		return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(timeout)) // unsupported only for exotic writers
			r = r.WithContext(r.Context())
			if longRequestStreams[r.URL.Path] {
				// Any number of messages, each capped by connect's
				// ReadMaxBytes, each within timeout of the last.
				g := newBodyGuard(r.Body, r, timeout)
				g.renew = func() { _ = rc.SetReadDeadline(time.Now().Add(timeout)) }
				r.Body = g
			} else {
				r.Body = newBodyGuard(http.MaxBytesReader(w, r.Body, limit), r, timeout)
			}
			h.ServeHTTP(w, r)
		})
	}
}

// longRequestStreams are the procedures whose request is a stream of any
// length: limitBody bounds each message and the time between them.
var longRequestStreams = map[string]bool{
	heraldv1connect.MessageServicePostMessagesProcedure: true,
}

// limitedGzip is a gzip connect.Decompressor that fails once it has
// inflated more than limit bytes, so a compression bomb is refused after
// the limit rather than inflated in full.
type limitedGzip struct {
	zr    gzip.Reader
	limit int64
	n     int64
}

func (d *limitedGzip) Read(p []byte) (int, error) {
	if d.n > d.limit {
		return 0, fmt.Errorf("gateway: inflated message is over %d bytes", d.limit)
	}
	n, err := d.zr.Read(p)
	d.n += int64(n)
	return n, err
}

func (d *limitedGzip) Reset(r io.Reader) error {
	d.n = 0
	return d.zr.Reset(r)
}

func (d *limitedGzip) Close() error { return d.zr.Close() }
