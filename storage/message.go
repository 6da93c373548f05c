package storage

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

func (a *applier) postMessage(req *heraldv1.PostMessageRequest) (Result, error) {
	c, err := a.visible(req.GetChannelId())
	if err != nil {
		return Result{}, err
	}
	if err := ValidateClientMsgID(req.GetClientMsgId()); err != nil {
		return Result{}, err
	}
	// A retry returns the first result, even if the channel has since been
	// archived or the author has left it: the first post was applied.
	var dkey []byte
	if req.GetClientMsgId() != "" {
		dkey = dedupKey(c.id(), a.cmd.GetUser(), req.GetClientMsgId())
		if v := a.tx.Bucket(bucketDedup).Get(dkey); v != nil && !a.skipDedup {
			rec, err := getMessage(a.tx, c.id(), seqFromSuffix(v))
			if err != nil || rec == nil {
				return Result{}, errOr(err, messageNotFound(c.id(), seqFromSuffix(v)))
			}
			return Result{Message: rec.GetMessage(), Duplicate: true}, nil
		}
	}
	if err := a.requireMember(c, "posting"); err != nil {
		return Result{}, err
	}
	if err := requireActive(c); err != nil {
		return Result{}, err
	}
	if err := ValidateText(req.GetText()); err != nil {
		return Result{}, err
	}
	var parent *clusterv1.MessageRecord
	if p := req.GetThreadSeq(); p != 0 {
		if parent, err = a.liveMessage(c, p); err != nil {
			return Result{}, err
		}
		if parent.GetMessage().GetThreadSeq() != 0 {
			return Result{}, domainErr(ErrInvalidArgument,
				"thread_seq %d: message is a reply in thread %d; reply to the thread's parent",
				p, parent.GetMessage().GetThreadSeq())
		}
	}

	ts := a.ts(c)
	msg := &heraldv1.Message{
		ChannelId:   c.id(),
		Seq:         c.rec.GetChannel().GetHeadSeq() + 1,
		Author:      a.cmd.GetUser(),
		Text:        req.GetText(),
		ClientMsgId: req.GetClientMsgId(),
		Ts:          ts,
		ThreadSeq:   req.GetThreadSeq(),
	}
	err = a.emit(c, ts, func(ev *heraldv1.Event) {
		ev.Body = &heraldv1.Event_MessagePosted{MessagePosted: &heraldv1.MessagePosted{
			Message: proto.Clone(msg).(*heraldv1.Message)}}
	})
	if err != nil {
		return Result{}, err
	}
	if err := putMessage(a.tx, &clusterv1.MessageRecord{Message: msg}); err != nil {
		return Result{}, err
	}
	if parent != nil {
		parent.Message.ReplyCount++
		if err := putMessage(a.tx, parent); err != nil {
			return Result{}, err
		}
		err = a.tx.Bucket(bucketThreads).Put(threadKey(c.id(), msg.ThreadSeq, msg.Seq), present)
	} else {
		err = a.tx.Bucket(bucketRoots).Put(seqKey(c.id(), msg.Seq), present)
	}
	if err != nil {
		return Result{}, err
	}
	if dkey != nil {
		if err := a.tx.Bucket(bucketDedup).Put(dkey, u64(msg.Seq)); err != nil {
			return Result{}, err
		}
	}
	return Result{Message: proto.Clone(msg).(*heraldv1.Message)}, a.putChannel(c)
}

func (a *applier) editMessage(req *heraldv1.EditMessageRequest) (Result, error) {
	c, err := a.visible(req.GetChannelId())
	if err != nil {
		return Result{}, err
	}
	if err := a.requireMember(c, "editing"); err != nil {
		return Result{}, err
	}
	rec, err := a.liveMessage(c, req.GetSeq())
	if err != nil {
		return Result{}, err
	}
	if rec.GetMessage().GetAuthor() != a.cmd.GetUser() {
		return Result{}, domainErr(ErrPermissionDenied, "only the author can edit message %d", req.GetSeq())
	}
	if err := requireActive(c); err != nil {
		return Result{}, err
	}
	if err := ValidateText(req.GetText()); err != nil {
		return Result{}, err
	}
	msg := rec.GetMessage()
	if msg.GetText() == req.GetText() {
		return Result{Message: msg}, nil
	}
	ts := a.ts(c)
	msg.Text = req.GetText()
	msg.EditedAt = ts
	rec.EditSeqs = append(rec.EditSeqs, c.rec.GetChannel().GetHeadSeq()+1)
	err = a.emit(c, ts, func(ev *heraldv1.Event) {
		ev.Body = &heraldv1.Event_MessageEdited{MessageEdited: &heraldv1.MessageEdited{
			Message: proto.Clone(msg).(*heraldv1.Message)}}
	})
	if err != nil {
		return Result{}, err
	}
	if err := putMessage(a.tx, rec); err != nil {
		return Result{}, err
	}
	return Result{Message: proto.Clone(msg).(*heraldv1.Message)}, a.putChannel(c)
}

func (a *applier) deleteMessage(req *heraldv1.DeleteMessageRequest) (Result, error) {
	c, err := a.visible(req.GetChannelId())
	if err != nil {
		return Result{}, err
	}
	rec, err := getMessage(a.tx, c.id(), req.GetSeq())
	if err != nil || rec == nil {
		return Result{}, errOr(err, messageNotFound(c.id(), req.GetSeq()))
	}
	msg := rec.GetMessage()
	if msg.GetAuthor() != a.cmd.GetUser() && !a.cmd.GetAdmin() {
		return Result{}, domainErr(ErrPermissionDenied,
			"only the author or an admin can delete message %d", req.GetSeq())
	}
	if err := requireActive(c); err != nil {
		return Result{}, err
	}
	if msg.GetDeleted() {
		return Result{Message: msg}, nil
	}
	var parent *clusterv1.MessageRecord
	if msg.GetThreadSeq() != 0 {
		if parent, err = getMessage(a.tx, c.id(), msg.GetThreadSeq()); err != nil {
			return Result{}, err
		}
	}

	msg.Text = ""
	msg.Deleted = true
	msg.Reactions = nil
	// Redact the text from the events that carried it.
	for _, seq := range append([]uint64{msg.GetSeq()}, rec.GetEditSeqs()...) {
		if err := a.redactEvent(c.id(), seq); err != nil {
			return Result{}, err
		}
	}
	if parent != nil && parent.GetMessage().GetReplyCount() > 0 {
		parent.Message.ReplyCount--
		if err := putMessage(a.tx, parent); err != nil {
			return Result{}, err
		}
	}
	err = a.emit(c, a.ts(c), func(ev *heraldv1.Event) {
		ev.Body = &heraldv1.Event_MessageDeleted{MessageDeleted: &heraldv1.MessageDeleted{
			MessageSeq: msg.GetSeq(), User: a.cmd.GetUser(), ThreadSeq: msg.GetThreadSeq()}}
	})
	if err != nil {
		return Result{}, err
	}
	if err := putMessage(a.tx, rec); err != nil {
		return Result{}, err
	}
	return Result{Message: proto.Clone(msg).(*heraldv1.Message)}, a.putChannel(c)
}

// redactEvent empties the text of a posted or edited event, if it is still
// retained.
func (a *applier) redactEvent(channel string, seq uint64) error {
	b := a.tx.Bucket(bucketEvents)
	key := seqKey(channel, seq)
	v := b.Get(key)
	if v == nil {
		return nil // trimmed
	}
	ev := &heraldv1.Event{}
	if err := proto.Unmarshal(v, ev); err != nil {
		return fmt.Errorf("decode event %d of %q: %w", seq, channel, err)
	}
	switch body := ev.GetBody().(type) {
	case *heraldv1.Event_MessagePosted:
		body.MessagePosted.GetMessage().Text = ""
	case *heraldv1.Event_MessageEdited:
		body.MessageEdited.GetMessage().Text = ""
	default:
		return nil
	}
	return putProto(b, key, ev)
}

func (a *applier) react(channelID string, seq uint64, name string, add bool) (Result, error) {
	c, err := a.visible(channelID)
	if err != nil {
		return Result{}, err
	}
	if err := a.requireMember(c, "reacting"); err != nil {
		return Result{}, err
	}
	rec, err := a.liveMessage(c, seq)
	if err != nil {
		return Result{}, err
	}
	if err := requireActive(c); err != nil {
		return Result{}, err
	}
	if err := ValidateReactionName(name); err != nil {
		return Result{}, err
	}
	msg := rec.GetMessage()
	user := a.cmd.GetUser()
	ri, ui := findReaction(msg, name, user)
	switch {
	case add && ui >= 0, !add && ui < 0:
		return Result{Message: msg}, nil // nothing changes: no event
	case add && ri < 0 && len(msg.GetReactions()) >= MaxReactions:
		return Result{}, domainErr(ErrResourceExhausted,
			"message %d already has the maximum of %d distinct reactions", seq, MaxReactions)
	case add && ri < 0:
		msg.Reactions = append(msg.Reactions, &heraldv1.Reaction{Name: name, Count: 1, Users: []string{user}})
	case add:
		r := msg.Reactions[ri]
		r.Users = append(r.Users, user)
		r.Count++
	default:
		r := msg.Reactions[ri]
		r.Users = append(r.Users[:ui], r.Users[ui+1:]...)
		r.Count--
		if len(r.Users) == 0 {
			msg.Reactions = append(msg.Reactions[:ri], msg.Reactions[ri+1:]...)
		}
	}
	err = a.emit(c, a.ts(c), func(ev *heraldv1.Event) {
		if add {
			ev.Body = &heraldv1.Event_ReactionAdded{ReactionAdded: &heraldv1.ReactionAdded{
				MessageSeq: seq, Name: name, User: user}}
		} else {
			ev.Body = &heraldv1.Event_ReactionRemoved{ReactionRemoved: &heraldv1.ReactionRemoved{
				MessageSeq: seq, Name: name, User: user}}
		}
	})
	if err != nil {
		return Result{}, err
	}
	if err := putMessage(a.tx, rec); err != nil {
		return Result{}, err
	}
	return Result{Message: proto.Clone(msg).(*heraldv1.Message)}, a.putChannel(c)
}

// findReaction returns the index of reaction name on msg and of user in its
// users, each -1 if absent.
func findReaction(msg *heraldv1.Message, name, user string) (ri, ui int) {
	for i, r := range msg.GetReactions() {
		if r.GetName() != name {
			continue
		}
		for j, u := range r.GetUsers() {
			if u == user {
				return i, j
			}
		}
		return i, -1
	}
	return -1, -1
}

// liveMessage loads a message that exists and is not deleted.
func (a *applier) liveMessage(c *channel, seq uint64) (*clusterv1.MessageRecord, error) {
	rec, err := getMessage(a.tx, c.id(), seq)
	if err != nil || rec == nil || rec.GetMessage().GetDeleted() {
		return nil, errOr(err, messageNotFound(c.id(), seq))
	}
	return rec, nil
}

func getMessage(tx *bolt.Tx, channel string, seq uint64) (*clusterv1.MessageRecord, error) {
	v := tx.Bucket(bucketMessages).Get(seqKey(channel, seq))
	if v == nil {
		return nil, nil
	}
	rec := &clusterv1.MessageRecord{}
	if err := proto.Unmarshal(v, rec); err != nil {
		return nil, fmt.Errorf("decode message %d of %q: %w", seq, channel, err)
	}
	return rec, nil
}

func putMessage(tx *bolt.Tx, rec *clusterv1.MessageRecord) error {
	m := rec.GetMessage()
	return putProto(tx.Bucket(bucketMessages), seqKey(m.GetChannelId(), m.GetSeq()), rec)
}
