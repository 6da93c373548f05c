package gateway_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/meta"
	"github.com/heraldhq/herald/gateway"
)

// wantUnimplemented checks that err is unimplemented, naming the role.
func wantUnimplemented(t *testing.T, what string, err error, role string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeUnimplemented || !strings.Contains(err.Error(), "with the "+role+" role") {
		t.Errorf("%s: got %v, want unimplemented naming the %s role", what, err, role)
	}
}

// TestRoles: a node answers only the APIs of its roles; the others say
// which role to look for, as unimplemented (501 for a WebSocket).
func TestRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("edge only", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, nodeOptions{gateway: gateway.Config{Roles: []string{meta.RoleEdge}}})
		if _, err := n.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "general"}); err != nil {
			t.Fatalf("CreateChannel on an edge node: %v", err)
		}
		if _, err := n.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "general", Text: "hi"}); err != nil {
			t.Fatalf("PostMessage on an edge node: %v", err)
		}
		stream, err := n.Messages.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: "general"})
		if err == nil {
			stream.Receive()
			err = stream.Err()
			stream.Close()
		}
		wantUnimplemented(t, "Subscribe on an edge-only node", err, meta.RoleGateway)
		admin := heraldv1connect.NewAdminServiceClient(http.DefaultClient, n.URL)
		_, err = admin.GetRing(ctx, &heraldv1.GetRingRequest{})
		wantUnimplemented(t, "GetRing on an edge-only node", err, meta.RoleAdmin)

		resp, err := http.Get(n.URL + "/ws")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotImplemented || !strings.Contains(string(body), "with the gateway role") {
			t.Errorf("GET /ws on an edge-only node: %d %q, want 501 naming the gateway role", resp.StatusCode, body)
		}
	})

	t.Run("gateway only", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, nodeOptions{gateway: gateway.Config{Roles: []string{meta.RoleGateway}}})
		_, err := n.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "general"})
		wantUnimplemented(t, "CreateChannel on a gateway-only node", err, meta.RoleEdge)
		var ce *connect.Error
		if errors.As(err, &ce) && !strings.Contains(ce.Message(), "this node serves the roles gateway, not edge") {
			t.Errorf("CreateChannel on a gateway-only node: message %q, want it to say what the node serves", ce.Message())
		}
		if _, err := n.Node.Apply(ctx, clustertest.Create("general")); err != nil {
			t.Fatal(err)
		}
		ws := dialWS(t, n, wsOptions{})
		head := ws.subscribe("1", "general", nil)
		if _, err := n.Node.Apply(ctx, clustertest.Post("general", "to the socket", "p1")); err != nil {
			t.Fatal(err)
		}
		ws.expectEvents("general", head+1, head+1)
	})

	t.Run("unknown role", func(t *testing.T) {
		if _, err := gateway.New(gateway.Config{Roles: []string{"edgy"}}, nil); err == nil || !strings.Contains(err.Error(), `unknown role "edgy"`) {
			t.Errorf("gateway.New with role edgy: %v, want an unknown-role error", err)
		}
	})
}
