package storage_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/storage"
)

// fuzzSetup is the state FuzzApply starts from: one public channel with a
// member, a message, a reply and a reaction.
func fuzzSetup() []*clusterv1.Command {
	return []*clusterv1.Command{
		as("alice", createCmd("general", false)),
		as("bob", joinCmd("general")),                     // 1
		as("alice", postCmd("general", "hello", "cid-1")), // 2
		as("bob", replyCmd("general", 2, "reply")),        // 3
		as("bob", reactCmd("general", 2, "wave")),         // 4
	}
}

var domainKinds = []error{
	storage.ErrInvalidArgument, storage.ErrNotFound, storage.ErrAlreadyExists,
	storage.ErrPermissionDenied, storage.ErrFailedPrecondition, storage.ErrResourceExhausted,
}

// FuzzApply decodes arbitrary bytes as a command and applies it to a DB
// holding one public channel. Apply must not panic or fail with an I/O
// error; a command either succeeds or fails with a domain error and changes
// nothing; and applying it in one batch with the setup gives the same
// result and state as applying it on its own.
func FuzzApply(f *testing.F) {
	ts := timestamppb.New(baseTime.Add(time.Hour))
	seeds := []*clusterv1.Command{
		as("alice", postCmd("general", "fuzz", "f-1")),
		as("alice", postCmd("general", "retry", "cid-1")),
		as("carol", postCmd("general", "not a member", "")),
		as("bob", replyCmd("general", 2, "another reply")),
		as("bob", replyCmd("general", 3, "nested")),
		as("alice", editCmd("general", 2, "edited")),
		as("bob", editCmd("general", 2, "not mine")),
		as("alice", deleteCmd("general", 2)),
		asAdmin("root", deleteCmd("general", 3)),
		as("bob", reactCmd("general", 2, "wave")),
		as("bob", unreactCmd("general", 2, "wave")),
		as("carol", joinCmd("general")),
		as("bob", leaveCmd("general")),
		as("alice", archiveCmd("general")),
		as("alice", createCmd("general", true)),
		as("alice", createNamedCmd("other", "Other", "a topic")),
		trimCmd("general", 2),
		trimCmd("general", ^uint64(0)),
		as("alice", postCmd("General!", "bad id", "")),
		as("alice", &clusterv1.Command{}),
		{},
	}
	for _, c := range seeds {
		c = proto.Clone(c).(*clusterv1.Command)
		c.Ts = ts
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff})
	// A timestamp far in the past and a huge thread_seq.
	c := as("alice", replyCmd("general", 1<<63, "x"))
	c.Ts = &timestamppb.Timestamp{Seconds: -1 << 40, Nanos: -5}
	b, _ := proto.Marshal(c)
	f.Add(b)

	// The state after the setup and one empty entry: what a failed command
	// must leave behind.
	ref := newHarness(f)
	for _, c := range fuzzSetup() {
		ref.ok(c)
	}
	ref.skip()
	refIndex, refSum := ref.digest()

	f.Fuzz(func(t *testing.T, data []byte) {
		cmd := &clusterv1.Command{}
		if err := proto.Unmarshal(data, cmd); err != nil {
			t.Skip()
		}
		if len(data) > 256<<10 {
			t.Skip()
		}

		h := newHarness(t)
		for _, c := range fuzzSetup() {
			h.ok(c)
		}
		entries := h.entries(cmd)
		res, evs, err := h.db.Apply(entries)
		if err != nil {
			t.Fatalf("Apply(%v) error = %v, want nil (only I/O fails Apply)", cmd, err)
		}
		r := res[0]
		if r.Skipped {
			t.Fatalf("Apply(%v) skipped a new index", cmd)
		}
		index, sum := h.digest()
		if index != refIndex {
			t.Fatalf("Apply(%v): applied index %d, want %d", cmd, index, refIndex)
		}
		if r.Err != nil {
			var de *storage.Error
			if !errors.As(r.Err, &de) || !slices.ContainsFunc(domainKinds, func(k error) bool { return errors.Is(r.Err, k) }) {
				t.Fatalf("Apply(%v) error = %v (%T), want a domain *storage.Error", cmd, r.Err, r.Err)
			}
			if de.Msg == "" || len(de.Msg) > 1000 {
				t.Errorf("Apply(%v) error message of %d bytes, want a short one", cmd, len(de.Msg))
			}
			if len(evs) != 0 {
				t.Errorf("Apply(%v) failed with %v but appended %d events", cmd, r.Err, len(evs))
			}
			if sum != refSum {
				t.Fatalf("Apply(%v) failed with %v but changed the state", cmd, r.Err)
			}
		} else {
			// The event logs stay gap-free and end at the heads.
			for _, id := range []string{"general", cmd.GetCreateChannel().GetChannelId()} {
				if id != "" {
					h.events(id)
				}
			}
			for _, ev := range evs {
				if ev.GetChannelId() != "general" || strings.HasPrefix(kind(ev), "unknown") {
					t.Errorf("Apply(%v) appended %v", cmd, ev)
				}
			}
		}

		// Redelivery is skipped and changes nothing.
		res2, evs2, err := h.db.Apply(entries)
		if err != nil || !res2[0].Skipped || len(evs2) != 0 {
			t.Fatalf("re-Apply(%v) = %+v, %d events, %v; want skipped", cmd, res2, len(evs2), err)
		}
		if _, again := h.digest(); again != sum {
			t.Fatalf("re-Apply(%v) changed the state", cmd)
		}

		// The same command batched with the setup: same result, same state.
		b := newHarness(t)
		bres, _ := b.batch(append(fuzzSetup(), cmd)...)
		got := bres[len(bres)-1]
		if !errors.Is(got.Err, errors.Unwrap(r.Err)) || (got.Err == nil) != (r.Err == nil) ||
			got.Duplicate != r.Duplicate || !proto.Equal(got.Message, r.Message) || !proto.Equal(got.Channel, r.Channel) {
			t.Fatalf("Apply(%v) in one batch with the setup = %+v, want %+v as applied alone", cmd, got, r)
		}
		if _, bsum := b.digest(); bsum != sum {
			t.Fatalf("Apply(%v) in one batch with the setup left a different state", cmd)
		}
	})
}
