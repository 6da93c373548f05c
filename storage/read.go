package storage

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// Caller is who a read is for; it decides which channels are visible.
type Caller struct {
	User  string
	Admin bool
}

// Reader answers queries inside one read transaction (DB.View). Every
// method checks visibility for its Caller: a private channel is not found
// unless the caller is a member or an admin.
type Reader struct {
	tx *bolt.Tx
}

// AppliedIndex returns the Raft index the state reflects.
func (r *Reader) AppliedIndex() uint64 {
	index, _ := readApplied(r.tx)
	return index
}

// Channel returns a channel visible to c and whether c is a member.
func (r *Reader) Channel(c Caller, id string) (*heraldv1.Channel, bool, error) {
	rec, member, err := r.visible(c, id)
	if err != nil {
		return nil, false, err
	}
	return rec.GetChannel(), member, nil
}

func (r *Reader) visible(c Caller, id string) (*clusterv1.ChannelRecord, bool, error) {
	if err := ValidateChannelID(id); err != nil {
		return nil, false, err
	}
	rec, err := getChannel(r.tx, id)
	if err != nil || rec == nil {
		return nil, false, errOr(err, channelNotFound(id))
	}
	member := r.tx.Bucket(bucketMembers).Get(memberKey(id, c.User)) != nil
	if rec.GetChannel().GetPrivate() && !member && !c.Admin {
		return nil, false, channelNotFound(id)
	}
	return rec, member, nil
}

// ListChannels returns up to limit channels visible to c with ids after
// cursor, in id order, and whether more may follow.
func (r *Reader) ListChannels(c Caller, cursor string, limit int, excludeArchived bool) ([]*heraldv1.Channel, bool, error) {
	cur := r.tx.Bucket(bucketChannels).Cursor()
	k, v := cur.Seek([]byte(cursor))
	if k != nil && string(k) == cursor {
		k, v = cur.Next()
	}
	var out []*heraldv1.Channel
	members := r.tx.Bucket(bucketMembers)
	for ; k != nil; k, v = cur.Next() {
		rec := &clusterv1.ChannelRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, false, fmt.Errorf("decode channel %q: %w", k, err)
		}
		ch := rec.GetChannel()
		if excludeArchived && ch.GetArchived() {
			continue
		}
		if ch.GetPrivate() && !c.Admin && members.Get(memberKey(ch.GetId(), c.User)) == nil {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, ch)
	}
	return out, false, nil
}

// History answers a GetHistory request for c: top-level messages with
// after_seq < seq < before_seq (before_seq 0 = no upper bound), newest first
// unless oldest_first.
func (r *Reader) History(c Caller, req *heraldv1.GetHistoryRequest) (*heraldv1.GetHistoryResponse, error) {
	id := req.GetChannelId()
	if _, _, err := r.visible(c, id); err != nil {
		return nil, err
	}
	limit, err := ValidateLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	seqs, more := scanSeqs(r.tx.Bucket(bucketRoots), chanPrefix(id),
		req.GetAfterSeq(), req.GetBeforeSeq(), limit, !req.GetOldestFirst())
	msgs, err := r.messages(id, seqs)
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetHistoryResponse{Messages: msgs, HasMore: more, AppliedIndex: r.AppliedIndex()}, nil
}

// Thread answers a GetThread request for c: the parent and its replies
// after after_seq, oldest first.
func (r *Reader) Thread(c Caller, req *heraldv1.GetThreadRequest) (*heraldv1.GetThreadResponse, error) {
	id := req.GetChannelId()
	if _, _, err := r.visible(c, id); err != nil {
		return nil, err
	}
	limit, err := ValidateLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	rec, err := getMessage(r.tx, id, req.GetThreadSeq())
	if err != nil || rec == nil || rec.GetMessage().GetThreadSeq() != 0 {
		return nil, errOr(err, domainErr(ErrNotFound, "thread %d not found in channel %q", req.GetThreadSeq(), id))
	}
	seqs, more := scanSeqs(r.tx.Bucket(bucketThreads), seqKey(id, req.GetThreadSeq()),
		req.GetAfterSeq(), 0, limit, false)
	replies, err := r.messages(id, seqs)
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetThreadResponse{Parent: rec.GetMessage(), Replies: replies, HasMore: more,
		AppliedIndex: r.AppliedIndex()}, nil
}

// messages loads the messages an index named, in order.
func (r *Reader) messages(channel string, seqs []uint64) ([]*heraldv1.Message, error) {
	out := make([]*heraldv1.Message, 0, len(seqs))
	for _, seq := range seqs {
		rec, err := getMessage(r.tx, channel, seq)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			return nil, fmt.Errorf("index names message %d of %q, which is missing", seq, channel)
		}
		out = append(out, rec.GetMessage())
	}
	return out, nil
}

// scanSeqs walks keys prefix ‖ seq of an index bucket with after < seq <
// before (before 0 = no bound), up to limit, descending or ascending, and
// reports whether more keys lie in the window.
func scanSeqs(b *bolt.Bucket, prefix []byte, after, before uint64, limit int, desc bool) ([]uint64, bool) {
	inWindow := func(k []byte) (uint64, bool) {
		if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
			return 0, false
		}
		seq := seqFromSuffix(k)
		return seq, seq > after && (before == 0 || seq < before)
	}
	cur := b.Cursor()
	var k []byte
	if desc {
		if before == 0 {
			// Seek past the last possible key of the prefix, then step back.
			k, _ = cur.Seek(append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		} else {
			k, _ = cur.Seek(append(bytes.Clone(prefix), u64(before)...))
		}
		if k == nil {
			k, _ = cur.Last()
		} else {
			k, _ = cur.Prev()
		}
	} else {
		if after == ^uint64(0) {
			return nil, false
		}
		k, _ = cur.Seek(append(bytes.Clone(prefix), u64(after+1)...))
	}
	var seqs []uint64
	for ; k != nil; k = step(cur, desc) {
		seq, ok := inWindow(k)
		if !ok {
			break
		}
		if len(seqs) == limit {
			return seqs, true
		}
		seqs = append(seqs, seq)
	}
	return seqs, false
}

func step(c *bolt.Cursor, desc bool) []byte {
	var k []byte
	if desc {
		k, _ = c.Prev()
	} else {
		k, _ = c.Next()
	}
	return k
}

// Events returns up to limit events of a channel with seq > after, oldest
// first, and the channel's head and oldest retained seq. It does not check
// visibility: callers check it when the subscription starts. If events after
// the cursor have been trimmed it returns ErrCursorExpired (as an *Error).
func (r *Reader) Events(channel string, after uint64, limit int) (evs []*heraldv1.Event, head, oldest uint64, err error) {
	rec, err := getChannel(r.tx, channel)
	if err != nil || rec == nil {
		return nil, 0, 0, errOr(err, channelNotFound(channel))
	}
	head, oldest = rec.GetChannel().GetHeadSeq(), rec.GetChannel().GetOldestSeq()
	if after >= head {
		return nil, head, oldest, nil
	}
	if after+1 < oldest {
		return nil, head, oldest, domainErr(ErrCursorExpired,
			"events after %d of channel %q are no longer retained; the oldest is %d", after, channel, oldest)
	}
	cur := r.tx.Bucket(bucketEvents).Cursor()
	prefix := chanPrefix(channel)
	for k, v := cur.Seek(seqKey(channel, after+1)); k != nil && len(evs) < limit; k, v = cur.Next() {
		if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
			break
		}
		ev := &heraldv1.Event{}
		if err := proto.Unmarshal(v, ev); err != nil {
			return nil, 0, 0, fmt.Errorf("decode event %d of %q: %w", seqFromSuffix(k), channel, err)
		}
		if want := after + uint64(len(evs)) + 1; ev.GetSeq() != want {
			return nil, 0, 0, fmt.Errorf("event log of %q has seq %d where %d belongs", channel, ev.GetSeq(), want)
		}
		evs = append(evs, ev)
	}
	return evs, head, oldest, nil
}
