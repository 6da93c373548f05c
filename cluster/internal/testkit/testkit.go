// Package testkit is what the tests of the cluster packages share: waiting
// for a condition, and logs that reach the test's output only while the
// test runs and count the messages they saw. It is for tests only.
package testkit

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// CheckFor polls fn every step until it returns nil, failing the test with
// fn's last error if that takes longer than total.
func CheckFor(t testing.TB, total, step time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(step)
	}
}

// Output returns a writer to t's output that drops writes once the test
// has ended, so goroutines that outlive it (Raft's, a transport's) cannot
// write to a finished test.
func Output(t testing.TB) io.Writer {
	w := &testWriter{w: t.Output()}
	t.Cleanup(func() {
		w.mu.Lock()
		w.w = nil
		w.mu.Unlock()
	})
	return w
}

type testWriter struct {
	mu sync.Mutex
	// guards following
	w io.Writer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return len(p), nil
	}
	return w.w.Write(p)
}

// LogSink is a slog.Handler that counts every record's message at Info
// and above, and writes records at Warn and above (Debug and above when
// its environment variable is set) to the test's output. Records below
// Info are dropped otherwise.
type LogSink struct {
	out   slog.Handler
	level slog.Level

	mu *sync.Mutex // guards following
	n  map[string]int
}

// NewLogSink returns a LogSink for node's records in t; setting the
// environment variable env to anything shows Debug records too.
func NewLogSink(t testing.TB, node, env string) *LogSink {
	level := slog.LevelWarn
	if os.Getenv(env) != "" {
		level = slog.LevelDebug
	}
	out := slog.NewTextHandler(Output(t), &slog.HandlerOptions{Level: level}).
		WithAttrs([]slog.Attr{slog.String("node", node)})
	return &LogSink{out: out, level: level, mu: &sync.Mutex{}, n: make(map[string]int)}
}

func (s *LogSink) Enabled(_ context.Context, l slog.Level) bool {
	return l >= min(s.level, slog.LevelInfo)
}

func (s *LogSink) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		s.mu.Lock()
		s.n[r.Message]++
		s.mu.Unlock()
	}
	if r.Level >= s.level {
		return s.out.Handle(ctx, r)
	}
	return nil
}

func (s *LogSink) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *s
	c.out = s.out.WithAttrs(attrs)
	return &c
}

func (s *LogSink) WithGroup(name string) slog.Handler {
	c := *s
	c.out = s.out.WithGroup(name)
	return &c
}

// Count returns how often msg was logged at Info or above.
func (s *LogSink) Count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[msg]
}
