package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/gateway"
)

// authSecret is the cluster secret of the tests' nodes with authentication
// on.
var authSecret = []byte("a test cluster secret, long enough to be one")

// userTokenLabel is the label the gateway derives the user-token key with
// (DESIGN.md "Security"); tests sign tokens Mint refuses to make with it.
const userTokenLabel = "herald user tokens v1"

// authNode is a node with authentication on, and the Authenticator that
// mints its tokens.
type authNode struct {
	*node
	auth *gateway.Authenticator
}

// startAuthNode starts a node whose gateway verifies tokens signed with
// authSecret; cfg.Auth is set here.
func startAuthNode(t *testing.T, cfg gateway.Config) *authNode {
	t.Helper()
	auth := gateway.NewAuthenticator(authSecret)
	cfg.Auth = auth
	return &authNode{node: startNode(t, nodeOptions{gateway: cfg}), auth: auth}
}

// mint returns a token for user, or fails the test.
func (n *authNode) mint(t testing.TB, user string, admin bool, ttl time.Duration) string {
	t.Helper()
	tok, err := n.auth.Mint(user, admin, ttl)
	if err != nil {
		t.Fatalf("Mint(%q, %v, %v): %v", user, admin, ttl, err)
	}
	return tok
}

// signToken signs claims with method and key, or fails the test. It makes
// the tokens Mint never makes: expired, without exp, with another
// algorithm.
func signToken(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s token %v: %v", method.Alg(), claims, err)
	}
	return tok
}

// expiredToken returns an HS256 token for user, signed with the right key,
// that expired a minute ago: past the verifier's 5 s leeway.
func expiredToken(t testing.TB, user string) string {
	t.Helper()
	now := time.Now()
	return signToken(t, jwt.SigningMethodHS256, cluster.DeriveKey(authSecret, userTokenLabel), jwt.MapClaims{
		"sub": user, "iat": now.Add(-time.Hour).Unix(), "exp": now.Add(-time.Minute).Unix()})
}

// bearerTransport adds an Authorization header to every request.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// apiClients are Connect clients that send one token ("" = none).
type apiClients struct {
	Channels heraldv1connect.ChannelServiceClient
	Messages heraldv1connect.MessageServiceClient
	Admin    heraldv1connect.AdminServiceClient
}

// clientsFor returns Connect clients of n's API that send token.
func clientsFor(n *node, token string, opts ...connect.ClientOption) apiClients {
	hc := http.DefaultClient
	if token != "" {
		hc = &http.Client{Transport: bearerTransport{token: token, base: http.DefaultTransport}}
	}
	return apiClients{
		Channels: heraldv1connect.NewChannelServiceClient(hc, n.URL, opts...),
		Messages: heraldv1connect.NewMessageServiceClient(hc, n.URL, opts...),
		Admin:    heraldv1connect.NewAdminServiceClient(hc, n.URL, opts...),
	}
}

// bearerHeader returns an Authorization header carrying token.
func bearerHeader(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// codeName is what a call's outcome is called in the tables: "ok" or the
// Connect code.
func codeName(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// runConcurrently runs each subtest on its own goroutine and waits for all
// of them. Unlike t.Parallel subtests, they do not wait for -parallel
// slots, so timer-bound subtests overlap.
func runConcurrently(t *testing.T, tests map[string]func(t *testing.T)) {
	t.Helper()
	var wg sync.WaitGroup
	for name, fn := range tests {
		wg.Go(func() { t.Run(name, fn) })
	}
	wg.Wait()
}

// Roles of the authorization table, in column order.
const (
	roleAnonymous = iota
	roleBadSignature
	roleExpired
	roleNonMember
	roleMember
	roleAuthor
	roleAdmin
	roleCount
)

var roleNames = [roleCount]string{"anonymous", "bad-signature", "expired", "non-member", "member", "author", "admin"}

// Kinds of channel a row of the table acts on.
const (
	kindNone = iota // the row names no channel of the fixture
	kindPublic
	kindPrivate
	kindArchived
)

var kindNames = []string{"-", "public", "private", "archived"}

// authzScene is the channel one row of the table acts on: the author
// created it and posted msg, the member joined it, and if the row asks for
// it both reacted "tada" to msg. An archived channel was archived last.
type authzScene struct {
	channel string
	msg     uint64
}

// authzCell runs one method as one role and returns the call's error.
type authzCell func(ctx context.Context, c apiClients, s authzScene, role int) error

// authzRow is one row of the table: a method on one kind of channel, and
// what the four authenticated roles get (non-member, member, author,
// admin). The three unauthenticated roles always get unauthenticated.
type authzRow struct {
	method string
	kind   int
	react  bool // the member and the author react to msg first
	call   authzCell
	want   [4]string // non-member, member, author, admin
}

// Outcomes in the table.
var (
	authzOK     = "ok"
	authzDenied = connect.CodePermissionDenied.String()
	authzNF     = connect.CodeNotFound.String()
	authzFP     = connect.CodeFailedPrecondition.String()
	authzUnauth = connect.CodeUnauthenticated.String()
)

func authzRows() []authzRow {
	getChannel := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Channels.GetChannel(ctx, &heraldv1.GetChannelRequest{ChannelId: s.channel})
		return err
	}
	join := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Channels.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: s.channel})
		return err
	}
	leave := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Channels.LeaveChannel(ctx, &heraldv1.LeaveChannelRequest{ChannelId: s.channel})
		return err
	}
	archive := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Channels.ArchiveChannel(ctx, &heraldv1.ArchiveChannelRequest{ChannelId: s.channel})
		return err
	}
	post := func(ctx context.Context, c apiClients, s authzScene, role int) error {
		_, err := c.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: s.channel,
			Text: "posted by " + roleNames[role]})
		return err
	}
	edit := func(ctx context.Context, c apiClients, s authzScene, role int) error {
		_, err := c.Messages.EditMessage(ctx, &heraldv1.EditMessageRequest{ChannelId: s.channel, Seq: s.msg,
			Text: "edited by " + roleNames[role]})
		return err
	}
	del := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Messages.DeleteMessage(ctx, &heraldv1.DeleteMessageRequest{ChannelId: s.channel, Seq: s.msg})
		return err
	}
	addReaction := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Messages.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: s.channel, Seq: s.msg, Name: "eyes"})
		return err
	}
	removeReaction := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Messages.RemoveReaction(ctx, &heraldv1.RemoveReactionRequest{ChannelId: s.channel, Seq: s.msg, Name: "tada"})
		return err
	}
	history := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Messages.GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: s.channel})
		return err
	}
	thread := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		_, err := c.Messages.GetThread(ctx, &heraldv1.GetThreadRequest{ChannelId: s.channel, ThreadSeq: s.msg})
		return err
	}
	subscribe := func(ctx context.Context, c apiClients, s authzScene, _ int) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := c.Messages.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: s.channel})
		if err != nil {
			return err
		}
		defer st.Close()
		if !st.Receive() {
			return st.Err()
		}
		if st.Msg().GetSubscribed() == nil {
			return fmt.Errorf("first message: got %v, want subscribed", st.Msg())
		}
		return nil
	}

	ok, pd, nf, fp := authzOK, authzDenied, authzNF, authzFP
	byKind := make([][]authzRow, len(kindNames))
	add := func(method string, call authzCell, react bool, public, private, archived [4]string) {
		for kind, want := range map[int][4]string{kindPublic: public, kindPrivate: private, kindArchived: archived} {
			byKind[kind] = append(byKind[kind], authzRow{method: method, kind: kind, react: react, call: call, want: want})
		}
	}
	//                                    public: non-member, member, author, admin
	//                                    private: the same; archived (public): the same
	add("GetChannel", getChannel, false, [4]string{ok, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{ok, ok, ok, ok})
	add("JoinChannel", join, false, [4]string{ok, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{fp, fp, fp, fp})
	// Leaving a channel one is not in changes nothing and succeeds, even
	// when it is archived.
	add("LeaveChannel", leave, false, [4]string{ok, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{ok, fp, fp, ok})
	// Archiving an archived channel succeeds and changes nothing.
	add("ArchiveChannel", archive, false, [4]string{pd, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{pd, ok, ok, ok})
	// An admin is not a member: admins read anything and delete anything,
	// but post, edit and react only where they joined (and never edit).
	add("PostMessage", post, false, [4]string{pd, ok, ok, pd}, [4]string{nf, ok, ok, pd}, [4]string{pd, fp, fp, pd})
	add("EditMessage", edit, false, [4]string{pd, pd, ok, pd}, [4]string{nf, pd, ok, pd}, [4]string{pd, pd, fp, pd})
	add("DeleteMessage", del, false, [4]string{pd, pd, ok, ok}, [4]string{nf, pd, ok, ok}, [4]string{pd, pd, fp, fp})
	add("AddReaction", addReaction, false, [4]string{pd, ok, ok, pd}, [4]string{nf, ok, ok, pd}, [4]string{pd, fp, fp, pd})
	add("RemoveReaction", removeReaction, true, [4]string{pd, ok, ok, pd}, [4]string{nf, ok, ok, pd}, [4]string{pd, fp, fp, pd})
	add("GetHistory", history, false, [4]string{ok, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{ok, ok, ok, ok})
	add("GetThread", thread, false, [4]string{ok, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{ok, ok, ok, ok})
	add("Subscribe", subscribe, false, [4]string{ok, ok, ok, ok}, [4]string{nf, ok, ok, ok}, [4]string{ok, ok, ok, ok})

	// Rows that act on no channel of the fixture.
	global := func(method string, call authzCell, want [4]string) {
		byKind[kindNone] = append(byKind[kindNone], authzRow{method: method, kind: kindNone, call: call, want: want})
	}
	global("CreateChannel", func(ctx context.Context, c apiClients, _ authzScene, role int) error {
		_, err := c.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{ChannelId: "new-by-" + roleNames[role]})
		return err
	}, [4]string{ok, ok, ok, ok})
	global("ListChannels", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Channels.ListChannels(ctx, &heraldv1.ListChannelsRequest{})
		return err
	}, [4]string{ok, ok, ok, ok})
	admin := [4]string{pd, pd, pd, ok}
	global("GetRing", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.GetRing(ctx, &heraldv1.GetRingRequest{})
		return err
	}, admin)
	global("ListNodes", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.ListNodes(ctx, &heraldv1.ListNodesRequest{})
		return err
	}, admin)
	global("LookupChannel", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.LookupChannel(ctx, &heraldv1.LookupChannelRequest{ChannelId: "general"})
		return err
	}, admin)
	// An unknown node: an admin gets not_found and the cluster is unchanged.
	global("DrainNode", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.DrainNode(ctx, &heraldv1.DrainNodeRequest{NodeId: "no-such-node"})
		return err
	}, [4]string{pd, pd, pd, nf})
	global("GetReplicaDigest", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.GetReplicaDigest(ctx, &heraldv1.GetReplicaDigestRequest{Partition: 0, NodeId: "n1"})
		return err
	}, admin)
	// The admin operations that change the cluster get arguments they
	// refuse, or that change nothing on one node: the table checks who
	// gets past the token, and the fixture must survive every row.
	global("RemoveNode", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.RemoveNode(ctx, &heraldv1.RemoveNodeRequest{NodeId: "no-such-node"})
		return err
	}, [4]string{pd, pd, pd, nf})
	global("TransferLeadership", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.TransferLeadership(ctx, &heraldv1.TransferLeadershipRequest{Partition: 0, NodeId: "no-such-node"})
		return err
	}, [4]string{pd, pd, pd, fp})
	global("Rebalance", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.Rebalance(ctx, &heraldv1.RebalanceRequest{})
		return err
	}, admin)
	global("RecoverPartition", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		_, err := c.Admin.RecoverPartition(ctx, &heraldv1.RecoverPartitionRequest{Partition: 1 << 20, FromNodeId: "n1"})
		return err
	}, [4]string{pd, pd, pd, nf})
	global("SaveSnapshot", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		st, err := c.Admin.SaveSnapshot(ctx, &heraldv1.SaveSnapshotRequest{Partition: 0})
		if err != nil {
			return err
		}
		defer st.Close()
		for st.Receive() {
		}
		return st.Err()
	}, admin)
	global("RestoreSnapshot", func(ctx context.Context, c apiClients, _ authzScene, _ int) error {
		st, err := c.Admin.RestoreSnapshot(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&heraldv1.RestoreSnapshotRequest{Partition: 0, Data: []byte("not a snapshot")}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = st.CloseAndReceive()
		return err
	}, [4]string{pd, pd, pd, connect.CodeInvalidArgument.String()})

	return slices.Concat(byKind[kindPublic], byKind[kindPrivate], byKind[kindArchived], byKind[kindNone])
}

// authzFixture is a node with authentication on and a client for each
// role of the table.
type authzFixture struct {
	n       *authNode
	clients [roleCount]apiClients
	// author, member: clients of the fixture's users with a plain token;
	// memberAdmin: the member's user with an admin token, which can join
	// a private channel (nothing else can: it is invisible until then).
	author, member, memberAdmin apiClients
}

func newAuthzFixture(t *testing.T) *authzFixture {
	t.Helper()
	n := startAuthNode(t, gateway.Config{})
	other := gateway.NewAuthenticator([]byte("some other cluster's secret"))
	badSig, err := other.Mint("member", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &authzFixture{n: n}
	tokens := [roleCount]string{
		roleAnonymous:    "",
		roleBadSignature: badSig,
		roleExpired:      expiredToken(t, "member"),
		roleNonMember:    n.mint(t, "stranger", false, time.Hour),
		roleMember:       n.mint(t, "member", false, time.Hour),
		roleAuthor:       n.mint(t, "author", false, time.Hour),
		roleAdmin:        n.mint(t, "root", true, time.Hour),
	}
	for r, tok := range tokens {
		f.clients[r] = clientsFor(n.node, tok)
	}
	f.author, f.member = f.clients[roleAuthor], f.clients[roleMember]
	f.memberAdmin = clientsFor(n.node, n.mint(t, "member", true, time.Hour))
	if _, err := f.author.Channels.CreateChannel(apiCtx(t), &heraldv1.CreateChannelRequest{ChannelId: "general"}); err != nil {
		t.Fatalf("CreateChannel(general): %v", err)
	}
	return f
}

// scene builds the channel a row acts on.
func (f *authzFixture) scene(t *testing.T, r authzRow) authzScene {
	t.Helper()
	ctx := apiCtx(t)
	s := authzScene{channel: strings.ToLower(kindNames[r.kind] + "-" + r.method)}
	if r.kind == kindNone {
		return s
	}
	if _, err := f.author.Channels.CreateChannel(ctx, &heraldv1.CreateChannelRequest{
		ChannelId: s.channel, Private: r.kind == kindPrivate}); err != nil {
		t.Fatalf("author: CreateChannel(%q): %v", s.channel, err)
	}
	joiner := f.member
	if r.kind == kindPrivate {
		joiner = f.memberAdmin
	}
	if _, err := joiner.Channels.JoinChannel(ctx, &heraldv1.JoinChannelRequest{ChannelId: s.channel}); err != nil {
		t.Fatalf("member: JoinChannel(%q): %v", s.channel, err)
	}
	resp, err := f.author.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: s.channel, Text: "the author's message"})
	if err != nil {
		t.Fatalf("author: PostMessage(%q): %v", s.channel, err)
	}
	s.msg = resp.GetMessage().GetSeq()
	if r.react {
		for _, c := range []apiClients{f.author, f.member} {
			if _, err := c.Messages.AddReaction(ctx, &heraldv1.AddReactionRequest{ChannelId: s.channel, Seq: s.msg, Name: "tada"}); err != nil {
				t.Fatalf("AddReaction(%q, %d): %v", s.channel, s.msg, err)
			}
		}
	}
	if r.kind == kindArchived {
		if _, err := f.author.Channels.ArchiveChannel(ctx, &heraldv1.ArchiveChannelRequest{ChannelId: s.channel}); err != nil {
			t.Fatalf("author: ArchiveChannel(%q): %v", s.channel, err)
		}
	}
	return s
}

// TestAuthzTable checks who may do what: every API method, as every kind
// of caller, on a public, a private and an archived channel. The checks
// run in the order DESIGN.md "Errors" gives: token, then the channel exists
// and is visible, then member or author, then archived.
func TestAuthzTable(t *testing.T) {
	t.Parallel()
	f := newAuthzFixture(t)
	rows := authzRows()
	got := make([][roleCount]string, len(rows))
	var wg sync.WaitGroup
	for i, r := range rows {
		// Each row has a channel of its own, so rows run concurrently; the
		// roles of a row run in column order, and no cell's outcome
		// depends on what an earlier one changed.
		name := r.method
		if r.kind != kindNone {
			name += "/" + kindNames[r.kind]
		}
		wg.Go(func() {
			t.Run(name, func(t *testing.T) {
				s := f.scene(t, r)
				for role := range roleCount {
					err := r.call(apiCtx(t), f.clients[role], s, role)
					got[i][role] = codeName(err)
					want := authzUnauth
					if role >= roleNonMember {
						want = r.want[role-roleNonMember]
					}
					if got[i][role] != want {
						t.Errorf("%s on %s channel %q as %s: got %s (%v), want %s",
							r.method, kindNames[r.kind], s.channel, roleNames[role], got[i][role], err, want)
					}
				}
			})
		})
	}
	wg.Wait()

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "method\tchannel\t%s\n", strings.Join(roleNames[:], "\t"))
	for i, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.method, kindNames[r.kind], strings.Join(got[i][:], "\t"))
	}
	_ = tw.Flush() // writes to a strings.Builder
	t.Logf("who may do what (got):\n%s", b.String())

	t.Run("ListChannels hides private channels from non-members", func(t *testing.T) {
		for _, tc := range []struct {
			role        int
			wantPrivate bool
		}{{roleNonMember, false}, {roleMember, true}, {roleAdmin, true}} {
			resp, err := f.clients[tc.role].Channels.ListChannels(apiCtx(t), &heraldv1.ListChannelsRequest{Limit: 1000})
			if err != nil {
				t.Fatalf("ListChannels as %s: %v", roleNames[tc.role], err)
			}
			var private []string
			for _, ch := range resp.GetChannels() {
				if ch.GetPrivate() {
					private = append(private, ch.GetId())
				}
			}
			if gotPrivate := len(private) > 0; gotPrivate != tc.wantPrivate {
				t.Errorf("ListChannels as %s: got private channels %q, want some: %v", roleNames[tc.role], private, tc.wantPrivate)
			}
		}
	})
}

// TestAuthzTokenBeforeBody checks that the token is verified before the
// body is read or decoded: a request without a valid token is
// unauthenticated whatever its body, even one that would be refused as
// malformed or too large.
func TestAuthzTokenBeforeBody(t *testing.T) {
	t.Parallel()
	n := startAuthNode(t, gateway.Config{})
	good := n.mint(t, "alice", false, time.Hour)
	if _, err := clientsFor(n.node, good).Channels.CreateChannel(apiCtx(t), &heraldv1.CreateChannelRequest{ChannelId: "general"}); err != nil {
		t.Fatal(err)
	}
	const post = "/herald.v1.MessageService/PostMessage"
	bodies := []struct {
		name, contentType string
		header            http.Header
		body              func() io.Reader
		withToken         connect.Code // the code with a valid token
	}{
		{"malformed JSON", "application/json", nil,
			func() io.Reader { return strings.NewReader(`{"channelId": "general", "text": `) }, connect.CodeInvalidArgument},
		{"malformed protobuf", "application/proto", nil,
			func() io.Reader { return bytes.NewReader([]byte{0x0a, 0xff, 0x01}) }, connect.CodeInvalidArgument},
		{"bad field", "application/json", nil,
			func() io.Reader { return strings.NewReader(`{"channelId": "NOT A CHANNEL", "text": "hi"}`) }, connect.CodeInvalidArgument},
		{"oversize", "application/json", nil,
			func() io.Reader {
				return strings.NewReader(`{"channelId": "general", "text": "` + strings.Repeat("a", 2<<20) + `"}`)
			}, connect.CodeResourceExhausted},
		{"gzip bomb", "application/json", http.Header{"Content-Encoding": {"gzip"}},
			func() io.Reader { return bytes.NewReader(gzipBomb(t, 64)) }, connect.CodeResourceExhausted},
	}
	for _, b := range bodies {
		for _, tc := range []struct {
			who, token string
			want       connect.Code
		}{
			{"no token", "", connect.CodeUnauthenticated},
			{"expired token", expiredToken(t, "alice"), connect.CodeUnauthenticated},
			{"valid token", good, b.withToken},
		} {
			t.Run(b.name+"/"+tc.who, func(t *testing.T) {
				h := http.Header{}
				for k, v := range b.header {
					h[k] = v
				}
				if tc.token != "" {
					h.Set("Authorization", "Bearer "+tc.token)
				}
				status, _, resp := rawPost(t, n.node, post, b.contentType, h, b.body())
				wantConnectErrorBody(t, status, resp, tc.want, "")
			})
		}
	}
	t.Run("streaming envelope/no token", func(t *testing.T) {
		// A Subscribe envelope that announces more than it carries.
		status, _, resp := rawPost(t, n.node, "/herald.v1.MessageService/Subscribe", "application/connect+json", nil,
			bytes.NewReader([]byte{0, 0, 0, 1, 0, '{'}))
		if status != http.StatusOK {
			t.Fatalf("status: got %d, want 200 (a streaming error is in the body)", status)
		}
		if !bytes.Contains(resp, []byte(`"unauthenticated"`)) {
			t.Errorf("end of stream: got %q, want code unauthenticated", resp)
		}
	})
}

// TestAuthzForgedTokens checks that tokens not signed HS256 with the
// user-token key are refused, over Connect and at WebSocket upgrade.
func TestAuthzForgedTokens(t *testing.T) {
	t.Parallel()
	n := startAuthNode(t, gateway.Config{})
	if _, err := clientsFor(n.node, n.mint(t, "alice", false, time.Hour)).Channels.CreateChannel(apiCtx(t),
		&heraldv1.CreateChannelRequest{ChannelId: "general"}); err != nil {
		t.Fatal(err)
	}
	key := cluster.DeriveKey(authSecret, userTokenLabel)
	now := time.Now()
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "adm": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// headerSwap returns tok with its header replaced: the signature no
	// longer covers what the header claims, the classic algorithm
	// confusion.
	headerSwap := func(tok, header string) string {
		parts := strings.SplitN(tok, ".", 2)
		return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + parts[1]
	}
	hs256 := signToken(t, jwt.SigningMethodHS256, key, claims())
	noSub, noExp, badSub := claims(), claims(), claims()
	delete(noSub, "sub")
	delete(noExp, "exp")
	badSub["sub"] = "not a user id"
	cases := []struct {
		name   string
		header string // the whole Authorization header
	}{
		{"alg none", "Bearer " + signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims())},
		{"alg none, no signature", "Bearer " + strings.TrimSuffix(headerSwap(hs256, `{"alg":"none","typ":"JWT"}`),
			hs256[strings.LastIndex(hs256, ".")+1:])},
		{"RS256", "Bearer " + signToken(t, jwt.SigningMethodRS256, rsaKey, claims())},
		{"RS256 header on an HS256 signature", "Bearer " + headerSwap(hs256, `{"alg":"RS256","typ":"JWT"}`)},
		{"HS512 with the right key", "Bearer " + signToken(t, jwt.SigningMethodHS512, key, claims())},
		{"HS256 with the raw secret", "Bearer " + signToken(t, jwt.SigningMethodHS256, authSecret, claims())},
		{"HS256 with the node-to-node key", "Bearer " + signToken(t, jwt.SigningMethodHS256,
			cluster.DeriveKey(authSecret, "herald node-to-node v1"), claims())},
		{"no exp", "Bearer " + signToken(t, jwt.SigningMethodHS256, key, noExp)},
		{"no sub", "Bearer " + signToken(t, jwt.SigningMethodHS256, key, noSub)},
		{"sub not a user id", "Bearer " + signToken(t, jwt.SigningMethodHS256, key, badSub)},
		{"expired", "Bearer " + expiredToken(t, "alice")},
		{"tampered claims", "Bearer " + func() string {
			p := strings.Split(hs256, ".")
			p[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root","adm":true,"exp":9999999999}`))
			return strings.Join(p, ".")
		}()},
		{"signature in non-canonical base64", "Bearer " + func() string {
			// 32 bytes take 43 base64url characters, whose last carries 2
			// unused bits: flipping one spells the same signature anew.
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, hs256[len(hs256)-1])
			return hs256[:len(hs256)-1] + string(alphabet[last^1])
		}()},
		{"garbage", "Bearer not-a-jwt"},
		{"empty bearer", "Bearer "},
		{"basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))},
		{"token without scheme", hs256},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Authorization": {tc.header}}
			status, _, body := rawPost(t, n.node, "/herald.v1.ChannelService/GetChannel", "application/json", h,
				strings.NewReader(`{"channelId": "general"}`))
			wantConnectErrorBody(t, status, body, connect.CodeUnauthenticated, "")
			if got := wsUpgradeStatus(t, n.node, h); got != http.StatusUnauthorized {
				t.Errorf("WebSocket upgrade: got status %d, want 401", got)
			}
		})
	}
	t.Run("control: the HS256 token is good", func(t *testing.T) {
		status, _, body := rawPost(t, n.node, "/herald.v1.ChannelService/GetChannel", "application/json", bearerHeader(hs256),
			strings.NewReader(`{"channelId": "general"}`))
		if status != http.StatusOK {
			t.Fatalf("GetChannel: got status %d (%s), want 200", status, body)
		}
		if got := wsUpgradeStatus(t, n.node, bearerHeader(hs256)); got != http.StatusSwitchingProtocols {
			t.Errorf("WebSocket upgrade: got status %d, want 101", got)
		}
	})
}

// wsUpgradeStatus sends a WebSocket upgrade request with header and
// returns the response status. A connection that upgrades is closed at
// once.
func wsUpgradeStatus(t *testing.T, n *node, header http.Header) int {
	t.Helper()
	ws, resp := dialRawWS(t, n, header)
	if ws != nil {
		ws.Close()
	}
	return resp.StatusCode
}
