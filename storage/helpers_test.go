package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// baseTime is the proposer clock of the first command; by default the
// command at Raft index i carries baseTime + i seconds, so that two
// harnesses fed the same commands build byte-identical state.
var baseTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fastOpts turns fsync off. The tests that use it never crash the process,
// so durability is not what they check; reopen and restore tests use the
// default options instead.
var fastOpts = storage.Options{NoSync: true}

// openDB opens a state file in a fresh temporary directory and closes it
// when the test ends.
func openDB(t testing.TB, opts storage.Options) *storage.DB {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "state.db"), opts)
}

func openAt(t testing.TB, path string, opts storage.Options) *storage.DB {
	t.Helper()
	db, err := storage.Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%q) = %v, want nil", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close(%q) = %v, want nil", path, err)
		}
	})
	return db
}

// harness feeds commands to a DB with increasing Raft indexes, as the
// partition's FSM would.
type harness struct {
	t     testing.TB
	db    *storage.DB
	index uint64 // last index handed to Apply
	term  uint64
}

// newHarness opens a DB with fsync off (see fastOpts).
func newHarness(t testing.TB) *harness {
	t.Helper()
	return &harness{t: t, db: openDB(t, fastOpts), term: 1}
}

// Command builders. Each returns a command with only its operation set;
// as, asAdmin and at fill in the caller and the proposer's clock.

func createCmd(id string, private bool) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_CreateChannel{
		CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: id, Private: private}}}
}

func createNamedCmd(id, name, topic string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_CreateChannel{
		CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: id, Name: name, Topic: topic}}}
}

func joinCmd(id string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_JoinChannel{
		JoinChannel: &heraldv1.JoinChannelRequest{ChannelId: id}}}
}

func leaveCmd(id string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_LeaveChannel{
		LeaveChannel: &heraldv1.LeaveChannelRequest{ChannelId: id}}}
}

func archiveCmd(id string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_ArchiveChannel{
		ArchiveChannel: &heraldv1.ArchiveChannelRequest{ChannelId: id}}}
}

func postCmd(id, text, clientMsgID string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_PostMessage{
		PostMessage: &heraldv1.PostMessageRequest{ChannelId: id, Text: text, ClientMsgId: clientMsgID}}}
}

func replyCmd(id string, parent uint64, text string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_PostMessage{
		PostMessage: &heraldv1.PostMessageRequest{ChannelId: id, Text: text, ThreadSeq: parent}}}
}

func editCmd(id string, seq uint64, text string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_EditMessage{
		EditMessage: &heraldv1.EditMessageRequest{ChannelId: id, Seq: seq, Text: text}}}
}

func deleteCmd(id string, seq uint64) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_DeleteMessage{
		DeleteMessage: &heraldv1.DeleteMessageRequest{ChannelId: id, Seq: seq}}}
}

func reactCmd(id string, seq uint64, name string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_AddReaction{
		AddReaction: &heraldv1.AddReactionRequest{ChannelId: id, Seq: seq, Name: name}}}
}

func unreactCmd(id string, seq uint64, name string) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_RemoveReaction{
		RemoveReaction: &heraldv1.RemoveReactionRequest{ChannelId: id, Seq: seq, Name: name}}}
}

func trimCmd(id string, cutoff uint64) *clusterv1.Command {
	return &clusterv1.Command{Op: &clusterv1.Command_TrimEvents{
		TrimEvents: &clusterv1.TrimEvents{ChannelId: id, Cutoff: cutoff}}}
}

// as sets the command's caller.
func as(user string, c *clusterv1.Command) *clusterv1.Command {
	c.User = user
	return c
}

// asAdmin sets the command's caller and the admin claim.
func asAdmin(user string, c *clusterv1.Command) *clusterv1.Command {
	c.User, c.Admin = user, true
	return c
}

// at sets the proposer's clock of the command.
func at(ts time.Time, c *clusterv1.Command) *clusterv1.Command {
	c.Ts = timestamppb.New(ts)
	return c
}

// entries turns commands into entries with the next indexes. A command
// without ts gets baseTime + its index in seconds.
func (h *harness) entries(cmds ...*clusterv1.Command) []storage.Entry {
	out := make([]storage.Entry, len(cmds))
	for i, c := range cmds {
		h.index++
		if c != nil && c.Ts == nil {
			c = proto.Clone(c).(*clusterv1.Command)
			c.Ts = timestamppb.New(baseTime.Add(time.Duration(h.index) * time.Second))
		}
		out[i] = storage.Entry{Index: h.index, Term: h.term, Cmd: c}
	}
	return out
}

// batch applies commands in one Apply call and fails the test on an I/O
// error.
func (h *harness) batch(cmds ...*clusterv1.Command) ([]storage.Result, []*heraldv1.Event) {
	h.t.Helper()
	entries := h.entries(cmds...)
	res, evs, err := h.db.Apply(entries)
	if err != nil {
		h.t.Fatalf("Apply(%d entries from index %d) error = %v, want nil", len(entries), entries[0].Index, err)
	}
	if len(res) != len(entries) {
		h.t.Fatalf("Apply(%d entries) returned %d results, want %d", len(entries), len(res), len(entries))
	}
	return res, evs
}

// apply applies one command.
func (h *harness) apply(c *clusterv1.Command) (storage.Result, []*heraldv1.Event) {
	h.t.Helper()
	res, evs := h.batch(c)
	return res[0], evs
}

// ok applies one command and fails the test if it returns a domain error.
func (h *harness) ok(c *clusterv1.Command) storage.Result {
	h.t.Helper()
	res, _ := h.apply(c)
	if res.Err != nil {
		h.t.Fatalf("Apply(%v) error = %v, want nil", c, res.Err)
	}
	return res
}

// post posts text as user and returns the message's seq.
func (h *harness) post(user, channel, text string) uint64 {
	h.t.Helper()
	return h.ok(as(user, postCmd(channel, text, ""))).Message.GetSeq()
}

// reply posts a thread reply as user and returns its seq.
func (h *harness) reply(user, channel string, parent uint64, text string) uint64 {
	h.t.Helper()
	return h.ok(as(user, replyCmd(channel, parent, text))).Message.GetSeq()
}

// fails applies one command and checks that it fails with kind, appends no
// event, leaves the channel's head where it was, and that the error is an
// *Error. It returns the error.
func (h *harness) fails(c *clusterv1.Command, kind error) *storage.Error {
	h.t.Helper()
	res, evs := h.apply(c)
	checkDomainErr(h.t, fmt.Sprint(c), res.Err, kind)
	if res.Message != nil || res.Channel != nil || res.Duplicate {
		h.t.Errorf("Apply(%v) result = %+v, want only an error", c, res)
	}
	if len(evs) != 0 {
		h.t.Errorf("Apply(%v) appended %d events, want 0", c, len(evs))
	}
	var de *storage.Error
	errors.As(res.Err, &de)
	return de
}

// checkDomainErr checks that err is an *Error of kind.
func checkDomainErr(t testing.TB, input string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error = %v, want %v", input, err, kind)
	}
	var de *storage.Error
	if !errors.As(err, &de) {
		t.Fatalf("%s: error %v (%T) is not a *storage.Error", input, err, err)
	}
	if de.Msg == "" {
		t.Errorf("%s: *storage.Error has an empty message", input)
	}
}

// view runs fn in a read transaction and fails the test on error.
func (h *harness) view(fn func(r *storage.Reader) error) {
	h.t.Helper()
	if err := h.db.View(fn); err != nil {
		h.t.Fatalf("View: %v", err)
	}
}

// channel reads a channel as an admin.
func (h *harness) channel(id string) *heraldv1.Channel {
	h.t.Helper()
	var ch *heraldv1.Channel
	h.view(func(r *storage.Reader) error {
		var err error
		ch, _, err = r.Channel(storage.Caller{User: "root", Admin: true}, id)
		return err
	})
	return ch
}

// events returns every retained event of a channel, oldest first, and
// checks that they are gap-free and end at the channel's head.
func (h *harness) events(channel string) []*heraldv1.Event {
	h.t.Helper()
	var evs []*heraldv1.Event
	h.view(func(r *storage.Reader) error {
		ch, _, err := r.Channel(storage.Caller{User: "root", Admin: true}, channel)
		if err != nil {
			return err
		}
		after := uint64(0)
		if ch.GetOldestSeq() > 0 {
			after = ch.GetOldestSeq() - 1
		}
		var head uint64
		evs, head, _, err = r.Events(channel, after, 1<<30)
		if err != nil {
			return err
		}
		for i, ev := range evs {
			if want := after + 1 + uint64(i); ev.GetSeq() != want {
				return fmt.Errorf("event %d of %q has seq %d, want %d", i, channel, ev.GetSeq(), want)
			}
			if ev.GetChannelId() != channel {
				return fmt.Errorf("event %d of %q has channel %q", ev.GetSeq(), channel, ev.GetChannelId())
			}
		}
		if head != ch.GetHeadSeq() {
			return fmt.Errorf("Events head = %d, want channel head_seq %d", head, ch.GetHeadSeq())
		}
		if n := uint64(len(evs)); head > after && n != head-after {
			return fmt.Errorf("got %d events after %d of %q, want %d (head %d)", n, after, channel, head-after, head)
		}
		return nil
	})
	return evs
}

// message reads one message (top-level, or a reply when parent != 0) as an
// admin.
func (h *harness) message(channel string, seq, parent uint64) *heraldv1.Message {
	h.t.Helper()
	var msg *heraldv1.Message
	admin := storage.Caller{User: "root", Admin: true}
	h.view(func(r *storage.Reader) error {
		var got []*heraldv1.Message
		if parent == 0 {
			resp, err := r.History(admin, &heraldv1.GetHistoryRequest{
				ChannelId: channel, AfterSeq: seq - 1, BeforeSeq: seq + 1, Limit: 1})
			if err != nil {
				return err
			}
			got = resp.GetMessages()
		} else {
			resp, err := r.Thread(admin, &heraldv1.GetThreadRequest{
				ChannelId: channel, ThreadSeq: parent, AfterSeq: seq - 1, Limit: 1})
			if err != nil {
				return err
			}
			got = resp.GetReplies()
		}
		if len(got) != 1 || got[0].GetSeq() != seq {
			return fmt.Errorf("message %d of %q (parent %d) not found: got %v", seq, channel, parent, got)
		}
		msg = got[0]
		return nil
	})
	return msg
}

// digest returns the DB's applied index and digest.
func (h *harness) digest() (uint64, [32]byte) {
	h.t.Helper()
	return digestOf(h.t, h.db)
}

func digestOf(t testing.TB, db *storage.DB) (uint64, [32]byte) {
	t.Helper()
	index, sum, err := db.Digest()
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	return index, sum
}

// lastTs is the default proposer clock of the last index handed to Apply.
func (h *harness) lastTs() time.Time {
	return baseTime.Add(time.Duration(h.index) * time.Second)
}

// skip advances the applied index with an entry that carries no command.
func (h *harness) skip() {
	h.t.Helper()
	h.batch(nil)
}

// kind names an event's body, for failure messages and comparisons.
func kind(ev *heraldv1.Event) string {
	switch ev.GetBody().(type) {
	case *heraldv1.Event_MessagePosted:
		return "message_posted"
	case *heraldv1.Event_MessageEdited:
		return "message_edited"
	case *heraldv1.Event_MessageDeleted:
		return "message_deleted"
	case *heraldv1.Event_ReactionAdded:
		return "reaction_added"
	case *heraldv1.Event_ReactionRemoved:
		return "reaction_removed"
	case *heraldv1.Event_MemberJoined:
		return "member_joined"
	case *heraldv1.Event_MemberLeft:
		return "member_left"
	case *heraldv1.Event_ChannelUpdated:
		return "channel_updated"
	default:
		return fmt.Sprintf("unknown(%T)", ev.GetBody())
	}
}

func kinds(evs []*heraldv1.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = kind(ev)
	}
	return out
}

func seqsOf(msgs []*heraldv1.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

// snapshotBytes writes a snapshot of db to memory.
func snapshotBytes(t testing.TB, db *storage.DB) []byte {
	t.Helper()
	snap, err := db.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("Snapshot.WriteTo: %v", err)
	}
	return buf.Bytes()
}
