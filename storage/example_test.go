package storage_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// The Raft FSM applies committed entries in batches and serves reads from
// the same DB.
func Example() {
	dir, err := os.MkdirTemp("", "herald-storage-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := storage.Open(filepath.Join(dir, "state.db"), storage.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ts := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	results, events, err := db.Apply([]storage.Entry{
		{Index: 1, Term: 1, Cmd: &clusterv1.Command{Ts: ts, User: "alice",
			Op: &clusterv1.Command_CreateChannel{CreateChannel: &heraldv1.CreateChannelRequest{ChannelId: "general"}}}},
		{Index: 2, Term: 1, Cmd: &clusterv1.Command{Ts: ts, User: "alice",
			Op: &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{
				ChannelId: "general", Text: "hello", ClientMsgId: "m-1"}}}},
		{Index: 3, Term: 1, Cmd: &clusterv1.Command{Ts: ts, User: "bob",
			Op: &clusterv1.Command_PostMessage{PostMessage: &heraldv1.PostMessageRequest{
				ChannelId: "general", Text: "hi"}}}},
	})
	if err != nil {
		log.Fatal(err) // I/O: the replica must stop
	}
	for _, r := range results {
		fmt.Printf("message %d, error: %v\n", r.Message.GetSeq(), r.Err)
	}
	fmt.Println("events:", len(events))

	err = db.View(func(r *storage.Reader) error {
		resp, err := r.History(storage.Caller{User: "bob"}, &heraldv1.GetHistoryRequest{ChannelId: "general"})
		if err != nil {
			return err
		}
		for _, m := range resp.GetMessages() {
			fmt.Printf("%d %s: %s (applied index %d)\n", m.GetSeq(), m.GetAuthor(), m.GetText(), resp.GetAppliedIndex())
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// message 0, error: <nil>
	// message 1, error: <nil>
	// message 0, error: join channel "general" before posting
	// events: 1
	// 1 alice: hello (applied index 3)
}
