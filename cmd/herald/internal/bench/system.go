package bench

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// system is what a fan-out run posts to and subscribes through: Herald,
// or a peer measured the same way (centrifugoSystem).
type system interface {
	// createChannels makes the channels before anyone subscribes.
	createChannels(ctx context.Context, targets, channels []string) error
	// poster returns a client that posts to the node at addr over c.
	poster(c *http.Client, addr string) fanPoster
	// subscriber returns a WebSocket subscriber of channel (an index into
	// f.channels), not yet dialled.
	subscriber(f *fanout, channel int) member
	// setup names the posts and the frames, for the report.
	setup(binary bool) (posts, frames string)
}

// fanPoster posts one message and returns its seq, or an error and its code.
type fanPoster interface {
	post(ctx context.Context, channel, text, id string) (seq uint64, code string, err error)
}

// member is one subscriber of a fan-out run.
type member interface {
	dial(ctx context.Context, addr string) error
	close()
	// order returns the subscriber's channel (an index into f.channels)
	// and the check of what it received.
	order() (int, *orderCheck)
}

// heraldSystem is Herald: Connect JSON posts, GET /ws subscribers.
type heraldSystem struct{}

func (heraldSystem) createChannels(ctx context.Context, targets, channels []string) error {
	return createChannels(ctx, targets, channels)
}

func (heraldSystem) poster(c *http.Client, addr string) fanPoster {
	return heraldPoster{heraldv1connect.NewMessageServiceClient(c, "http://"+addr, connect.WithProtoJSON())}
}

func (heraldSystem) subscriber(f *fanout, channel int) member {
	return &subscriber{f: f, channel: channel, binary: f.opts.Binary}
}

func (heraldSystem) setup(binary bool) (string, string) {
	if binary {
		return "Connect JSON unary posts", "protobuf (herald.v1.proto)"
	}
	return "Connect JSON unary posts", "protojson"
}

type heraldPoster struct {
	c heraldv1connect.MessageServiceClient
}

func (p heraldPoster) post(ctx context.Context, channel, text, id string) (uint64, string, error) {
	resp, err := p.c.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: channel, Text: text, ClientMsgId: id})
	if err != nil {
		return 0, connect.CodeOf(err).String(), err
	}
	return resp.GetMessage().GetSeq(), "", nil
}
