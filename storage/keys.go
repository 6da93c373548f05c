package storage

import (
	"encoding/binary"
	"math"
)

// Key layout. Every per-channel key starts with the channel prefix
// uint16be(len(channel)) ‖ channel, so one channel's keys are contiguous and
// "a" never interleaves with "ab". Sequence numbers are big-endian uint64 so
// that bbolt cursors walk them in numeric order.
//
//	channels  channel                          → ChannelRecord
//	members   prefix ‖ user                    → empty
//	events    prefix ‖ seq                     → Event
//	messages  prefix ‖ seq                     → MessageRecord
//	roots     prefix ‖ seq                     → empty (top-level messages)
//	threads   prefix ‖ parent seq ‖ reply seq  → empty
//	dedup     prefix ‖ uint16be(len(author)) ‖ author ‖ client_msg_id → uint64be seq
//	meta      "applied"                        → uint64be index ‖ uint64be term

// chanPrefix returns the key prefix of a channel. Channel ids are validated
// to at most 64 bytes; longer ones are cut to fit the length field rather
// than panic, which keeps the encoding total.
func chanPrefix(channel string) []byte {
	if len(channel) > math.MaxUint16 {
		channel = channel[:math.MaxUint16]
	}
	b := make([]byte, 2, 2+len(channel)+16)
	binary.BigEndian.PutUint16(b, uint16(len(channel)))
	return append(b, channel...)
}

// seqKey returns prefix(channel) ‖ seq.
func seqKey(channel string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(chanPrefix(channel), seq)
}

// threadKey returns prefix(channel) ‖ parent ‖ reply.
func threadKey(channel string, parent, reply uint64) []byte {
	return binary.BigEndian.AppendUint64(seqKey(channel, parent), reply)
}

// memberKey returns prefix(channel) ‖ user.
func memberKey(channel, user string) []byte {
	return append(chanPrefix(channel), user...)
}

// dedupKey returns prefix(channel) ‖ uint16be(len(author)) ‖ author ‖ clientMsgID.
func dedupKey(channel, author, clientMsgID string) []byte {
	if len(author) > math.MaxUint16 {
		author = author[:math.MaxUint16]
	}
	b := chanPrefix(channel)
	b = binary.BigEndian.AppendUint16(b, uint16(len(author)))
	b = append(b, author...)
	return append(b, clientMsgID...)
}

// decodeSeqKey splits a key made by seqKey. ok is false if k is not one.
func decodeSeqKey(k []byte) (channel string, seq uint64, ok bool) {
	if len(k) < 2 {
		return "", 0, false
	}
	n := int(binary.BigEndian.Uint16(k))
	if len(k) != 2+n+8 {
		return "", 0, false
	}
	return string(k[2 : 2+n]), binary.BigEndian.Uint64(k[2+n:]), true
}

// decodeDedupKey splits a key made by dedupKey. ok is false if k is not one.
func decodeDedupKey(k []byte) (channel, author, clientMsgID string, ok bool) {
	if len(k) < 2 {
		return "", "", "", false
	}
	n := int(binary.BigEndian.Uint16(k))
	k = k[2:]
	if len(k) < n+2 {
		return "", "", "", false
	}
	channel, k = string(k[:n]), k[n:]
	m := int(binary.BigEndian.Uint16(k))
	k = k[2:]
	if len(k) < m {
		return "", "", "", false
	}
	return channel, string(k[:m]), string(k[m:]), true
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func seqFromSuffix(k []byte) uint64 {
	if len(k) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(k)-8:])
}
