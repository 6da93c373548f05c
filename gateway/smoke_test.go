package gateway_test

import (
	"context"
	"testing"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

func TestSmokePostAndRead(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	if _, err := n.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "general"}); err != nil {
		t.Fatal(err)
	}
	resp, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetMessage().GetSeq(); got != 1 {
		t.Fatalf("seq: got %d, want 1", got)
	}
	h, err := n.Messages.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetMessages()) != 1 || h.GetMessages()[0].GetText() != "hi" {
		t.Fatalf("history: got %v, want one message \"hi\"", h.GetMessages())
	}
}
