package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// benchNode starts a one-node Herald, creates the channel "bench", and
// stops the node when the benchmark ends.
func benchNode(b *testing.B) *node {
	b.Helper()
	// One connection per parallel client: share a transport that keeps
	// enough idle connections.
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	b.Cleanup(tr.CloseIdleConnections)
	// Errors only: the election warnings of a fresh node are expected.
	n := startNode(b, nodeOptions{client: &http.Client{Transport: tr}, logLevel: slog.LevelError})
	if _, err := n.Channels.CreateChannel(context.Background(), &heraldv1.CreateChannelRequest{ChannelId: "bench"}); err != nil {
		b.Fatal(err)
	}
	return n
}

// reportLatencies reports the p50 and p99 of ds in microseconds, beside
// ns/op.
func reportLatencies(b *testing.B, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	b.ReportMetric(float64(at(0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(at(0.99).Microseconds()), "p99-µs")
}

// BenchmarkPostMessage posts sequentially through the Connect client and
// the real HTTP server: each post is committed by Raft (fsynced log) and
// applied to bbolt before it returns.
func BenchmarkPostMessage(b *testing.B) {
	n := benchNode(b)
	ctx := context.Background()
	ds := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		req := &heraldv1.PostMessageRequest{ChannelId: "bench", Text: "benchmark message", ClientMsgId: fmt.Sprint("s", i)}
		start := time.Now()
		if _, err := n.Messages.PostMessage(ctx, req); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
		i++
	}
	reportLatencies(b, ds)
}

// BenchmarkPostMessageParallel posts from 8 × GOMAXPROCS goroutines at
// once (b.RunParallel), all to one channel, so Raft batches them; ns/op is
// the inverse of throughput, p50 and p99 are per post.
func BenchmarkPostMessageParallel(b *testing.B) {
	n := benchNode(b)
	ctx := context.Background()
	var next atomic.Int64
	var mu sync.Mutex
	var ds []time.Duration
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var local []time.Duration
		for pb.Next() {
			req := &heraldv1.PostMessageRequest{ChannelId: "bench", Text: "benchmark message",
				ClientMsgId: fmt.Sprint("p", next.Add(1))}
			start := time.Now()
			if _, err := n.Messages.PostMessage(ctx, req); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(start))
		}
		mu.Lock()
		ds = append(ds, local...)
		mu.Unlock()
	})
	b.StopTimer()
	reportLatencies(b, ds)
}
