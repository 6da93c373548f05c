package storage_test

import (
	"fmt"
	"testing"

	"github.com/heraldhq/herald/storage"
)

// BenchmarkApplyBatch applies batches of posts as the state machine does
// with what raft commits together: one write transaction per batch
// (commit=batch, unsynced: Options.NoSync), or, as a replica does
// (commit=held, Options.DeferSync), with its commits held across batches
// and made every holdMaxEntries entries or holdMaxAge (hold.go). The
// shape is a partition's under `herald bench post`: posts by a member,
// spread over 4 channels, each with its own client_msg_id (so each writes
// the event, the message, the roots index, the dedup entry and the
// channel record), into a state that already holds 20,000 posts. The
// state file is not fsynced, so this is the CPU and page-write cost.
// Every post must be applied: a rejected command costs a fraction of one,
// and would make the figure meaningless.
func BenchmarkApplyBatch(b *testing.B) {
	modes := []struct {
		name string
		opts storage.Options
	}{
		{"batch", storage.Options{NoSync: true}},
		{"held", storage.Options{DeferSync: true}},
	}
	for _, mode := range modes {
		for _, size := range []int{1, 20, 128} {
			b.Run(fmt.Sprintf("commit=%s/batch=%d", mode.name, size), func(b *testing.B) {
				benchApplyBatch(b, mode.opts, size)
			})
		}
	}
}

func benchApplyBatch(b *testing.B, opts storage.Options, size int) {
	const channels, prefill = 4, 20000
	text := string(make([]byte, 128))
	db := openDB(b, opts)
	index, n := uint64(0), 0
	apply := func(batch []storage.Entry) {
		results, _, err := db.Apply(batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			if r.Err != nil || r.Message == nil || r.Duplicate {
				b.Fatalf("post not applied: %+v", r)
			}
		}
	}
	for c := range channels {
		index++
		_, _, err := db.Apply([]storage.Entry{{Index: index, Term: 1, Cmd: as("u1", createCmd(fmt.Sprintf("bench-%d", c), false))}})
		if err != nil {
			b.Fatal(err)
		}
	}
	fill := func(size int) []storage.Entry {
		batch := make([]storage.Entry, size)
		for i := range batch {
			index++
			n++
			channel, id := fmt.Sprintf("bench-%d", n%channels), fmt.Sprintf("c%d-%d", n%64, n)
			batch[i] = storage.Entry{Index: index, Term: 1, Cmd: as("u1", postCmd(channel, text, id))}
		}
		return batch
	}
	for n < prefill {
		apply(fill(128))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		apply(fill(size))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/post")
}
