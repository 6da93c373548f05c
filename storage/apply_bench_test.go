package storage_test

import (
	"fmt"
	"testing"

	"github.com/heraldhq/herald/storage"
)

// BenchmarkApplyBatch applies batches of posts to one channel, as the
// state machine does with what raft commits together: one write
// transaction per batch. The state file is not fsynced (as a replica's,
// DeferSync), so this is the CPU and page-write cost.
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			db := openDB(b, storage.Options{DeferSync: true})
			if _, _, err := db.Apply([]storage.Entry{{Index: 1, Term: 1, Cmd: createCmd("c", false)}}); err != nil {
				b.Fatal(err)
			}
			index := uint64(1)
			text := string(make([]byte, 128))
			batch := make([]storage.Entry, size)
			b.ReportAllocs()
			for b.Loop() {
				for i := range batch {
					index++
					batch[i] = storage.Entry{Index: index, Term: 1, Cmd: postCmd("c", text, fmt.Sprintf("m%d", index))}
				}
				if _, _, err := db.Apply(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/post")
		})
	}
}
