package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FanoutOptions shape a fan-out benchmark.
type FanoutOptions struct {
	// Targets are the nodes' HTTP addresses.
	Targets []string
	// Subscribers are WebSocket connections, each subscribed to one
	// channel: subscriber i to channel i % Channels, through node
	// (i % Channels + i / Channels) % len(Targets), so each channel's
	// subscribers go round-robin over the nodes, starting at a different
	// node for each channel.
	Subscribers int
	// Channels are posted to in turn: post k goes to channel k % Channels
	// through node k % len(Targets).
	Channels int
	// Rate is posts per second, sent on schedule whatever their answers
	// (at most maxInFlight at once); 0 posts one at a time, each after the
	// previous one was answered.
	Rate float64
	// Size is each message's text length in bytes.
	Size int
	// Duration of the measurement, after Warmup; ignored if Count > 0.
	Duration time.Duration
	// Count, if positive, measures until that many posts are
	// acknowledged instead.
	Count int64
	// Warmup runs the load unmeasured first; its deliveries are checked
	// all the same.
	Warmup time.Duration
	// Drain bounds the wait, after the last post, for every acknowledged
	// post to reach every subscriber of its channel.
	Drain time.Duration
	// Binary subscribes with herald.v1.proto (protobuf frames) instead of
	// protojson text.
	Binary bool
	// Slow adds subscribers of the first channel, through the nodes in
	// turn, that stop reading once subscribed: slow consumers, not counted
	// among Subscribers or checked, which the gateway must cut off.
	Slow int
	// PIDs are the server processes whose CPU time is counted; none for a
	// cluster the bench did not start.
	PIDs []int
	// Progress, if non-nil, gets a line a second.
	Progress io.Writer
	// Prefix names the channels: Prefix-000, Prefix-001, ...
	Prefix string
	// Centrifugo, if set, says that Targets are Centrifugo nodes, measured
	// the same way (centrifugo.go): the same subscribers and channels,
	// posts through its HTTP API, publications with offsets for seqs.
	Centrifugo *CentrifugoTarget
}

// maxInFlight bounds the posts a --rate run has in flight at once; a
// cluster slower than the rate makes the run fall behind it instead.
const maxInFlight = 256

// FanoutResult is what a fan-out benchmark measured. Posts are those sent
// during the measurement; Deliveries are their events as received by
// subscribers.
type FanoutResult struct {
	Setup          string           `json:"setup"`
	Prefix         string           `json:"channel_prefix"` // channels are Prefix-000, Prefix-001, ...
	Nodes          int              `json:"nodes"`
	Subscribers    int              `json:"subscribers"`
	Channels       int              `json:"channels"`
	Rate           float64          `json:"rate_per_second"` // requested; 0 = synchronous
	Size           int              `json:"size_bytes"`
	Seconds        float64          `json:"seconds"`
	Posts          int64            `json:"acknowledged_posts"`
	PostsPerSecond float64          `json:"posts_per_second"`
	PostLatency    Latency          `json:"post_latency"`
	PostErrors     map[string]int64 `json:"post_errors_by_code"`
	// Deliveries counts the events of measured posts that subscribers
	// received; ExpectedDeliveries is, over the channels, acknowledged
	// measured posts times the channel's subscribers.
	Deliveries          int64   `json:"deliveries"`
	ExpectedDeliveries  int64   `json:"expected_deliveries"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// Latency is from a post's send to an event's receipt, in the bench's
	// clock.
	Latency Latency `json:"delivery_latency"`
	// CPUSecondsPerMillion is the server processes' CPU time (user +
	// system, all their work: posts, replication, fan-out) from the
	// measurement's start to the drain's end, per million deliveries, if
	// they were counted.
	CPUSecondsPerMillion *float64 `json:"server_cpu_s_per_million_deliveries,omitempty"`
	// Violations of the delivery contract, over the whole run, warmup
	// included.
	Violations Violations `json:"violations"`
	// Resyncs counts resync_required frames by reason: reported, not
	// violations; a subscription is not checked past one.
	Resyncs map[string]int64 `json:"resync_required_by_reason"`
	// SubscriberErrors counts error frames and connections the server
	// closed.
	SubscriberErrors map[string]int64 `json:"subscriber_errors"`
	// Slow is how many slow consumers ran; SlowCut how many of them the
	// servers had disconnected by the end, SlowResyncs how many of those
	// had been sent resync_required SLOW_CONSUMER first.
	Slow         int            `json:"slow_consumers,omitempty"`
	SlowCut      int            `json:"slow_consumers_cut_off,omitempty"`
	SlowResyncs  int            `json:"slow_consumers_told_slow_consumer,omitempty"`
	DrainSeconds float64        `json:"drain_seconds"`
	Timeline     []FanoutSecond `json:"timeline"`
	Curve        []Point        `json:"latency_by_percentile"`
}

// FanoutSecond is one second of a fan-out run.
type FanoutSecond struct {
	At         float64 `json:"at_s"`
	Posts      int64   `json:"acknowledged_posts"`
	Deliveries int64   `json:"deliveries"` // of any post, received in this second
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
}

// fanout is one run's state, shared by the poster and the subscribers.
type fanout struct {
	opts     FanoutOptions
	channels []string
	sys      system
	subs     []member
	slow     []*slowReader
	perChan  []int // subscribers of each channel
	base     time.Time
	text     string

	measuring atomic.Bool // posts sent now are measured
	stopping  atomic.Bool // send no more posts

	posts      atomic.Int64 // measured posts acknowledged
	received   atomic.Int64 // every delivery
	deliveries atomic.Int64 // deliveries of measured posts
	violations atomic.Int64 // seen as they arrive
	misrouted  atomic.Int64
	resyncs    atomic.Int64

	hist, tick, postHist *histogram

	mu        sync.Mutex // guards following
	acked     [][]uint64 // per channel, the seqs of every acknowledged post
	measured  []int64    // per channel, acknowledged measured posts
	postErrs  map[string]int64
	resyncBy  map[string]int64
	subErrors map[string]int64
}

// RunFanout runs a fan-out benchmark against opts.Targets.
func RunFanout(ctx context.Context, opts FanoutOptions) (*FanoutResult, error) {
	if len(opts.Targets) == 0 || opts.Subscribers < 1 || opts.Channels < 1 || opts.Size < 1 || opts.Rate < 0 {
		return nil, errors.New("bench: need targets, at least one subscriber, channel and byte, and a rate of 0 or more")
	}
	if opts.Prefix == "" {
		opts.Prefix = "fanout"
	}
	if opts.Drain <= 0 {
		opts.Drain = 10 * time.Second
	}
	f := &fanout{opts: opts, base: time.Now(), text: strings.Repeat("x", opts.Size),
		hist: newHistogram(), tick: newHistogram(), postHist: newHistogram(),
		acked: make([][]uint64, opts.Channels), measured: make([]int64, opts.Channels), perChan: make([]int, opts.Channels),
		postErrs: map[string]int64{}, resyncBy: map[string]int64{}, subErrors: map[string]int64{}}
	for i := range opts.Channels {
		f.channels = append(f.channels, fmt.Sprintf("%s-%03d", opts.Prefix, i))
	}
	f.sys = heraldSystem{}
	if opts.Centrifugo != nil {
		if opts.Slow > 0 || opts.Binary {
			return nil, errors.New("bench: --slow and --proto are Herald's alone; run the Centrifugo comparison without them")
		}
		f.sys = centrifugoSystem{opts.Centrifugo}
	}
	if err := f.sys.createChannels(ctx, opts.Targets, f.channels); err != nil {
		return nil, err
	}
	defer f.closeSubscribers()
	if err := f.dialSubscribers(ctx); err != nil {
		return nil, err
	}
	for i := range opts.Slow {
		r, err := dialSlow(ctx, opts.Targets[i%len(opts.Targets)], f.channels[0])
		if err != nil {
			return nil, err
		}
		f.slow = append(f.slow, r)
	}
	return f.run(ctx)
}

// dialSubscribers connects and subscribes every subscriber, a few at a
// time.
func (f *fanout) dialSubscribers(ctx context.Context) error {
	n, c := len(f.opts.Targets), f.opts.Channels
	f.subs = make([]member, f.opts.Subscribers)
	for i := range f.subs {
		f.subs[i] = f.sys.subscriber(f, i%c)
		f.perChan[i%c]++
	}
	sem := make(chan struct{}, 16)
	errs := make([]error, len(f.subs))
	var wg sync.WaitGroup
	for i, s := range f.subs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = s.dial(ctx, f.opts.Targets[(i%c+i/c)%n])
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (f *fanout) closeSubscribers() {
	var wg sync.WaitGroup
	for _, s := range f.subs {
		wg.Go(s.close)
	}
	for _, r := range f.slow {
		wg.Go(r.close)
	}
	wg.Wait()
}

// countSlow closes the slow readers and counts the servers' verdicts.
func (f *fanout) countSlow(res *FanoutResult) {
	res.Slow = len(f.slow)
	var wg sync.WaitGroup
	for _, r := range f.slow {
		wg.Go(r.close)
	}
	wg.Wait()
	for _, r := range f.slow {
		if r.cut.Load() {
			res.SlowCut++
		}
		if r.slow.Load() {
			res.SlowResyncs++
		}
	}
}

func (f *fanout) run(parent context.Context) (*FanoutResult, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { f.post(ctx) })
	defer wg.Wait()
	if !sleep(ctx, f.opts.Warmup) {
		return nil, ctx.Err()
	}

	o := f.opts
	res := &FanoutResult{Setup: f.setup(), Prefix: o.Prefix, Nodes: len(o.Targets), Subscribers: o.Subscribers,
		Channels: o.Channels, Rate: o.Rate, Size: o.Size}
	cpu0, cpuErr := cpuSeconds(o.PIDs)
	f.tick.reset()
	f.measuring.Store(true)
	begin := time.Now()
	f.watch(ctx, begin, res)
	f.measuring.Store(false)
	f.stopping.Store(true)
	res.Seconds = time.Since(begin).Seconds()
	wg.Wait() // the poster has returned: every post is answered
	if parent.Err() != nil {
		return nil, parent.Err()
	}

	drain := time.Now()
	f.drain(parent)
	res.DrainSeconds = time.Since(drain).Seconds()
	cpu1, err := cpuSeconds(o.PIDs)

	res.Posts = f.posts.Load()
	res.PostsPerSecond = float64(res.Posts) / res.Seconds
	res.Deliveries = f.deliveries.Load()
	res.DeliveriesPerSecond = float64(res.Deliveries) / res.Seconds
	if len(o.PIDs) > 0 && cpuErr == nil && err == nil && res.Deliveries > 0 {
		v := (cpu1 - cpu0) * 1e6 / float64(res.Deliveries)
		res.CPUSecondsPerMillion = &v
	}
	res.Latency, res.Curve, res.PostLatency = f.hist.summary(), f.hist.curve(), f.postHist.summary()
	f.mu.Lock()
	for c := range f.channels {
		res.ExpectedDeliveries += f.measured[c] * int64(f.perChan[c])
	}
	res.PostErrors, res.Resyncs, res.SubscriberErrors = maps.Clone(f.postErrs), maps.Clone(f.resyncBy), maps.Clone(f.subErrors)
	for _, s := range f.subs {
		ch, check := s.order()
		res.Violations.add(check.violations())
		res.Violations.Lost += check.missing(f.acked[ch])
	}
	f.mu.Unlock()
	res.Violations.Misrouted = f.misrouted.Load()
	f.countSlow(res)
	return res, parent.Err()
}

func (f *fanout) setup() string {
	posts, frames := f.sys.setup(f.opts.Binary)
	if f.opts.Rate > 0 {
		posts += fmt.Sprintf(" at %g/s (at most %d in flight)", f.opts.Rate, maxInFlight)
	} else {
		posts += ", one at a time"
	}
	return posts + "; WebSocket subscribers (" + frames + " frames), one channel each"
}

// watch returns when the measurement is over, adding a second to the
// timeline (and a progress line) every second.
func (f *fanout) watch(ctx context.Context, begin time.Time, res *FanoutResult) {
	sec := time.NewTicker(time.Second)
	defer sec.Stop()
	var poll <-chan time.Time // Count reached?
	if f.opts.Count > 0 {
		p := time.NewTicker(10 * time.Millisecond)
		defer p.Stop()
		poll = p.C
	}
	var posts, received int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll:
			if f.posts.Load() < f.opts.Count {
				continue
			}
		case <-sec.C:
		}
		h := f.tick.reset()
		s := FanoutSecond{At: time.Since(begin).Seconds(), P50: float64(h.ValueAtQuantile(50)) / 1000, P99: float64(h.ValueAtQuantile(99)) / 1000}
		p, r := f.posts.Load(), f.received.Load()
		s.Posts, s.Deliveries, posts, received = p-posts, r-received, p, r
		lastAt := 0.0
		if n := len(res.Timeline); n > 0 {
			lastAt = res.Timeline[n-1].At
		}
		res.Timeline = append(res.Timeline, s)
		if f.opts.Progress != nil {
			d := max(s.At-lastAt, 1e-3)
			fmt.Fprintf(f.opts.Progress, "  %5.1fs  %8d posts %7.0f/s  %10d deliveries %9.0f/s  p99 %7.2f ms  violations %d  resyncs %d\n",
				s.At, p, float64(s.Posts)/d, f.deliveries.Load(), float64(s.Deliveries)/d, s.P99, f.violations.Load(), f.resyncs.Load())
		}
		if (f.opts.Count > 0 && p >= f.opts.Count) || (f.opts.Count <= 0 && time.Since(begin) >= f.opts.Duration) {
			return
		}
	}
}

// drain waits until every subscription has every acknowledged post of its
// channel, or the drain time is up.
func (f *fanout) drain(ctx context.Context) {
	f.mu.Lock()
	last := make([]uint64, len(f.acked))
	for c, seqs := range f.acked {
		for _, s := range seqs {
			last[c] = max(last[c], s)
		}
	}
	f.mu.Unlock()
	deadline := time.Now().Add(f.opts.Drain)
	for time.Now().Before(deadline) {
		done := true
		for _, s := range f.subs {
			if ch, check := s.order(); !check.complete(last[ch]) {
				done = false
				break
			}
		}
		if done || !sleep(ctx, 10*time.Millisecond) {
			return
		}
	}
}

// post sends posts until stopping: one at a time, or at the rate.
func (f *fanout) post(ctx context.Context) {
	clients := make([]fanPoster, len(f.opts.Targets))
	for i, t := range f.opts.Targets {
		tr := &http.Transport{MaxIdleConnsPerHost: maxInFlight, IdleConnTimeout: time.Minute}
		if f.opts.Rate == 0 {
			tr.MaxConnsPerHost = 1
		}
		defer tr.CloseIdleConnections()
		clients[i] = f.sys.poster(&http.Client{Transport: tr}, t)
	}
	send := func(k int64) {
		f.postOne(ctx, clients[k%int64(len(clients))], k)
	}
	if f.opts.Rate == 0 {
		for k := int64(0); !f.stopping.Load() && ctx.Err() == nil; k++ {
			send(k)
		}
		return
	}
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(float64(time.Second) / f.opts.Rate)
	due := time.Now()
	for k := int64(0); !f.stopping.Load(); k++ {
		if !sleep(ctx, time.Until(due)) {
			return
		}
		due = due.Add(interval)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			send(k)
		})
	}
}

// postOne sends post k and records its answer.
func (f *fanout) postOne(ctx context.Context, c fanPoster, k int64) {
	ch := int(k % int64(len(f.channels)))
	measured := f.measuring.Load()
	sent := time.Since(f.base)
	seq, code, err := c.post(ctx, f.channels[ch], f.text, postID(measured, k, sent))
	took := time.Since(f.base) - sent
	if err != nil {
		if ctx.Err() == nil {
			f.mu.Lock()
			f.postErrs[code]++
			f.mu.Unlock()
		}
		return
	}
	f.mu.Lock()
	f.acked[ch] = append(f.acked[ch], seq)
	if measured {
		f.measured[ch]++
	}
	f.mu.Unlock()
	if measured {
		f.postHist.record(took)
		f.posts.Add(1)
	}
}

// delivered checks and measures one event received by a subscriber of
// channel (an index into f.channels) with check: the event's channel, its
// seq and the id its post was sent with.
func (f *fanout) delivered(channel int, check *orderCheck, evChannel string, seq uint64, id string, now time.Duration) {
	f.received.Add(1)
	switch {
	case evChannel != f.channels[channel]:
		f.misrouted.Add(1)
		f.violations.Add(1)
		return
	case check.event(seq):
		f.violations.Add(1)
	}
	measured, sent, ok := parsePostID(id)
	if !ok || !measured {
		return
	}
	f.deliveries.Add(1)
	f.hist.record(now - sent)
	f.tick.record(now - sent)
}

func (f *fanout) resync(reason string) {
	f.resyncs.Add(1)
	f.mu.Lock()
	f.resyncBy[reason]++
	f.mu.Unlock()
}

func (f *fanout) subscriberError(what string) {
	f.mu.Lock()
	f.subErrors[what]++
	f.mu.Unlock()
}
