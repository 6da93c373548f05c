package storage

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestSeqKeyOrder(t *testing.T) {
	seqs := []uint64{0, 1, 2, 255, 256, 65535, 65536, 1 << 32, math.MaxUint64 - 1, math.MaxUint64}
	for _, ch := range []string{"a", "general", strings.Repeat("z", MaxIDLen)} {
		for i := 1; i < len(seqs); i++ {
			a, b := seqKey(ch, seqs[i-1]), seqKey(ch, seqs[i])
			if bytes.Compare(a, b) >= 0 {
				t.Errorf("seqKey(%q, %d) = %x is not before seqKey(%q, %d) = %x", ch, seqs[i-1], a, ch, seqs[i], b)
			}
		}
	}
}

func TestKeysOfDifferentChannelsDoNotInterleave(t *testing.T) {
	// "a" is a byte prefix of "ab", and "a" ‖ seq could look like "ab" ‖ ...
	// without the length field; with it, one channel's keys are contiguous.
	pairs := [][2]string{{"a", "ab"}, {"a", "a."}, {"ab", "b"}, {"general", "general-2"}, {"x", "xx"}}
	for _, p := range pairs {
		lo, hi := seqKey(p[0], 0), seqKey(p[0], math.MaxUint64)
		for _, s := range []uint64{0, 1, 0x6200000000000000, math.MaxUint64} {
			k := seqKey(p[1], s)
			if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0 {
				t.Errorf("seqKey(%q, %d) = %x falls inside the key range of %q [%x, %x]", p[1], s, k, p[0], lo, hi)
			}
			if bytes.HasPrefix(k, chanPrefix(p[0])) {
				t.Errorf("seqKey(%q, %d) = %x has the prefix of %q", p[1], s, k, p[0])
			}
		}
	}
}

func TestThreadAndMemberKeys(t *testing.T) {
	k := threadKey("general", 7, 9)
	if !bytes.HasPrefix(k, seqKey("general", 7)) || seqFromSuffix(k) != 9 || len(k) != len(seqKey("general", 7))+8 {
		t.Errorf("threadKey(general, 7, 9) = %x, want seqKey(general, 7) ‖ 9", k)
	}
	// Member keys of different (channel, user) splits differ.
	if bytes.Equal(memberKey("a", "bc"), memberKey("ab", "c")) {
		t.Errorf("memberKey(a, bc) = memberKey(ab, c) = %x, want different", memberKey("a", "bc"))
	}
	if got := seqFromSuffix([]byte{1, 2}); got != 0 {
		t.Errorf("seqFromSuffix(2 bytes) = %d, want 0", got)
	}
}

func TestDecodeRejectsForeignKeys(t *testing.T) {
	for _, k := range [][]byte{nil, {0}, {0, 5, 'a'}, append(seqKey("ab", 1), 0), seqKey("ab", 1)[:5]} {
		if ch, seq, ok := decodeSeqKey(k); ok {
			t.Errorf("decodeSeqKey(%x) = %q, %d, true; want ok false", k, ch, seq)
		}
	}
	for _, k := range [][]byte{nil, {0}, {0, 5, 'a'}, {0, 1, 'a', 0}, {0, 1, 'a', 0, 3, 'x'}} {
		if ch, au, id, ok := decodeDedupKey(k); ok {
			t.Errorf("decodeDedupKey(%x) = %q, %q, %q, true; want ok false", k, ch, au, id)
		}
	}
}

// FuzzKeys checks the key encodings: seqKey and dedupKey round-trip through
// their decoders, byte order equals numeric seq order within a channel, and
// keys of two different channels never share a channel prefix.
func FuzzKeys(f *testing.F) {
	f.Add("general", "alice", "cid-1", uint64(1), uint64(2), "random", uint16(0))
	f.Add("a", "b", "", uint64(0), uint64(math.MaxUint64), "ab", uint16(0))
	f.Add("", "", "", uint64(255), uint64(256), "\x00", uint16(0))
	f.Add("ab", "", "c", uint64(1<<56), uint64(1<<8), "a", uint16(0))
	f.Add("\x00\x01", "\xff\xfe", "\x00", uint64(math.MaxUint64), uint64(0), "\x00\x01\x00", uint16(0))
	f.Add("c", "u", "x", uint64(7), uint64(7), "cc", uint16(math.MaxUint16))
	f.Add("long-", "u", "x", uint64(7), uint64(8), "long-long", uint16(300))
	f.Fuzz(func(t *testing.T, channel, author, clientMsgID string, s1, s2 uint64, other string, grow uint16) {
		// grow stretches channel, author and other to up to 64 KiB - 1 (the
		// most a uint16 length field holds) by repetition, which reaches
		// long strings without long corpus entries.
		stretch := func(s string) string {
			if s == "" || int(grow) <= len(s) {
				return s
			}
			return strings.Repeat(s, int(grow)/len(s)+1)[:grow]
		}
		channel, author, other = stretch(channel), stretch(author), stretch(other)
		const maxLen = math.MaxUint16 // the length fields are uint16
		if len(channel) > maxLen || len(author) > maxLen || len(other) > maxLen || len(clientMsgID) > 64<<10 {
			t.Skip()
		}
		k1 := seqKey(channel, s1)
		gotCh, gotSeq, ok := decodeSeqKey(k1)
		if !ok || gotCh != channel || gotSeq != s1 {
			t.Fatalf("decodeSeqKey(seqKey(%q, %d)) = %q, %d, %v; want the inputs", channel, s1, gotCh, gotSeq, ok)
		}
		if seqFromSuffix(k1) != s1 {
			t.Fatalf("seqFromSuffix(seqKey(%q, %d)) = %d", channel, s1, seqFromSuffix(k1))
		}

		dk := dedupKey(channel, author, clientMsgID)
		c, a, id, ok := decodeDedupKey(dk)
		if !ok || c != channel || a != author || id != clientMsgID {
			t.Fatalf("decodeDedupKey(dedupKey(%q, %q, %q)) = %q, %q, %q, %v; want the inputs",
				channel, author, clientMsgID, c, a, id, ok)
		}

		// Byte order is numeric order for a fixed channel.
		k2 := seqKey(channel, s2)
		if cmp, want := bytes.Compare(k1, k2), cmpU64(s1, s2); cmp != want {
			t.Fatalf("bytes.Compare(seqKey(%q, %d), seqKey(%q, %d)) = %d, want %d", channel, s1, channel, s2, cmp, want)
		}
		if tk := threadKey(channel, s1, s2); !bytes.HasPrefix(tk, k1) || seqFromSuffix(tk) != s2 {
			t.Fatalf("threadKey(%q, %d, %d) = %x, want seqKey ‖ %d", channel, s1, s2, tk, s2)
		}

		// Keys of another channel never share this channel's prefix.
		if other == channel {
			return
		}
		p := chanPrefix(channel)
		for _, k := range [][]byte{
			seqKey(other, s2), threadKey(other, s1, s2), memberKey(other, author),
			dedupKey(other, author, clientMsgID), chanPrefix(other),
		} {
			if bytes.HasPrefix(k, p) {
				t.Fatalf("a key of channel %q (%x) starts with the prefix of channel %q (%x)", other, k, channel, p)
			}
		}
		if oc, _, ok := decodeSeqKey(seqKey(other, s2)); !ok || oc == channel {
			t.Fatalf("decodeSeqKey(seqKey(%q, %d)) = %q, %v", other, s2, oc, ok)
		}
	})
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestChanPrefixCutsLongIDs(t *testing.T) {
	// Ids are validated to 64 bytes; the encoding stays total past the
	// 16-bit length field rather than panic.
	long := strings.Repeat("x", math.MaxUint16+10)
	p := chanPrefix(long)
	if len(p) != 2+math.MaxUint16 {
		t.Errorf("chanPrefix of a %d-byte id is %d bytes, want %d", len(long), len(p), 2+math.MaxUint16)
	}
	if k := dedupKey("c", long, "id"); len(k) != 2+1+2+math.MaxUint16+2 {
		t.Errorf("dedupKey with a %d-byte author is %d bytes, want it cut", len(long), len(k))
	}
}
