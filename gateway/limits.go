package gateway

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// RetryAfterHeader tells a rate-limited client how long to wait.
const RetryAfterHeader = "Retry-After-Ms"

// rateLimiter is a token bucket per user: rate tokens a second, up to
// burst. It is mutex-guarded. A rate of 0 means no limit.
type rateLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu      sync.Mutex // guards following
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxIdleBuckets bounds the map: past it, full buckets (users idle long
// enough to have refilled) are dropped.
const maxIdleBuckets = 10_000

func newRateLimiter(rate float64) *rateLimiter {
	return &rateLimiter{rate: rate, burst: max(rate, 1), now: time.Now, buckets: make(map[string]*bucket)}
}

// allow takes a token for user, or says how long until one is available.
func (l *rateLimiter) allow(user string) (bool, time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[user]
	if b == nil {
		if len(l.buckets) >= maxIdleBuckets {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[user] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, max(wait, time.Millisecond)
}

func (l *rateLimiter) pruneLocked(now time.Time) {
	for user, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, user)
		}
	}
}

// rateLimited is the error for a refused post: resource_exhausted with
// Retry-After-Ms.
func rateLimited(wait time.Duration, rate float64) *connect.Error {
	ms := max(wait.Milliseconds(), 1)
	ce := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"rate limited: at most %g posts a second per user; retry after %d ms", rate, ms))
	ce.Meta().Set(RetryAfterHeader, strconv.FormatInt(ms, 10))
	return ce
}

// connLimiter counts each user's open WebSocket connections and Subscribe
// streams. It is mutex-guarded. A max of 0 means no limit.
type connLimiter struct {
	max int

	mu    sync.Mutex // guards following
	conns map[string]int
}

func newConnLimiter(max int) *connLimiter {
	return &connLimiter{max: max, conns: make(map[string]int)}
}

// connRetryAfter is the Retry-After-Ms given to a connection refused for
// its user's limit: a guess, since a slot frees when one of the user's
// connections closes.
const connRetryAfter = time.Second

// acquire counts one more connection for user, or refuses it with
// tooManyConns.
func (l *connLimiter) acquire(user string) error {
	if l == nil || l.max <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[user] >= l.max {
		return tooManyConns(l.max)
	}
	l.conns[user]++
	return nil
}

// tooManyConns is the refusal of a connection over its user's limit:
// resource_exhausted with Retry-After-Ms.
func tooManyConns(max int) *connect.Error {
	ms := connRetryAfter.Milliseconds()
	ce := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"too many connections: a user may hold at most %d WebSocket connections and Subscribe streams on a node; "+
			"close one, or retry after %d ms", max, ms))
	ce.Meta().Set(RetryAfterHeader, strconv.FormatInt(ms, 10))
	return ce
}

// release counts one connection of user less.
func (l *connLimiter) release(user string) {
	if l == nil || l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[user]--; l.conns[user] <= 0 {
		delete(l.conns, user)
	}
}
