package ring

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// refPartition computes floor(h × partitions / 2^64) with big integers.
func refPartition(h uint64, partitions uint32) uint32 {
	n := new(big.Int).Mul(new(big.Int).SetUint64(h), new(big.Int).SetUint64(uint64(partitions)))
	return uint32(n.Rsh(n, 64).Uint64())
}

func TestPartitionOfBoundaries(t *testing.T) {
	for _, partitions := range []uint32{1, 2, 3, 7, 16, 64, 1000, math.MaxUint32} {
		tests := []struct {
			h    uint64
			want uint32
		}{
			{0, 0},
			{1, 0},
			{math.MaxUint64, partitions - 1},
			{math.MaxUint64 - 1, partitions - 1},
		}
		for _, tt := range tests {
			if got := partitionOf(tt.h, partitions); got != tt.want {
				t.Errorf("partitionOf(%#x, %d): got %d, want %d", tt.h, partitions, got, tt.want)
			}
		}
		if got := partitionOf(math.MaxUint64, 0); got != 0 {
			t.Errorf("partitionOf(max, 0): got %d, want 0", got)
		}
	}
}

// TestRangeEdges checks that every range's first and last tokens map to
// the range's partition and that the tokens just outside map to its
// neighbours.
func TestRangeEdges(t *testing.T) {
	for _, partitions := range []uint32{1, 2, 3, 5, 16, 64, 1000, 65537} {
		step := max(partitions/500, 1)
		for p := uint32(0); p < partitions; p += step {
			first, last := Range(p, partitions)
			if first > last {
				t.Fatalf("Range(%d, %d): got first %#x > last %#x", p, partitions, first, last)
			}
			if got := partitionOf(first, partitions); got != p {
				t.Errorf("P=%d: partitionOf(first of %d = %#x): got %d, want %d", partitions, p, first, got, p)
			}
			if got := partitionOf(last, partitions); got != p {
				t.Errorf("P=%d: partitionOf(last of %d = %#x): got %d, want %d", partitions, p, last, got, p)
			}
			if p > 0 {
				if got := partitionOf(first-1, partitions); got != p-1 {
					t.Errorf("P=%d: partitionOf(first of %d - 1): got %d, want %d", partitions, p, got, p-1)
				}
			}
			if p < partitions-1 {
				if got := partitionOf(last+1, partitions); got != p+1 {
					t.Errorf("P=%d: partitionOf(last of %d + 1): got %d, want %d", partitions, p, got, p+1)
				}
			}
		}
	}
}

func TestPartitionOfMatchesBigInt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, partitions := range []uint32{1, 2, 3, 16, 64, 1000, 1 << 31, math.MaxUint32} {
		for range 20000 {
			h := r.Uint64()
			if got, want := partitionOf(h, partitions), refPartition(h, partitions); got != want {
				t.Fatalf("partitionOf(%#x, %d): got %d, want %d", h, partitions, got, want)
			}
		}
	}
}
