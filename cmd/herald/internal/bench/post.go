package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// PostOptions shape a post benchmark.
type PostOptions struct {
	// Targets are the nodes' HTTP addresses; client i posts through
	// Targets[i % len].
	Targets []string
	// Clients post concurrently, each with one request in flight over
	// its own keep-alive HTTP/1.1 connection, or with Pipeline.
	Clients int
	// Pipeline, if positive, gives each client one PostMessages stream
	// (binary protobuf over an HTTP/2 cleartext connection of its own)
	// with that many posts in flight on it.
	Pipeline int
	// Channels are posted to; client i's j-th post goes to channel
	// (i + j*Clients) % Channels.
	Channels int
	// Size is each message's text length in bytes.
	Size int
	// Duration of the measurement, after Warmup; ignored if Count > 0.
	Duration time.Duration
	// Count, if positive, measures until that many posts are
	// acknowledged instead.
	Count int64
	// Warmup runs the load unmeasured first.
	Warmup time.Duration
	// PIDs are the server processes whose CPU time and fsyncs are
	// counted; none for a cluster the bench did not start.
	PIDs []int
	// Progress, if non-nil, gets a line a second.
	Progress io.Writer
	// Prefix names the channels: Prefix-000, Prefix-001, ...
	Prefix string
}

// PostResult is what a post benchmark measured.
type PostResult struct {
	Setup     string           `json:"setup"`
	Prefix    string           `json:"channel_prefix"` // channels are Prefix-000, Prefix-001, ...
	Nodes     int              `json:"nodes"`
	Clients   int              `json:"clients"`
	Pipeline  int              `json:"pipeline,omitempty"` // posts in flight per client, if pipelined
	Channels  int              `json:"channels"`
	Size      int              `json:"size_bytes"`
	Seconds   float64          `json:"seconds"`
	Acked     int64            `json:"acknowledged"`
	PerSecond float64          `json:"acknowledged_per_second"`
	Latency   Latency          `json:"latency"`
	Errors    map[string]int64 `json:"errors_by_code"`
	// CPUMillisPerPost is the server processes' CPU time (user +
	// system) per acknowledged post, if they were counted.
	CPUMillisPerPost *float64 `json:"server_cpu_ms_per_post,omitempty"`
	// SyncsPerPost is fsync + fdatasync calls of the server processes per
	// acknowledged post, if they were counted; SyncsNote says why not.
	SyncsPerPost *float64  `json:"fsyncs_per_post,omitempty"`
	SyncsNote    string    `json:"fsyncs_note,omitempty"`
	Disk         *DiskSync `json:"disk_fsync,omitempty"`
	Timeline     []Second  `json:"timeline"`
	Curve        []Point   `json:"latency_by_percentile"`
}

// Second is one second of a run: acknowledgements and latency.
type Second struct {
	At    float64 `json:"at_s"`
	Acked int64   `json:"acknowledged"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
}

// RunPost runs a post benchmark against opts.Targets.
func RunPost(ctx context.Context, opts PostOptions) (*PostResult, error) {
	channels, err := opts.channels("")
	if err != nil {
		return nil, err
	}
	if err := createChannels(ctx, opts.Targets, channels); err != nil {
		return nil, err
	}
	code := func(err error) string { return connect.CodeOf(err).String() }
	if opts.Pipeline > 0 {
		// Pipeline goroutines a client, each with one post in flight on
		// the client's stream.
		clients := make([]poster, 0, opts.Clients*opts.Pipeline)
		for i := range opts.Clients {
			s := newStreamPoster(opts.Targets[i%len(opts.Targets)])
			defer s.close()
			for range opts.Pipeline {
				clients = append(clients, s.post)
			}
		}
		setup := fmt.Sprintf("Connect protobuf PostMessages stream, HTTP/2 cleartext, one stream a client, %d posts in flight on each", opts.Pipeline)
		return newRun(opts, setup, channels, clients, code).run(ctx)
	}
	clients := make([]poster, opts.Clients)
	for i := range clients {
		c := newPostClient(opts.Targets[i%len(opts.Targets)])
		clients[i] = func(ctx context.Context, channel, text, id string) error {
			_, err := c.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: channel, Text: text, ClientMsgId: id})
			return err
		}
	}
	setup := "Connect JSON unary, HTTP/1.1 keep-alive, one connection a client, synchronous"
	return newRun(opts, setup, channels, clients, code).run(ctx)
}

// channels checks opts, defaults its prefix, and names its channels:
// before, then the prefix and a number.
func (opts *PostOptions) channels(before string) ([]string, error) {
	if len(opts.Targets) == 0 || opts.Clients < 1 || opts.Channels < 1 || opts.Size < 1 {
		return nil, errors.New("bench: need targets, and at least one client, channel and byte")
	}
	if opts.Prefix == "" {
		opts.Prefix = "bench"
	}
	channels := make([]string, opts.Channels)
	for i := range channels {
		channels[i] = fmt.Sprintf("%s%s-%03d", before, opts.Prefix, i)
	}
	return channels, nil
}

// poster posts one message and returns once it is acknowledged.
type poster func(ctx context.Context, channel, text, id string) error

func newRun(opts PostOptions, setup string, channels []string, clients []poster, code func(error) string) *run {
	return &run{opts: opts, setup: setup, channels: channels, clients: clients, code: code,
		hist: newHistogram(), tick: newHistogram(), errs: map[string]int64{}, text: strings.Repeat("x", opts.Size)}
}

type run struct {
	opts     PostOptions
	setup    string
	channels []string
	clients  []poster
	code     func(error) string // an error's class, for errors_by_code
	text     string

	measuring atomic.Bool
	acked     atomic.Int64
	hist      *histogram // the measurement
	tick      *histogram // the current second

	mu   sync.Mutex // guards errs
	errs map[string]int64
}

func (r *run) run(parent context.Context) (*PostResult, error) {
	ctx, stop := context.WithCancel(parent)
	defer stop()
	var wg sync.WaitGroup
	for i, c := range r.clients {
		wg.Go(func() { r.client(ctx, c, i) })
	}
	defer wg.Wait()
	if !sleep(ctx, r.opts.Warmup) {
		return nil, ctx.Err()
	}

	res := &PostResult{Setup: r.setup, Prefix: r.opts.Prefix, Nodes: len(r.opts.Targets), Clients: r.opts.Clients,
		Pipeline: r.opts.Pipeline, Channels: r.opts.Channels, Size: r.opts.Size}
	cpu0, cpuErr := cpuSeconds(r.opts.PIDs)
	var syncs *syncCounter
	if len(r.opts.PIDs) == 0 {
		res.SyncsNote = "not counted: the bench did not start the servers"
	} else if s, err := countSyncs(r.opts.PIDs); err != nil {
		res.SyncsNote = "not counted: " + err.Error()
	} else {
		syncs = s
	}
	r.tick.reset()
	r.measuring.Store(true)
	begin := time.Now()
	r.watch(ctx, begin, res)
	r.measuring.Store(false)
	res.Seconds = time.Since(begin).Seconds()
	res.Acked = r.acked.Load()

	if syncs != nil {
		if n, err := syncs.stop(); err != nil {
			res.SyncsNote = "not counted: " + err.Error()
		} else if res.Acked > 0 {
			v := float64(n) / float64(res.Acked)
			res.SyncsPerPost = &v
		}
	}
	if cpu1, err := cpuSeconds(r.opts.PIDs); len(r.opts.PIDs) > 0 && cpuErr == nil && err == nil && res.Acked > 0 {
		v := (cpu1 - cpu0) * 1000 / float64(res.Acked)
		res.CPUMillisPerPost = &v
	}
	stop()
	res.PerSecond = float64(res.Acked) / res.Seconds
	res.Latency = r.hist.summary()
	res.Curve = r.hist.curve()
	r.mu.Lock()
	res.Errors = map[string]int64{}
	for code, n := range r.errs {
		res.Errors[code] = n
	}
	r.mu.Unlock()
	return res, parent.Err()
}

// watch returns when the measurement is over, adding a second to the
// timeline (and a progress line) every second.
func (r *run) watch(ctx context.Context, begin time.Time, res *PostResult) {
	sec := time.NewTicker(time.Second)
	defer sec.Stop()
	var poll <-chan time.Time // Count reached?
	if r.opts.Count > 0 {
		p := time.NewTicker(10 * time.Millisecond)
		defer p.Stop()
		poll = p.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll:
			if r.acked.Load() >= r.opts.Count {
				r.second(begin, res)
				return
			}
		case <-sec.C:
			r.second(begin, res)
			if r.opts.Count <= 0 && time.Since(begin) >= r.opts.Duration {
				return
			}
		}
	}
}

// second closes a second of the timeline and prints its progress line.
func (r *run) second(begin time.Time, res *PostResult) {
	h := r.tick.reset()
	acked := r.acked.Load()
	var last int64
	var lastAt float64
	if n := len(res.Timeline); n > 0 {
		lastAt = res.Timeline[n-1].At
		for _, s := range res.Timeline {
			last += s.Acked
		}
	}
	s := Second{At: time.Since(begin).Seconds(), Acked: acked - last,
		P50: float64(h.ValueAtQuantile(50)) / 1000, P99: float64(h.ValueAtQuantile(99)) / 1000}
	res.Timeline = append(res.Timeline, s)
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, "  %5.1fs  %9d acknowledged  %8.0f/s  p50 %7.2f ms  p99 %7.2f ms  errors %d\n",
			s.At, acked, float64(s.Acked)/max(s.At-lastAt, 1e-3), s.P50, s.P99, r.errorCount())
	}
}

func (r *run) errorCount() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, v := range r.errs {
		n += v
	}
	return n
}

// client posts one message after another until ctx ends.
func (r *run) client(ctx context.Context, post poster, i int) {
	for j := 0; ctx.Err() == nil; j++ {
		channel := r.channels[(i+j*len(r.clients))%len(r.channels)]
		id := fmt.Sprintf("%s-%d-%d", r.opts.Prefix, i, j)
		measured := r.measuring.Load()
		begin := time.Now()
		err := post(ctx, channel, r.text, id)
		took := time.Since(begin)
		if !measured || !r.measuring.Load() {
			continue // sent or answered outside the measurement
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			r.errs[r.code(err)]++
			r.mu.Unlock()
			continue
		}
		r.hist.record(took)
		r.tick.record(took)
		r.acked.Add(1)
	}
}

// newPostClient is a client with one keep-alive HTTP/1.1 connection to
// addr, speaking Connect with JSON, as a browser or curl user would.
func newPostClient(addr string) heraldv1connect.MessageServiceClient {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
	return heraldv1connect.NewMessageServiceClient(&http.Client{Transport: tr}, "http://"+addr, connect.WithProtoJSON())
}

// createChannels creates the channels through the targets in turn, an
// existing one being fine, retrying while the cluster is electing.
func createChannels(ctx context.Context, targets, channels []string) error {
	clients := make([]heraldv1connect.ChannelServiceClient, len(targets))
	for i, t := range targets {
		clients[i] = heraldv1connect.NewChannelServiceClient(http.DefaultClient, "http://"+t, connect.WithProtoJSON())
	}
	for i, ch := range channels {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := clients[i%len(clients)].CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: ch})
			code := connect.CodeOf(err)
			switch {
			case err == nil, code == connect.CodeAlreadyExists:
			case (code == connect.CodeUnavailable || code == connect.CodeUnknown || code == connect.CodeDeadlineExceeded) &&
				time.Now().Before(deadline) && ctx.Err() == nil:
				if !sleep(ctx, 50*time.Millisecond) {
					return ctx.Err()
				}
				continue
			default:
				return fmt.Errorf("bench: create channel %s via %s: %w", ch, targets[i%len(targets)], err)
			}
			break
		}
	}
	return nil
}

// sleep waits d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
