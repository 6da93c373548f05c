package partition

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// fsmFuzzKinds are the domain error kinds a command may fail with.
var fsmFuzzKinds = []error{
	storage.ErrInvalidArgument, storage.ErrNotFound, storage.ErrAlreadyExists,
	storage.ErrPermissionDenied, storage.ErrFailedPrecondition, storage.ErrResourceExhausted,
}

// fsmFuzzTS is the clock of every FuzzFSMApply command, so that inputs
// replay the same.
var fsmFuzzTS = timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))

// fsmFuzzCmd returns a command by user with op set by fn.
func fsmFuzzCmd(user string, set func(*clusterv1.Command)) *clusterv1.Command {
	c := &clusterv1.Command{Ts: fsmFuzzTS, User: user}
	set(c)
	return c
}

func fsmFuzzPost(user, channel, text, clientMsgID string, thread uint64) *clusterv1.Command {
	return fsmFuzzCmd(user, func(c *clusterv1.Command) {
		c.Op = &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{
			ChannelId: channel, Text: text, ClientMsgId: clientMsgID, ThreadSeq: thread}}
	})
}

// fsmFuzzBaseline is the state every FuzzFSMApply input starts from: a
// public channel with two members, a message, a reply and a reaction, and
// a private channel.
func fsmFuzzBaseline() []*clusterv1.Command {
	return []*clusterv1.Command{
		fsmFuzzCmd("alice", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{
				ChannelId: "general", Name: "General", Topic: "everything"}}
		}),
		fsmFuzzCmd("bob", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_JoinChannel{JoinChannel: &heraldv1.JoinChannelRequest{ChannelId: "general"}}
		}),
		fsmFuzzPost("alice", "general", "hello", "cid-1", 0), // seq 2, after bob's join
		fsmFuzzPost("bob", "general", "a reply", "", 2),
		fsmFuzzCmd("bob", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_AddReaction{AddReaction: &heraldv1.AddReactionRequest{
				ChannelId: "general", Seq: 2, Name: "wave"}}
		}),
		fsmFuzzCmd("alice", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{
				ChannelId: "secret", Private: true}}
		}),
	}
}

// fsmFuzzer holds the one state file FuzzFSMApply applies to. An input
// whose command succeeds changed the state, so the next input gets a new
// file with the baseline; inputs that fail change nothing but the applied
// index and share the file.
type fsmFuzzer struct {
	tb    testing.TB
	dir   string
	files int
	fsm   *fsm
	fatal error  // set by the FSM's onFatal
	next  uint64 // the next log index
}

// reset replaces the state file with a new one holding the baseline.
func (z *fsmFuzzer) reset() {
	if z.fsm != nil {
		path := z.fsm.db.Path()
		if err := z.fsm.db.Close(); err != nil {
			z.tb.Fatalf("close %s: %v", path, err)
		}
		if err := os.Remove(path); err != nil {
			z.tb.Fatal(err)
		}
	}
	z.files++
	db, err := storage.Open(filepath.Join(z.dir, fmt.Sprintf("state-%d.db", z.files)),
		storage.Options{NoSync: true, InitialMmapSize: 1 << 20})
	if err != nil {
		z.tb.Fatal(err)
	}
	z.fatal = nil
	z.fsm, err = newFSM(db, newFeed(db, 0), slog.New(slog.DiscardHandler), func(err error) { z.fatal = err }, nil)
	if err != nil {
		z.tb.Fatal(err)
	}
	z.next = 1
	// A stream on the public channel, so that publish has a watcher.
	z.fsm.feed.Watch("general", 0)
	var logs []*raft.Log
	for _, c := range fsmFuzzBaseline() {
		logs = append(logs, z.log(raft.LogCommand, c))
	}
	for i, r := range z.fsm.ApplyBatch(logs) {
		if res, ok := r.(*storage.Result); !ok || res.Err != nil {
			z.tb.Fatalf("baseline command %d (%v): got %v, want success", i, fsmFuzzBaseline()[i], r)
		}
	}
}

// log returns the next log entry, of type typ, with data (a *Command is
// marshalled; []byte is taken as is).
func (z *fsmFuzzer) log(typ raft.LogType, data any) *raft.Log {
	l := &raft.Log{Index: z.next, Term: 1, Type: typ}
	z.next++
	switch d := data.(type) {
	case []byte:
		l.Data = d
	case *clusterv1.Command:
		b, err := proto.Marshal(d)
		if err != nil {
			z.tb.Fatal(err)
		}
		l.Data = b
	}
	return l
}

// FuzzFSMApply hands the FSM adapter raft log entries with arbitrary data
// and type, alone or in a batch between fixed entries. ApplyBatch must not
// panic or call onFatal; it returns one response per entry, each a
// non-nil *storage.Result or a domain *storage.Error; a command entry that
// does not decode fails with invalid_argument; an entry of another type is
// a no-op; and the applied index advances to the batch's last entry
// whatever the entries hold.
func FuzzFSMApply(f *testing.F) {
	cmds := []*clusterv1.Command{
		fsmFuzzPost("alice", "general", "fuzz", "f-1", 0),
		fsmFuzzPost("alice", "general", "retry", "cid-1", 0),
		fsmFuzzPost("carol", "general", "not a member", "", 0),
		fsmFuzzPost("bob", "general", "nested", "", 3),
		fsmFuzzPost("alice", "secret", "in private", "", 0),
		fsmFuzzPost("alice", "General!", "bad channel", "", 0),
		fsmFuzzPost("", "general", "no user", "", 0),
		fsmFuzzCmd("alice", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_EditMessage{EditMessage: &heraldv1.EditMessageRequest{
				ChannelId: "general", Seq: 2, Text: "edited"}}
		}),
		fsmFuzzCmd("bob", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_DeleteMessage{DeleteMessage: &heraldv1.DeleteMessageRequest{
				ChannelId: "general", Seq: 2}}
		}),
		fsmFuzzCmd("root", func(c *clusterv1.Command) {
			c.Admin = true
			c.Op = &clusterv1.Command_DeleteMessage{DeleteMessage: &heraldv1.DeleteMessageRequest{
				ChannelId: "general", Seq: 3}}
		}),
		fsmFuzzCmd("bob", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_RemoveReaction{RemoveReaction: &heraldv1.RemoveReactionRequest{
				ChannelId: "general", Seq: 2, Name: "wave"}}
		}),
		fsmFuzzCmd("bob", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_LeaveChannel{LeaveChannel: &heraldv1.LeaveChannelRequest{ChannelId: "general"}}
		}),
		fsmFuzzCmd("alice", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_ArchiveChannel{ArchiveChannel: &heraldv1.ArchiveChannelRequest{ChannelId: "general"}}
		}),
		fsmFuzzCmd("alice", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: "general"}}
		}),
		fsmFuzzCmd("", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_TrimEvents{TrimEvents: &clusterv1.TrimEvents{ChannelId: "general", Cutoff: 3}}
		}),
		fsmFuzzCmd("", func(c *clusterv1.Command) {
			c.Op = &clusterv1.Command_TrimEvents{TrimEvents: &clusterv1.TrimEvents{ChannelId: "general", Cutoff: ^uint64(0)}}
		}),
		fsmFuzzCmd("alice", func(*clusterv1.Command) {}),
		{},
	}
	types := []raft.LogType{raft.LogCommand, raft.LogNoop, raft.LogBarrier, raft.LogConfiguration, 0xff}
	for i, c := range cmds {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(raft.LogCommand), false)
		f.Add(b, uint8(types[i%len(types)]), i%2 == 0)
	}
	valid, err := proto.Marshal(cmds[0])
	if err != nil {
		f.Fatal(err)
	}
	// The text "fuzz" with its last byte made invalid UTF-8.
	badText := bytes.Replace(valid, []byte("fuzz"), []byte("fuz\xff"), 1)
	for _, b := range [][]byte{
		nil, {}, {0xff}, {0xff, 0xff, 0xff},
		{0x72, 0x80},                         // post_message with a truncated length
		{0x72, 0xff, 0xff, 0xff, 0xff, 0x0f}, // post_message of 4 GiB
		{0x12, 0x02, 0xc3, 0x28},             // user is not UTF-8
		{0x0f},                               // an end-group tag
		append(valid, 0x08),                  // a trailing truncated field
		badText,
	} {
		for _, typ := range types {
			f.Add(b, uint8(typ), typ == raft.LogCommand)
		}
	}

	z := &fsmFuzzer{tb: f, dir: f.TempDir()}
	z.reset()
	f.Cleanup(func() {
		if err := z.fsm.db.Close(); err != nil {
			f.Errorf("close: %v", err)
		}
	})

	f.Fuzz(func(t *testing.T, data []byte, typ uint8, batch bool) {
		z.tb = t
		logs := []*raft.Log{z.log(raft.LogType(typ), data)}
		at := 0 // the fuzzed entry's place in logs
		if batch {
			// A command that fails before it, and a barrier after it.
			logs = []*raft.Log{z.log(raft.LogCommand, fsmFuzzPost("alice", "nowhere", "x", "", 0)),
				logs[0], z.log(raft.LogBarrier, nil)}
			at = 1
		}
		out := z.fsm.ApplyBatch(logs)
		if z.fatal != nil {
			t.Fatalf("ApplyBatch(data %q, type %d, batch %v) called onFatal: %v", data, typ, batch, z.fatal)
		}
		if len(out) != len(logs) {
			t.Fatalf("ApplyBatch(data %q, type %d, batch %v): %d responses for %d entries", data, typ, batch, len(out), len(logs))
		}
		for i, r := range out {
			switch r := r.(type) {
			case *storage.Result:
				if r == nil || r.Err != nil || r.Skipped {
					t.Fatalf("ApplyBatch(data %q, type %d, batch %v) entry %d: got %+v, want a result without error, not skipped",
						data, typ, batch, i, r)
				}
			case error:
				var de *storage.Error
				if !errors.As(r, &de) || !slices.ContainsFunc(fsmFuzzKinds, func(k error) bool { return errors.Is(r, k) }) {
					t.Fatalf("ApplyBatch(data %q, type %d, batch %v) entry %d: got error %v (%T), want a domain *storage.Error",
						data, typ, batch, i, r, r)
				}
				if de.Msg == "" || len(de.Msg) > 1000 {
					t.Errorf("ApplyBatch(data %q, type %d, batch %v) entry %d: error message of %d bytes, want a short one",
						data, typ, batch, i, len(de.Msg))
				}
			default:
				t.Fatalf("ApplyBatch(data %q, type %d, batch %v) entry %d: got %v (%T), want a *storage.Result or an error",
					data, typ, batch, i, r, r)
			}
		}
		if batch {
			if !errors.Is(asError(out[0]), storage.ErrNotFound) {
				t.Errorf("ApplyBatch(data %q, type %d) fixed post to a missing channel: got %v, want not found", data, typ, out[0])
			}
			if res, ok := out[2].(*storage.Result); !ok || *res != (storage.Result{}) {
				t.Errorf("ApplyBatch(data %q, type %d) trailing barrier: got %v, want an empty result", data, typ, out[2])
			}
		}

		r := out[at]
		changed := false
		cmd := &clusterv1.Command{}
		switch decodeErr := proto.Unmarshal(data, cmd); {
		case raft.LogType(typ) != raft.LogCommand:
			if res, ok := r.(*storage.Result); !ok || *res != (storage.Result{}) {
				t.Fatalf("ApplyBatch(data %q, type %d, batch %v): got %v, want an empty result for a non-command entry",
					data, typ, batch, r)
			}
		case decodeErr != nil:
			if !errors.Is(asError(r), storage.ErrInvalidArgument) {
				t.Fatalf("ApplyBatch(data %q, type %d, batch %v) of data that does not decode (%v): got %v, want invalid argument",
					data, typ, batch, decodeErr, r)
			}
		default:
			_, changed = r.(*storage.Result)
		}

		last := logs[len(logs)-1]
		index, term, err := z.fsm.db.AppliedIndex()
		if err != nil || index != last.Index || term != last.Term {
			t.Fatalf("ApplyBatch(data %q, type %d, batch %v): applied index %d term %d (error %v), want %d term %d",
				data, typ, batch, index, term, err, last.Index, last.Term)
		}
		if changed {
			z.reset()
		}
	})
}

// asError returns r if it is an error, else nil.
func asError(r any) error {
	err, _ := r.(error)
	return err
}
