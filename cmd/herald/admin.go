package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// tokenEnv names the environment variable that may hold --token.
const tokenEnv = "HERALD_TOKEN"

// adminOptions are the flags every herald admin command takes.
type adminOptions struct {
	addr    string
	token   string
	output  string
	timeout time.Duration
	tls     tlsFlags
}

// adminClient calls one node's AdminService for one command.
type adminClient struct {
	opts adminOptions
	// api speaks HTTP/1.1 to http:// addresses (HTTP/2 over TLS to
	// https:// ones); restore always speaks HTTP/2, cleartext (h2c) to
	// http:// addresses, which client streaming needs.
	api       heraldv1connect.AdminServiceClient
	restore   heraldv1connect.AdminServiceClient
	http      *http.Client // plain HTTP requests (/metrics), with the token
	closeIdle func()
	// addrHint is " --addr X" when --addr was given, for the commands the
	// output suggests.
	addrHint string
	out      io.Writer
	errOut   io.Writer
}

func newAdminCmd() *cobra.Command {
	o := &adminOptions{}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Inspect and change the cluster: ring, nodes, placement, snapshots",
		Long: `Inspect and change a running Herald cluster through any node's AdminService.

Every command talks to the node at --addr (any node answers for the whole
cluster) and needs an admin token when the cluster has authentication on:
pass --token, or set ` + tokenEnv + `. Tables are for people; -o json prints the
response messages as protojson (lowerCamel field names, unset fields left
out, 64-bit integers as strings) for programs.`,
		Example: `  herald admin ring
  herald admin nodes --addr 10.0.0.5:7700
  herald admin lookup general -o json
  herald admin drain n3
  herald admin snapshot save backup/`,
		Args: cobra.ArbitraryArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return o.validate()
		},
		RunE: groupRunE,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.addr, "addr", "127.0.0.1:7700", "HOST:PORT of any node's HTTP API (or an http:// or https:// URL)")
	pf.StringVar(&o.token, "token", "", "admin bearer token (default $"+tokenEnv+")")
	pf.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "time limit of each request")
	o.tls.addClient(cmd)

	cmd.AddCommand(
		newAdminRingCmd(o),
		newAdminNodesCmd(o),
		newAdminLookupCmd(o),
		newAdminDrainCmd(o),
		newAdminRemoveCmd(o),
		newAdminRebalanceCmd(o),
		newAdminTransferCmd(o),
		newAdminDigestCmd(o),
		newAdminRecoverCmd(o),
		newAdminSnapshotCmd(o),
		newAdminTopCmd(o),
	)
	return cmd
}

// groupRunE serves a command that only groups others: help without
// arguments, an error naming the unknown subcommand otherwise.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	return fmt.Errorf("unknown command %q for %q; see %q", args[0], cmd.CommandPath(), cmd.CommandPath()+" --help")
}

func (o *adminOptions) validate() error {
	switch o.output {
	case "table", "json":
	default:
		return fmt.Errorf("--output %q: want table or json", o.output)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--timeout %v: want a positive duration such as 30s", o.timeout)
	}
	if _, err := o.tls.baseURL(o.addr); err != nil {
		return err
	}
	if o.token == "" {
		o.token = os.Getenv(tokenEnv)
	}
	return nil
}

func (o *adminOptions) json() bool { return o.output == "json" }

// baseURL turns --addr into the URL the clients call.
func baseURL(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("--addr %q: want HOST:PORT or an http:// or https:// URL", addr)
		}
		return strings.TrimRight(addr, "/"), nil
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || port == "" || host == "" {
		return "", fmt.Errorf("--addr %q: want HOST:PORT, e.g. 127.0.0.1:7700", addr)
	}
	return "http://" + addr, nil
}

// client builds the AdminService clients for a command.
func (o *adminOptions) client(cmd *cobra.Command) (*adminClient, error) {
	base, err := o.tls.baseURL(o.addr)
	if err != nil {
		return nil, err
	}
	tc, err := o.tls.client()
	if err != nil {
		return nil, err
	}
	// Unary calls and server streams: HTTP/1.1, or HTTP/2 over TLS. With
	// HTTP/1.1 allowed, cleartext HTTP/2 is not tried.
	general := &http.Transport{Protocols: new(http.Protocols)}
	general.Protocols.SetHTTP1(true)
	general.Protocols.SetHTTP2(true)
	general.Protocols.SetUnencryptedHTTP2(true)
	// Client streams: HTTP/2 only, cleartext by prior knowledge (h2c) for
	// http:// addresses.
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetHTTP2(true)
	h2.Protocols.SetUnencryptedHTTP2(true)
	if tc != nil {
		// Each transport edits its TLS config (NextProtos): one copy each.
		general.TLSClientConfig, h2.TLSClientConfig = tc, tc.Clone()
	}
	wrap := func(rt http.RoundTripper) *http.Client {
		if o.token != "" {
			rt = &bearerTransport{token: o.token, base: rt}
		}
		return &http.Client{Transport: rt}
	}
	c := &adminClient{
		opts:    *o,
		api:     heraldv1connect.NewAdminServiceClient(wrap(general), base),
		http:    wrap(general),
		restore: heraldv1connect.NewAdminServiceClient(wrap(h2), base),
		closeIdle: func() {
			general.CloseIdleConnections()
			h2.CloseIdleConnections()
		},
		out:    cmd.OutOrStdout(),
		errOut: cmd.ErrOrStderr(),
	}
	if f := cmd.Flags().Lookup("addr"); f != nil && f.Changed {
		c.addrHint = " --addr " + o.addr
	}
	return c, nil
}

// bearerTransport sends a bearer token with every request.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (b *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// call bounds one request by --timeout.
func (c *adminClient) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.timeout)
}

// fail turns a request's error into one line that says what failed and,
// where it can, what to do about it.
func (c *adminClient) fail(what string, err error) error {
	if opErr, ok := errors.AsType[*net.OpError](err); ok && opErr.Op == "dial" {
		return fmt.Errorf("%s: cannot connect to %s (%v); is a herald node listening there? Point --addr HOST:PORT at one",
			what, c.opts.addr, opErr.Err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: interrupted", what)
	}
	if errors.Is(err, context.DeadlineExceeded) || connect.CodeOf(err) == connect.CodeDeadlineExceeded {
		return fmt.Errorf("%s: no answer from %s within --timeout %v", what, c.opts.addr, c.opts.timeout)
	}
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		hint := ""
		switch ce.Code() {
		case connect.CodeUnauthenticated, connect.CodePermissionDenied:
			hint = "; pass an admin token with --token or " + tokenEnv
		case connect.CodeUnimplemented:
			hint = fmt.Sprintf("; is %s a herald node?", c.opts.addr)
		}
		msg := strings.ReplaceAll(ce.Message(), "\n", " ")
		return fmt.Errorf("%s: %s (%s)%s", what, msg, ce.Code(), hint)
	}
	return fmt.Errorf("%s: %v", what, err)
}

// run builds the client, runs f and closes the client's connections.
func (o *adminOptions) run(cmd *cobra.Command, f func(ctx context.Context, c *adminClient) error) error {
	c, err := o.client(cmd)
	if err != nil {
		return err
	}
	defer c.closeIdle()
	return f(cmd.Context(), c)
}

// positional checks a command's arguments by name, so a missing one is
// reported as what it is.
func positional(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		return fmt.Errorf("%s takes %s; got %d argument(s) (see --help)",
			cmd.CommandPath(), strings.Join(names, " "), len(args))
	}
}

// parsePartition parses a partition number argument.
func parsePartition(s string) (uint32, error) {
	p, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("partition %q: want a partition number (0, 1, ...; see herald admin ring)", s)
	}
	return uint32(p), nil
}

// getRing calls GetRing.
func (c *adminClient) getRing(ctx context.Context) (*heraldv1.GetRingResponse, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.api.GetRing(ctx, &heraldv1.GetRingRequest{})
	if err != nil {
		return nil, c.fail("get ring", err)
	}
	return resp, nil
}

func newAdminRingCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "ring",
		Short: "List every partition: token range, replicas, leader, indexes and health",
		Long: `List every partition of the ring, one row each:

  PARTITION  the partition number
  TOKENS     its range of the 64-bit channel-id hash space, as the top 32
             bits of the first and last token in hex (-o json has them whole)
  LEADER     the node leading its Raft group
  REPLICAS   the nodes of its Raft configuration; * marks a non-voter that
             is still catching up
  DESIRED    where the placement wants the replicas, when that differs
  COMMIT     the leader's commit index
  APPLIED    the leader's applied index
  HEALTH     ok (a leader, every replica answered and caught up),
             degraded (a leader, some replica missing or lagging) or
             no-quorum (no leader: the partition takes no writes)

A footer gives the partition count and the placement epoch, which counts
placement changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				resp, err := c.getRing(ctx)
				if err != nil {
					return err
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				return writeRing(c.out, resp)
			})
		},
	}
}

func newAdminNodesCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes and what each holds",
		Long: `List the cluster's nodes, one row each:

  ID         the node's id
  HTTP       where clients and peers reach its HTTP API
  RAFT       where peers reach its Raft port
  STATE      active (takes replicas), draining (giving its leaderships and
             replicas away) or removed (forgotten; holds nothing)
  ROLES      what it serves (herald server --roles): edge, admin, channel
             (holds replicas), gateway
  META       leader of the metadata group, voter in it, or -
  REPLICAS   how many partitions it holds a replica of
  LEADERS    how many partitions it leads
  REACHABLE  whether the node at --addr could reach it just now

Watch a drain or a removal by running it again: the node's REPLICAS and
LEADERS fall to 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.ListNodes(ctx, &heraldv1.ListNodesRequest{})
				if err != nil {
					return c.fail("list nodes", err)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				return writeNodes(c.out, resp)
			})
		},
	}
}

func newAdminLookupCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "lookup CHANNEL",
		Short: "Say which partition owns a channel and where it lives",
		Long: `Print a channel's token (the 64-bit hash of its id), the partition that owns
it, and that partition's row as "herald admin ring" shows it. The channel
need not exist: every id has a partition.`,
		Example: `  herald admin lookup general`,
		Args:    positional("CHANNEL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.LookupChannel(ctx, &heraldv1.LookupChannelRequest{ChannelId: args[0]})
				if err != nil {
					return c.fail("look up "+args[0], err)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				return writeLookup(c.out, resp)
			})
		},
	}
}

func newAdminDrainCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "drain NODE",
		Short: "Move every leadership and then every replica off a node",
		Long: `Mark a node draining: the cluster moves its partition leaderships to other
nodes, then its replicas, one replica of a partition at a time. The command
returns once the drain is recorded; watch it with "herald admin nodes"
until the node holds no replicas. Draining needs more active nodes than
replicas per partition.`,
		Example: `  herald admin drain n3
  herald admin nodes`,
		Args: positional("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.DrainNode(ctx, &heraldv1.DrainNodeRequest{NodeId: args[0]})
				if err != nil {
					return c.fail("drain "+args[0], err)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				_, err = fmt.Fprintf(c.out, "%s is %s: its leaderships, then its replicas, move to other nodes; watch with: herald admin nodes%s\n",
					resp.GetNode().GetId(), nodeStateName(resp.GetNode().GetState()), c.addrHint)
				return err
			})
		},
	}
}

func newAdminRemoveCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Forget a node and re-replicate what it held elsewhere",
		Long: `Remove a node from the cluster, typically a dead one: it leaves the
metadata group, and every replica it held is replaced on another node.
Ask any other node (a node cannot remove itself). The command returns once
the removal is recorded; watch the re-replication with "herald admin nodes"
or "herald admin ring". With fewer active nodes left than replicas per
partition, the removal still goes ahead, and the command warns (on stderr,
and in the "warning" field with -o json) that partitions keep fewer
replicas until another node joins.`,
		Example: `  herald admin remove n3 --addr 127.0.0.1:7700`,
		Args:    positional("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.RemoveNode(ctx, &heraldv1.RemoveNodeRequest{NodeId: args[0]})
				if err != nil {
					return c.fail("remove "+args[0], err)
				}
				w := resp.GetWarning()
				if w != "" {
					fmt.Fprintf(c.errOut, "WARNING: %s.\n", w)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				what := "its replicas are being re-replicated on other nodes"
				if w != "" {
					what = "its replicas are dropped"
				}
				_, err = fmt.Fprintf(c.out, "%s is %s: %s; watch with: herald admin nodes%s\n",
					resp.GetNode().GetId(), nodeStateName(resp.GetNode().GetState()), what, c.addrHint)
				return err
			})
		},
	}
}

func newAdminRebalanceCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rebalance",
		Short: "Spread replicas and leaders evenly over the active nodes",
		Long: `Recompute the placement now so replicas and leaders are spread evenly over
the active nodes (the metadata leader also does this continuously), and
say how many partitions' placements change. A partition still moving from
its last change is left until it has settled, so that its group makes one
move at a time. The moves happen in the background; watch them with
"herald admin ring".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.Rebalance(ctx, &heraldv1.RebalanceRequest{})
				if err != nil {
					return c.fail("rebalance", err)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				if resp.GetMoves() == 0 {
					_, err = fmt.Fprintln(c.out, "placement is balanced: nothing to move now (a partition still moving is planned once it settles)")
					return err
				}
				_, err = fmt.Fprintf(c.out, "placement of %d partition(s) changes; watch with: herald admin ring%s\n",
					resp.GetMoves(), c.addrHint)
				return err
			})
		},
	}
}

func newAdminTransferCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer PARTITION NODE",
		Short: "Make a node the leader of a partition it holds",
		Long: `Make NODE the preferred leader of PARTITION and wait (within --timeout) until
it leads. NODE must hold a replica of the partition.`,
		Example: `  herald admin transfer 3 n2`,
		Args:    positional("PARTITION", "NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePartition(args[0])
			if err != nil {
				return err
			}
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.TransferLeadership(ctx, &heraldv1.TransferLeadershipRequest{Partition: p, NodeId: args[1]})
				if err != nil {
					return c.fail(fmt.Sprintf("transfer partition %d to %s", p, args[1]), err)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				_, err = fmt.Fprintf(c.out, "partition %d: %s leads now (replicas %s)\n",
					resp.GetPartition().GetId(), resp.GetPartition().GetLeader(), replicaList(resp.GetPartition().GetReplicas()))
				return err
			})
		},
	}
}

// digestJSON is digest's -o json output.
type digestJSON struct {
	Partition uint32            `json:"partition"`
	Replicas  []digestJSONEntry `json:"replicas"`
	Agree     bool              `json:"agree"`
	Summary   string            `json:"summary"`
}

type digestJSONEntry struct {
	NodeID       string `json:"nodeId"`
	AppliedIndex uint64 `json:"appliedIndex,omitempty"`
	SHA256       string `json:"sha256,omitempty"`
	Error        string `json:"error,omitempty"`
}

func newAdminDigestCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "digest PARTITION",
		Short: "Compare the state digests of a partition's replicas",
		Long: `Ask each replica of PARTITION (its Raft configuration, as GetRing reports
it, or its desired placement when it has no leader) for its applied index
and a SHA-256 over its whole state, and compare them: replicas at equal
applied index must have equal digests. Replicas that are still applying
show a lower index and are compared only with their peers at that index.

Exits 1 if replicas at equal applied index have different digests, or if
a replica did not answer.

With -o json it prints one object:
  {"partition": 0,
   "replicas": [{"nodeId": "n1", "appliedIndex": 42, "sha256": "<64 hex>"},
                {"nodeId": "n3", "error": "<why it did not answer>"}],
   "agree": true,
   "summary": "<the table's last line>"}`,
		Example: `  herald admin digest 0`,
		Args:    positional("PARTITION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePartition(args[0])
			if err != nil {
				return err
			}
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				return c.digest(ctx, p)
			})
		},
	}
}

func (c *adminClient) digest(ctx context.Context, p uint32) error {
	ring, err := c.getRing(ctx)
	if err != nil {
		return err
	}
	if p >= ring.GetPartitionCount() {
		return fmt.Errorf("partition %d does not exist: the cluster has %d (0 to %d)", p, ring.GetPartitionCount(), ring.GetPartitionCount()-1)
	}
	var nodes []string
	for _, part := range ring.GetPartitions() {
		if part.GetId() != p {
			continue
		}
		for _, r := range part.GetReplicas() {
			nodes = append(nodes, r.GetNodeId())
		}
		if len(nodes) == 0 {
			nodes = part.GetDesiredReplicas()
		}
	}
	if len(nodes) == 0 {
		return fmt.Errorf("partition %d: the ring lists no replicas to compare", p)
	}
	// Ask every replica at once, so they are as close in time as can be.
	results := make([]digestResult, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() {
			ctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.GetReplicaDigest(ctx, &heraldv1.GetReplicaDigestRequest{Partition: p, NodeId: node})
			if err != nil {
				err = c.fail("digest", err)
			}
			results[i] = digestResult{node: node, resp: resp, err: err}
		})
	}
	wg.Wait()

	line, agree := digestVerdict(results)
	if c.opts.json() {
		out := digestJSON{Partition: p, Agree: agree, Summary: line}
		for _, r := range results {
			e := digestJSONEntry{NodeID: r.node}
			if r.err != nil {
				e.Error = r.err.Error()
			} else {
				e.AppliedIndex = r.resp.GetAppliedIndex()
				e.SHA256 = fmt.Sprintf("%x", r.resp.GetSha256())
			}
			out.Replicas = append(out.Replicas, e)
		}
		if err := writeJSON(c.out, out); err != nil {
			return err
		}
	} else if err := writeDigests(c.out, results); err != nil {
		return err
	}
	if !agree {
		return fmt.Errorf("partition %d: replicas at equal applied index have different digests", p)
	}
	for _, r := range results {
		if r.err != nil {
			return fmt.Errorf("partition %d: replica on %s did not answer: %v", p, r.node, r.err)
		}
	}
	return nil
}

func newAdminRecoverCmd(o *adminOptions) *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "recover-partition PARTITION --from NODE",
		Short: "Restart a partition that lost its quorum from one surviving replica",
		Long: `Restart PARTITION, which has lost its quorum (herald admin ring shows it
no-quorum), from the replica on NODE alone: that replica becomes a group
of one, the other replicas are discarded, and the placement re-replicates
it onto other nodes.

THIS CAN LOSE ACKNOWLEDGED WRITES. Every write the lost replicas had
acknowledged but NODE had not applied is gone for good. Pick the surviving
replica with the highest applied index (see "herald admin ring"), and use
this only when the lost replicas cannot be brought back.

Prints the partition's ring row once NODE leads it.`,
		Example: `  herald admin recover-partition 5 --from n2`,
		Args:    positional("PARTITION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePartition(args[0])
			if err != nil {
				return err
			}
			if from == "" {
				return errors.New("--from NODE is required: the node holding the replica to recover from")
			}
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				fmt.Fprintf(c.errOut, "WARNING: recovering partition %d from %s alone. Writes that the lost replicas acknowledged but %s had not applied are lost for good.\n",
					p, from, from)
				ctx, cancel := c.call(ctx)
				defer cancel()
				resp, err := c.api.RecoverPartition(ctx, &heraldv1.RecoverPartitionRequest{Partition: p, FromNodeId: from})
				if err != nil {
					return c.fail(fmt.Sprintf("recover partition %d from %s", p, from), err)
				}
				if o.json() {
					return writeProto(c.out, resp)
				}
				return writePartitions(c.out, resp.GetPartition())
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the node whose replica the partition restarts from (required)")
	return cmd
}
