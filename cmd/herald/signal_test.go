package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/lxzan/gws"
	"google.golang.org/protobuf/encoding/protojson"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// frameWait bounds the wait for a typing or presence frame from another
// node: best-effort, but on loopback it comes within milliseconds.
const frameWait = 10 * time.Second

// sendFrame sends one JSON client frame on c.
func sendFrame(t *testing.T, c *proxyWS, f *heraldv1.ClientFrame) {
	t.Helper()
	b, err := protojson.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		t.Fatal(err)
	}
}

// waitFrame reads c's frames until one satisfies match, failing the test
// after frameWait; the frames before it are dropped.
func waitFrame(t *testing.T, c *proxyWS, what string, match func(*heraldv1.ServerFrame) bool) {
	t.Helper()
	deadline := time.After(frameWait)
	for {
		select {
		case f := <-c.frames:
			if match(f) {
				return
			}
			if f.GetError() != nil {
				t.Fatalf("%s: got error frame %v", what, f)
			}
		case <-deadline:
			t.Fatalf("%s: not within %v", what, frameWait)
		}
	}
}

// noFrame checks that no frame matching match comes to c within d.
func noFrame(t *testing.T, c *proxyWS, what string, d time.Duration, match func(*heraldv1.ServerFrame) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f := <-c.frames:
			if match(f) {
				t.Errorf("%s: got %v", what, f)
			}
		case <-deadline:
			return
		}
	}
}

func presence(user, status string) func(*heraldv1.ServerFrame) bool {
	return func(f *heraldv1.ServerFrame) bool {
		p := f.GetPresence()
		return p != nil && p.GetUser() == user && p.GetStatus() == status
	}
}

func typing(user, channel string) func(*heraldv1.ServerFrame) bool {
	return func(f *heraldv1.ServerFrame) bool {
		ty := f.GetTyping()
		return ty != nil && ty.GetUser() == user && ty.GetChannelId() == channel
	}
}

// TestTypingAndPresenceAcrossNodes: three users on three nodes of `herald
// dev --nodes 3` (authentication on) watch one channel over WebSockets.
// Each sees the others come online and go away, whichever node they are
// on, and a user's typing reaches the other two nodes' subscribers, once
// per typing interval however often it is sent, and never its sender.
func TestTypingAndPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	secret := t.TempDir() + "/cluster.secret"
	if r := runHerald(t, "secret", "new", secret); r.code != 0 {
		t.Fatalf("herald secret new: %d %s", r.code, r.stderr)
	}
	c := startDevCluster(t, 3, "--secret-file", secret)
	users := []string{"alice", "bob", "carol"}
	tokens := map[string]string{}
	for _, u := range users {
		r := runHerald(t, "token", "--user", u, "--secret-file", secret)
		if r.code != 0 {
			t.Fatalf("herald token: %d %s", r.code, r.stderr)
		}
		tokens[u] = strings.TrimSpace(r.stdout)
	}
	const ch = "room"
	for i, u := range users {
		channels := heraldv1connect.NewChannelServiceClient(http.DefaultClient, "http://"+c.Addrs[i],
			connect.WithInterceptors(bearer(tokens[u])))
		ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
		var err error
		if i == 0 {
			_, err = channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: ch})
		} else {
			_, err = channels.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: ch})
		}
		cancel()
		if err != nil {
			t.Fatalf("%s joins %s: %v", u, ch, err)
		}
	}

	// Each user connects to a node of their own and subscribes.
	ws := map[string]*proxyWS{}
	for i, u := range users {
		w := dialProxyWS(t, c.Addrs[i])
		sendFrame(t, w, &heraldv1.ClientFrame{Id: "a", Kind: &heraldv1.ClientFrame_Auth{Auth: &heraldv1.Auth{Token: tokens[u]}}})
		sendFrame(t, w, &heraldv1.ClientFrame{Id: "s", Kind: &heraldv1.ClientFrame_Subscribe{
			Subscribe: &heraldv1.SubscribeRequest{ChannelId: ch}}})
		waitFrame(t, w, u+" subscribed on n"+fmt.Sprint(i+1), func(f *heraldv1.ServerFrame) bool { return f.GetSubscribed() != nil })
		for _, earlier := range users[:i] {
			waitFrame(t, ws[earlier], fmt.Sprintf("%s (n%d) told %s (n%d) is online", earlier,
				slices.Index(users, earlier)+1, u, i+1), presence(u, "online"))
		}
		ws[u] = w
	}

	// alice types three times in a row: bob and carol hear it once.
	for range 3 {
		sendFrame(t, ws["alice"], &heraldv1.ClientFrame{Id: "t", Kind: &heraldv1.ClientFrame_Typing{
			Typing: &heraldv1.Typing{ChannelId: ch}}})
	}
	for _, u := range []string{"bob", "carol"} {
		waitFrame(t, ws[u], u+" hears alice typing from n1", typing("alice", ch))
	}
	quiet := time.Second // well within the 3 s typing interval
	for _, u := range []string{"bob", "carol"} {
		noFrame(t, ws[u], u+" hears alice typing a second time within the interval", quiet, typing("alice", ch))
	}
	noFrame(t, ws["alice"], "alice hears her own typing", 100*time.Millisecond, typing("alice", ch))

	// carol leaves: alice and bob are told, on their own nodes.
	if err := ws["carol"].conn.WriteClose(1000, nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		waitFrame(t, ws[u], u+" told carol went away", presence("carol", "away"))
	}
}
