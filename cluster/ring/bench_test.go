package ring_test

import (
	"fmt"
	"testing"

	"github.com/heraldhq/herald/cluster/ring"
)

// BenchmarkPartition is the channel-to-partition lookup every request
// makes.
func BenchmarkPartition(b *testing.B) {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("channel-%06d", i)
	}
	b.ReportAllocs()
	var sink uint32
	for i := 0; b.Loop(); i++ {
		sink += ring.Partition(ids[i%len(ids)], 16)
	}
	_ = sink
}
