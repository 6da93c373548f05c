package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

// TestGatewayOnlyNode: `herald server --roles gateway,edge` joins three
// nodes with every role. It holds no replica (herald admin nodes says so,
// with its roles), yet its WebSocket subscribers get every post made
// through another node, in order, and posts through it are forwarded;
// an admin call to it is refused as unimplemented, naming the role.
func TestGatewayOnlyNode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cl, err := bench.StartCluster(ctx, bench.ClusterOptions{Binary: heraldBin, Nodes: 3, Partitions: 4, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)

	addr := freeAddr(t)
	args := []string{"server", "--node-id", "g1", "--data-dir", t.TempDir(), "--http", addr, "--raft", freeAddr(t),
		"--join", strings.Join(cl.Addrs, ","), "--insecure", "--roles", "gateway,edge", "--log-level", "warn"}
	out := newProcOutput(t.Output(), "g1 ")
	cmd := exec.Command(heraldBin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	checkFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("g1 /readyz: %d\n%s", resp.StatusCode, out.String())
		}
		return nil
	})

	channels := heraldv1connect.NewChannelServiceClient(http.DefaultClient, "http://"+addr)
	call, stop := context.WithTimeout(ctx, rpcTimeout)
	_, err = channels.CreateChannel(call, &heraldv1.CreateChannelRequest{ChannelId: "gw"})
	stop()
	if err != nil {
		t.Fatalf("CreateChannel through g1: %v", err)
	}
	ws := dialProxyWS(t, addr)
	b, _ := protojson.Marshal(&heraldv1.ClientFrame{Id: "s", Kind: &heraldv1.ClientFrame_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{ChannelId: "gw", AfterSeq: proto.Uint64(0)}}})
	if err := ws.conn.WriteString(string(b)); err != nil {
		t.Fatal(err)
	}
	elsewhere := heraldv1connect.NewMessageServiceClient(http.DefaultClient, "http://"+cl.Addrs[0])
	here := heraldv1connect.NewMessageServiceClient(http.DefaultClient, "http://"+addr)
	for i := range 6 {
		c := elsewhere
		if i%2 == 1 {
			c = here
		}
		if _, err := post(c, "gw", fmt.Sprint("g-", i), "post"); err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
	}
	ws.events(t, 0, 6)

	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var resp heraldv1.ListNodesResponse
		if err := protojson.Unmarshal([]byte(mustAdmin(t, cl.Addrs[0], "nodes", "-o", "json")), &resp); err != nil {
			return err
		}
		for _, n := range resp.GetNodes() {
			if n.GetId() != "g1" {
				continue
			}
			if roles := strings.Join(n.GetRoles(), ","); roles != "edge,gateway" || n.GetReplicas() != 0 || !n.GetReachable() {
				return fmt.Errorf("herald admin nodes: g1 has roles %q, %d replicas, reachable %v; want edge,gateway, none, true",
					roles, n.GetReplicas(), n.GetReachable())
			}
			return nil
		}
		return fmt.Errorf("herald admin nodes: no g1 in %v", resp.GetNodes())
	})

	admin := heraldv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+addr)
	_, err = admin.GetRing(ctx, &heraldv1.GetRingRequest{})
	if connect.CodeOf(err) != connect.CodeUnimplemented || !strings.Contains(err.Error(), "with the admin role") {
		t.Errorf("GetRing on g1: got %v, want unimplemented naming the admin role", err)
	}
}
