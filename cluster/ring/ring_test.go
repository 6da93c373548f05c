package ring_test

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/heraldhq/herald/cluster/ring"
)

// refPartition computes floor(Hash(id) × partitions / 2^64) with big
// integers.
func refPartition(id string, partitions uint32) uint32 {
	n := new(big.Int).Mul(new(big.Int).SetUint64(ring.Hash(id)), new(big.Int).SetUint64(uint64(partitions)))
	return uint32(n.Rsh(n, 64).Uint64())
}

// randomID returns a random channel id of 1..32 printable bytes.
func randomID(r *rand.Rand) string {
	b := make([]byte, 1+r.IntN(32))
	for i := range b {
		b[i] = byte(' ' + r.IntN(95))
	}
	return string(b)
}

func TestPartitionAgreesWithRange(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for _, partitions := range []uint32{1, 2, 3, 16, 64, 1000} {
		t.Run(strconv.Itoa(int(partitions)), func(t *testing.T) {
			for range 5000 {
				id := randomID(r)
				p := ring.Partition(id, partitions)
				if p >= partitions {
					t.Fatalf("Partition(%q, %d): got %d, want < %d", id, partitions, p, partitions)
				}
				h := ring.Hash(id)
				first, last := ring.Range(p, partitions)
				if h < first || h > last {
					t.Fatalf("Partition(%q, %d) = %d: got hash %#x outside Range [%#x, %#x]", id, partitions, p, h, first, last)
				}
				if want := refPartition(id, partitions); p != want {
					t.Fatalf("Partition(%q, %d): got %d, want %d (big.Int)", id, partitions, p, want)
				}
			}
		})
	}
}

func TestRangesCoverSpace(t *testing.T) {
	for _, partitions := range []uint32{1, 2, 3, 16, 64, 1000} {
		var next uint64
		minSize, maxSize := uint64(math.MaxUint64), uint64(0)
		for p := range partitions {
			first, last := ring.Range(p, partitions)
			if first != next {
				t.Fatalf("Range(%d, %d): got first %#x, want %#x (previous last + 1)", p, partitions, first, next)
			}
			size := last - first // one less than the token count
			minSize, maxSize = min(minSize, size), max(maxSize, size)
			next = last + 1
		}
		if _, last := ring.Range(partitions-1, partitions); last != math.MaxUint64 {
			t.Errorf("Range(%d, %d): got last %#x, want %#x", partitions-1, partitions, last, uint64(math.MaxUint64))
		}
		if maxSize-minSize > 1 {
			t.Errorf("P=%d: got range sizes %d..%d, want them to differ by at most 1", partitions, minSize, maxSize)
		}
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name        string
		p, parts    uint32
		first, last uint64
	}{
		{"zero partitions", 0, 0, 0, 0},
		{"p equals partitions", 4, 4, 0, 0},
		{"p beyond partitions", math.MaxUint32, 4, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, last := ring.Range(tt.p, tt.parts)
			if first != tt.first || last != tt.last {
				t.Errorf("Range(%d, %d): got (%d, %d), want (%d, %d)", tt.p, tt.parts, first, last, tt.first, tt.last)
			}
		})
	}
	if got := ring.Partition("general", 0); got != 0 {
		t.Errorf("Partition(%q, 0): got %d, want 0", "general", got)
	}
}

func TestUniformity(t *testing.T) {
	const partitions = 16
	const n = 100_000
	var counts [partitions]int
	for i := range n {
		counts[ring.Partition("channel-"+strconv.Itoa(i), partitions)]++
	}
	const mean = n / partitions
	for p, c := range counts {
		if c < mean*9/10 || c > mean*11/10 {
			t.Errorf("%d ids over %d partitions: got %d in partition %d, want %d ± 10%%", n, partitions, c, p, mean)
		}
	}
}

func TestStable(t *testing.T) {
	// Pinned values: if one changes, channels move between partitions and
	// every existing cluster breaks.
	tests := []struct {
		id         string
		partitions uint32
		want       uint32
		hash       uint64
	}{
		{"", 1, 0, 0xef46db3751d8e999},
		{"", 16, 14, 0xef46db3751d8e999},
		{"", 1000, 934, 0xef46db3751d8e999},
		{"general", 16, 8, 0x8d0606d02950d07b},
		{"general", 1000, 550, 0x8d0606d02950d07b},
		{"random", 16, 3, 0x3ad739c348467a34},
		{"c/123", 16, 13, 0xd56d4d1bc54c6044},
		{"c/123", 1000, 833, 0xd56d4d1bc54c6044},
	}
	for _, tt := range tests {
		if got := ring.Hash(tt.id); got != tt.hash {
			t.Errorf("Hash(%q): got %#x, want %#x", tt.id, got, tt.hash)
		}
		if got := ring.Partition(tt.id, tt.partitions); got != tt.want {
			t.Errorf("Partition(%q, %d): got %d, want %d", tt.id, tt.partitions, got, tt.want)
		}
	}
}

func FuzzPartition(f *testing.F) {
	for _, s := range []struct {
		id         string
		partitions uint32
	}{
		{"", 1}, {"", 0}, {"general", 16}, {"random", 3}, {"c/123", 1000},
		{"\x00\xff", 64}, {"a-very-long-channel-identifier-0123456789", math.MaxUint32},
	} {
		f.Add(s.id, s.partitions)
	}
	f.Fuzz(func(t *testing.T, id string, partitions uint32) {
		p := ring.Partition(id, partitions)
		if partitions == 0 {
			if p != 0 {
				t.Fatalf("Partition(%q, 0): got %d, want 0", id, p)
			}
			return
		}
		if p >= partitions {
			t.Fatalf("Partition(%q, %d): got %d, want < %d", id, partitions, p, partitions)
		}
		if want := refPartition(id, partitions); p != want {
			t.Fatalf("Partition(%q, %d): got %d, want %d (big.Int)", id, partitions, p, want)
		}
		h := ring.Hash(id)
		if first, last := ring.Range(p, partitions); h < first || h > last {
			t.Fatalf("Partition(%q, %d) = %d: got hash %#x outside Range [%#x, %#x]", id, partitions, p, h, first, last)
		}
	})
}

func ExamplePartition() {
	p := ring.Partition("general", 16)
	first, last := ring.Range(p, 16)
	h := ring.Hash("general")
	fmt.Println(p < 16, first <= h && h <= last)
	// Output: true true
}
