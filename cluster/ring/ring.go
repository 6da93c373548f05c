// Package ring maps channel ids to partitions.
//
// A channel's partition is hi64(xxhash64(channelID) × P), computed with
// math/bits.Mul64: the 64-bit hash space is cut into P equal token ranges
// and a channel belongs to the range its hash falls in. P is fixed when the
// cluster is bootstrapped, so a channel never moves between partitions;
// only partitions' replicas move between nodes.
//
// Every function is pure and safe for concurrent use. None panics: inputs
// outside the documented domain give a documented zero result.
package ring

import (
	"math"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// Hash returns the 64-bit token of channelID: its xxhash64.
func Hash(channelID string) uint64 {
	return xxhash.Sum64String(channelID)
}

// Partition returns the partition, in [0, partitions), that owns
// channelID. partitions must be at least 1; for 0 it returns 0.
func Partition(channelID string, partitions uint32) uint32 {
	return partitionOf(Hash(channelID), partitions)
}

// partitionOf returns floor(h × partitions / 2^64), the partition whose
// token range holds h, or 0 when partitions is 0.
func partitionOf(h uint64, partitions uint32) uint32 {
	hi, _ := bits.Mul64(h, uint64(partitions))
	return uint32(hi)
}

// Range returns the inclusive token range [first, last] of partition p out
// of partitions: a token h is in partition p iff first <= h <= last. The
// ranges of partitions 0..partitions-1 are contiguous, cover the whole
// 64-bit space and differ in size by at most one token.
//
// partitions must be at least 1 and p less than partitions; otherwise Range
// returns (0, 0), which is never a valid range because every valid range
// holds at least 2^32 tokens.
func Range(p, partitions uint32) (first, last uint64) {
	if partitions == 0 || p >= partitions {
		return 0, 0
	}
	first = lowerBound(p, partitions)
	if p == partitions-1 {
		return first, math.MaxUint64
	}
	return first, lowerBound(p+1, partitions) - 1
}

// lowerBound returns the smallest token in partition p, ceil(p × 2^64 / P).
// It requires 0 < partitions and p < partitions, so the quotient fits in 64
// bits and bits.Div64 cannot panic.
func lowerBound(p, partitions uint32) uint64 {
	q, r := bits.Div64(uint64(p), 0, uint64(partitions))
	if r != 0 {
		q++
	}
	return q
}
