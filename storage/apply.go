package storage

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// Entry is one committed Raft log entry to apply.
type Entry struct {
	Index uint64
	Term  uint64
	// Cmd is the decoded command; nil means there is nothing to apply (a
	// configuration entry, or a command that failed to decode, see Err), but
	// the index is still recorded as applied.
	Cmd *clusterv1.Command
	// Err is reported as the entry's result when Cmd is nil.
	Err error
}

// Result is the outcome of one Entry.
type Result struct {
	// Channel is set by channel commands.
	Channel *heraldv1.Channel
	// Message is set by message commands.
	Message *heraldv1.Message
	// Duplicate is true when a post's client_msg_id matched an earlier post,
	// whose message Message is.
	Duplicate bool
	// Skipped is true when the entry was at or below the applied index and
	// was therefore not applied again.
	Skipped bool
	// Err is a domain error (*Error); the command changed nothing.
	Err error
}

var marshal = proto.MarshalOptions{Deterministic: true}

// present is the value of keys whose presence is the data (members, roots,
// threads). It must not be nil: inside a write transaction bbolt's Get
// returns the value as it was put, so a key put with a nil value reads as
// missing until the transaction commits, and a member who joined earlier in
// the same batch would not be one.
var present = []byte{}

// Apply applies entries, in order, in one write transaction that also
// records the last entry's index and term as applied. Entries at or below
// the applied index are skipped (Raft redelivers entries after its latest
// snapshot on restart). It returns one Result per entry and the events
// appended, in order. With Options.DeferSync the transaction may be left
// open for later calls to apply into and committed later (hold.go); reads
// commit it first, so they see every entry Apply returned for.
//
// A command that fails with a domain error changes nothing and its Result
// carries the error. A non-nil error return means nothing of entries was
// applied. If it wraps ErrNoSpace (a full filesystem, or the file at
// Options.MaxSize) the same entries may be applied again once there is
// room; any other error (a failed sync, I/O, a closed DB) means the
// replica must stop, because the log cannot be applied past this point and
// a failed sync must never be retried.
func (d *DB) Apply(entries []Entry) ([]Result, []*heraldv1.Event, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return nil, nil, ErrClosed
	}
	h := &d.hold
	h.mu.Lock()
	defer h.mu.Unlock()
	again := h.tx == nil && len(h.entries) > 0
	tx, err := d.begin()
	if err != nil {
		return nil, nil, err
	}
	results, events, err := d.applyIn(tx, entries)
	if err != nil {
		_ = tx.Rollback() // the apply error is the one to report
		h.tx = nil
		h.failed = err
		return nil, nil, err
	}
	held, heldBytes := len(h.entries), h.bytes
	if len(h.entries) == 0 && d.opts.DeferSync {
		h.arm(d, holdMaxAge)
	}
	h.entries = append(h.entries, entries...)
	h.bytes += entriesSize(entries)
	if !d.opts.DeferSync || again || len(h.entries) >= holdMaxEntries || h.bytes >= holdMaxBytes {
		if err := d.commit(); err != nil {
			// The caller applies these entries again; earlier ones stay
			// held, committed as far as there is room.
			h.entries, h.bytes = h.entries[:held], heldBytes
			if errors.Is(err, ErrNoSpace) {
				d.commitEach()
			}
			return nil, nil, err
		}
	}
	return results, events, nil
}

// applyIn applies entries in tx and records the last one's index and term
// as applied; see Apply.
func (d *DB) applyIn(tx *bolt.Tx, entries []Entry) ([]Result, []*heraldv1.Event, error) {
	results := make([]Result, len(entries))
	var events []*heraldv1.Event
	applied, _ := readApplied(tx)
	var last *Entry
	for i := range entries {
		e := &entries[i]
		if e.Index <= applied {
			results[i] = Result{Skipped: true}
			continue
		}
		last = e
		if e.Cmd == nil {
			results[i] = Result{Err: e.Err}
			continue
		}
		a := applier{tx: tx, cmd: e.Cmd, skipDedup: d.opts.UnsafeSkipDedup}
		res, err := a.apply()
		var de *Error
		if errors.As(err, &de) {
			res = Result{Err: de}
		} else if err != nil {
			return nil, nil, fmt.Errorf("apply index %d: %w", e.Index, err)
		} else {
			events = append(events, a.events...)
		}
		results[i] = res
	}
	if last == nil {
		return results, events, nil
	}
	return results, events, writeApplied(tx, last.Index, last.Term)
}

// applier applies one command inside a write transaction. Handlers check
// everything that can fail with a domain error before their first write:
// bbolt has no savepoints, so a command must fail whole or not at all.
type applier struct {
	tx        *bolt.Tx
	cmd       *clusterv1.Command
	events    []*heraldv1.Event
	skipDedup bool // Options.UnsafeSkipDedup
}

func (a *applier) apply() (Result, error) {
	if err := ValidateUserID(a.cmd.GetUser()); err != nil && a.cmd.GetTrimEvents() == nil {
		return Result{}, err
	}
	switch op := a.cmd.GetOp().(type) {
	case *clusterv1.Command_CreateChannel:
		return a.createChannel(op.CreateChannel)
	case *clusterv1.Command_JoinChannel:
		return a.joinChannel(op.JoinChannel.GetChannelId())
	case *clusterv1.Command_LeaveChannel:
		return a.leaveChannel(op.LeaveChannel.GetChannelId())
	case *clusterv1.Command_ArchiveChannel:
		return a.archiveChannel(op.ArchiveChannel.GetChannelId())
	case *clusterv1.Command_PostMessage:
		return a.postMessage(op.PostMessage)
	case *clusterv1.Command_EditMessage:
		return a.editMessage(op.EditMessage)
	case *clusterv1.Command_DeleteMessage:
		return a.deleteMessage(op.DeleteMessage)
	case *clusterv1.Command_AddReaction:
		r := op.AddReaction
		return a.react(r.GetChannelId(), r.GetSeq(), r.GetName(), true)
	case *clusterv1.Command_RemoveReaction:
		r := op.RemoveReaction
		return a.react(r.GetChannelId(), r.GetSeq(), r.GetName(), false)
	case *clusterv1.Command_TrimEvents:
		return a.trimEvents(op.TrimEvents)
	default:
		return Result{}, domainErr(ErrInvalidArgument, "command has no known operation")
	}
}

// channel is a loaded channel record and what the caller may do with it.
type channel struct {
	rec    *clusterv1.ChannelRecord
	member bool
}

func (c *channel) id() string { return c.rec.GetChannel().GetId() }

// visible loads a channel and applies the first authorization step: it
// exists, and it is public, or the caller is a member or an admin.
func (a *applier) visible(id string) (*channel, error) {
	if err := ValidateChannelID(id); err != nil {
		return nil, err
	}
	rec, err := getChannel(a.tx, id)
	if err != nil || rec == nil {
		return nil, errOr(err, channelNotFound(id))
	}
	member := a.tx.Bucket(bucketMembers).Get(memberKey(id, a.cmd.GetUser())) != nil
	if rec.GetChannel().GetPrivate() && !member && !a.cmd.GetAdmin() {
		return nil, channelNotFound(id)
	}
	return &channel{rec: rec, member: member}, nil
}

func (a *applier) requireMember(c *channel, action string) error {
	if !c.member {
		return domainErr(ErrPermissionDenied, "join channel %q before %s", c.id(), action)
	}
	return nil
}

func requireActive(c *channel) error {
	if c.rec.GetChannel().GetArchived() {
		return domainErr(ErrFailedPrecondition, "channel %q is archived", c.id())
	}
	return nil
}

// ts returns the command's timestamp, never earlier than the channel's last.
func (a *applier) ts(c *channel) *timestamppb.Timestamp {
	last := c.rec.GetLastTs()
	t := a.cmd.GetTs()
	if t == nil || last != nil && t.AsTime().Before(last.AsTime()) {
		t = last
	}
	if t == nil {
		t = &timestamppb.Timestamp{}
	}
	return proto.Clone(t).(*timestamppb.Timestamp)
}

// emit appends an event to the channel's log: it advances the channel's
// head, and body fills in the event's body once its seq and ts are set. The
// caller stores the channel record afterwards.
func (a *applier) emit(c *channel, ts *timestamppb.Timestamp, body func(*heraldv1.Event)) error {
	ch := c.rec.GetChannel()
	ch.HeadSeq++
	if ch.OldestSeq == 0 {
		ch.OldestSeq = ch.HeadSeq
	}
	c.rec.LastTs = ts
	ev := &heraldv1.Event{ChannelId: ch.GetId(), Seq: ch.GetHeadSeq(), Ts: ts}
	body(ev)
	if err := putProto(a.tx.Bucket(bucketEvents), seqKey(ch.GetId(), ev.Seq), ev); err != nil {
		return err
	}
	a.events = append(a.events, ev)
	return nil
}

func (a *applier) putChannel(c *channel) error {
	return putProto(a.tx.Bucket(bucketChannels), []byte(c.id()), c.rec)
}

func (a *applier) createChannel(req *heraldv1.CreateChannelRequest) (Result, error) {
	id := req.GetChannelId()
	if err := ValidateChannelID(id); err != nil {
		return Result{}, err
	}
	if err := ValidateLabel("name", req.GetName(), MaxNameRunes); err != nil {
		return Result{}, err
	}
	if err := ValidateLabel("topic", req.GetTopic(), MaxTopicRunes); err != nil {
		return Result{}, err
	}
	if a.tx.Bucket(bucketChannels).Get([]byte(id)) != nil {
		return Result{}, domainErr(ErrAlreadyExists, "channel %q already exists", id)
	}
	name := req.GetName()
	if name == "" {
		name = id
	}
	c := &channel{rec: &clusterv1.ChannelRecord{Channel: &heraldv1.Channel{
		Id:          id,
		Name:        name,
		Topic:       req.GetTopic(),
		Private:     req.GetPrivate(),
		Creator:     a.cmd.GetUser(),
		MemberCount: 1,
	}}, member: true}
	ts := a.ts(c)
	c.rec.Channel.CreatedAt = ts
	c.rec.LastTs = ts
	if err := a.putChannel(c); err != nil {
		return Result{}, err
	}
	if err := a.tx.Bucket(bucketMembers).Put(memberKey(id, a.cmd.GetUser()), present); err != nil {
		return Result{}, err
	}
	return Result{Channel: cloneChannel(c.rec)}, nil
}

func (a *applier) joinChannel(id string) (Result, error) {
	c, err := a.visible(id)
	if err != nil {
		return Result{}, err
	}
	if err := requireActive(c); err != nil {
		return Result{}, err
	}
	if c.member {
		return Result{Channel: cloneChannel(c.rec)}, nil
	}
	return a.setMember(c, true)
}

func (a *applier) leaveChannel(id string) (Result, error) {
	c, err := a.visible(id)
	if err != nil {
		return Result{}, err
	}
	if !c.member {
		return Result{Channel: cloneChannel(c.rec)}, nil
	}
	if err := requireActive(c); err != nil {
		return Result{}, err
	}
	return a.setMember(c, false)
}

func (a *applier) setMember(c *channel, join bool) (Result, error) {
	user := a.cmd.GetUser()
	members := a.tx.Bucket(bucketMembers)
	var err error
	if join {
		c.rec.Channel.MemberCount++
		err = members.Put(memberKey(c.id(), user), present)
	} else {
		c.rec.Channel.MemberCount--
		err = members.Delete(memberKey(c.id(), user))
	}
	if err != nil {
		return Result{}, err
	}
	err = a.emit(c, a.ts(c), func(ev *heraldv1.Event) {
		if join {
			ev.Body = &heraldv1.Event_MemberJoined{MemberJoined: &heraldv1.MemberJoined{User: user}}
		} else {
			ev.Body = &heraldv1.Event_MemberLeft{MemberLeft: &heraldv1.MemberLeft{User: user}}
		}
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Channel: cloneChannel(c.rec)}, a.putChannel(c)
}

func (a *applier) archiveChannel(id string) (Result, error) {
	c, err := a.visible(id)
	if err != nil {
		return Result{}, err
	}
	if !c.member && !a.cmd.GetAdmin() {
		return Result{}, domainErr(ErrPermissionDenied, "only members or admins can archive channel %q", id)
	}
	if c.rec.GetChannel().GetArchived() {
		return Result{Channel: cloneChannel(c.rec)}, nil
	}
	c.rec.Channel.Archived = true
	err = a.emit(c, a.ts(c), func(ev *heraldv1.Event) {
		// The event carries the record as it is after the event.
		ev.Body = &heraldv1.Event_ChannelUpdated{
			ChannelUpdated: &heraldv1.ChannelUpdated{Channel: cloneChannel(c.rec)}}
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Channel: cloneChannel(c.rec)}, a.putChannel(c)
}

func (a *applier) trimEvents(req *clusterv1.TrimEvents) (Result, error) {
	id := req.GetChannelId()
	if err := ValidateChannelID(id); err != nil {
		return Result{}, err
	}
	rec, err := getChannel(a.tx, id)
	if err != nil || rec == nil {
		return Result{}, errOr(err, channelNotFound(id))
	}
	ch := rec.GetChannel()
	cutoff := min(req.GetCutoff(), ch.GetHeadSeq())
	if ch.GetOldestSeq() == 0 || cutoff < ch.GetOldestSeq() {
		return Result{Channel: cloneChannel(rec)}, nil
	}
	events := a.tx.Bucket(bucketEvents)
	for seq := ch.GetOldestSeq(); seq <= cutoff; seq++ {
		if err := events.Delete(seqKey(id, seq)); err != nil {
			return Result{}, err
		}
	}
	ch.OldestSeq = cutoff + 1
	return Result{Channel: cloneChannel(rec)},
		putProto(a.tx.Bucket(bucketChannels), []byte(id), rec)
}

func getChannel(tx *bolt.Tx, id string) (*clusterv1.ChannelRecord, error) {
	v := tx.Bucket(bucketChannels).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	rec := &clusterv1.ChannelRecord{}
	if err := proto.Unmarshal(v, rec); err != nil {
		return nil, fmt.Errorf("decode channel %q: %w", id, err)
	}
	return rec, nil
}

func putProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := marshal.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

func cloneChannel(rec *clusterv1.ChannelRecord) *heraldv1.Channel {
	return proto.Clone(rec.GetChannel()).(*heraldv1.Channel)
}

// errOr returns err if it is not nil, else fallback.
func errOr(err error, fallback *Error) error {
	if err != nil {
		return err
	}
	return fallback
}
