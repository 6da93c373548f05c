package gateway

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// BenchmarkEventFrame encodes one event for subscribers, in each form;
// fan-out encodes it once per form however many connections it goes to.
func BenchmarkEventFrame(b *testing.B) {
	ev := &heraldv1.Event{ChannelId: "general", Seq: 12345, Ts: timestamppb.Now(),
		Body: &heraldv1.Event_MessagePosted{MessagePosted: &heraldv1.MessagePosted{Message: &heraldv1.Message{
			ChannelId: "general", Seq: 12345, Author: "alice", Text: strings.Repeat("x", 128), ClientMsgId: "m-12345",
			Ts: timestamppb.Now()}}}}
	for _, binary := range []bool{false, true} {
		name := "json"
		if binary {
			name = "proto"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := newOutEvent(ev).frame(binary); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
