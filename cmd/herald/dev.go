package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cluster"
)

func newDevCmd() *cobra.Command {
	var (
		dataDir    string
		httpAddr   string
		raftAddr   string
		partitions uint32
		nodes      int
		secretFile string
		limits     limitFlags
		space      spaceFlags
		logs       logFlags
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-node Herald with every role on loopback, auth off",
		Long: `Run a complete Herald node in one process: the Connect API, the WebSocket
gateway, and every partition as a Raft group of one, with its data in
--data-dir. Authentication is off (every caller is "anonymous", an admin),
so dev listens on loopback addresses only. Stop it with Ctrl-C; start it
again with the same --data-dir and everything is still there.`,
		Example: `  herald dev
  herald dev --data-dir /tmp/herald --http 127.0.0.1:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := requireLoopback("--http", httpAddr); err != nil {
				return err
			}
			if err := requireLoopback("--raft", raftAddr); err != nil {
				return err
			}
			if !cmd.Flags().Changed("partitions") {
				partitions = 0 // keep what the data directory says
			}
			secret, err := secretFrom(secretFile)
			if err != nil {
				return err
			}
			limits.resolve(cmd, secret != nil)
			sec := devSecurity{secret: secret, limits: limits, space: space}
			out := cmd.OutOrStdout()
			if nodes < 1 || nodes > 9 {
				return fmt.Errorf("--nodes %d: want 1 to 9", nodes)
			}
			if nodes > 1 {
				return runDevCluster(cmd.Context(), out, nodes, dataDir, httpAddr, partitions, sec, log)
			}
			return runNode(cmd.Context(), nodeOptions{
				nodeID:          "n1",
				dataDir:         dataDir,
				httpAddr:        httpAddr,
				raftAddr:        raftAddr,
				bootstrapExpect: 1,
				partitions:      partitions,
				secret:          sec.secret,
				userAuth:        sec.secret != nil,
				limits:          sec.limits,
				space:           sec.space,
				log:             log,
				started: func(h, r string) {
					printDevBanner(out, dataDir, h, r, tokenCommand(sec.secret != nil, secretFile))
				},
				ready: func(took time.Duration) {
					fmt.Fprintf(out, "Ready in %v. Press Ctrl-C to stop.\n", took.Round(time.Millisecond))
				},
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "herald-data", "directory for all of the node's data")
	f.StringVar(&httpAddr, "http", "127.0.0.1:7700", "loopback address for the Connect API, WebSocket and health checks")
	f.StringVar(&raftAddr, "raft", "127.0.0.1:7800", "loopback address for Raft traffic")
	f.Uint32Var(&partitions, "partitions", cluster.DefaultPartitions, "partition count of a new data directory (fixed once created)")
	f.IntVar(&nodes, "nodes", 1, "run this many nodes in one process: HTTP on --http's port + i, Raft on that port + 100 + i, data in DATA/n<i>")
	f.StringVar(&secretFile, "secret-file", "", "turn authentication on with this cluster secret (or set "+secretEnv+"); clients then need tokens from \"herald token\"")
	limits.add(cmd)
	space.add(cmd)
	f.StringVar(&logs.level, "log-level", "error", "log level: debug, info, warn or error (info shows Raft elections)")
	f.StringVar(&logs.format, "log-format", "text", "log format: text or json")
	return cmd
}

// requireLoopback refuses a listen address that is not on loopback: dev
// runs with authentication off.
func requireLoopback(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want host:port (%v)", flag, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s %q: herald dev listens on loopback only because authentication is off; use 127.0.0.1", flag, addr)
}

// devSecurity is dev's optional authentication, and the limits every
// node it runs shares.
type devSecurity struct {
	secret []byte
	limits limitFlags
	space  spaceFlags
}

// tokenCommand is the banner's command for a token, "" with auth off: it
// names the secret file as dev was given it (the environment variable
// needs no flag).
func tokenCommand(auth bool, secretFile string) string {
	switch {
	case !auth:
		return ""
	case secretFile == "":
		return "herald token --user alice"
	case strings.ContainsFunc(secretFile, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r))
	}):
		return "herald token --user alice --secret-file '" + strings.ReplaceAll(secretFile, "'", `'\''`) + "'"
	default:
		return "herald token --user alice --secret-file " + secretFile
	}
}

// printDevBanner prints where the node listens and curl commands to try
// it; tokenCmd, if not empty, mints the token they send.
func printDevBanner(w io.Writer, dataDir, httpAddr, raftAddr, tokenCmd string) {
	auth := tokenCmd != ""
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	base := "http://" + httpAddr
	fmt.Fprintf(w, `Herald %s: one node, every role (pid %d)
  data       %s
  HTTP       %s  (Connect, gRPC and gRPC-Web; /healthz, /readyz)
  WebSocket  ws://%s/ws
  console    %s/
  Raft       %s
  auth       %s

Try it:
`, buildVersion(), os.Getpid(), abs, base, httpAddr, base, raftAddr, authLine(auth))
	h := "-H 'Content-Type: application/json'"
	if auth {
		fmt.Fprintf(w, "  TOKEN=$(%s)\n", tokenCmd)
		h += ` -H "Authorization: Bearer $TOKEN"`
	}
	fmt.Fprintf(w, `  curl -s %s -d '{"channel_id":"general"}' \
    %s/herald.v1.ChannelService/CreateChannel
  curl -s %s -d '{"channel_id":"general","text":"hello","client_msg_id":"m1"}' \
    %s/herald.v1.MessageService/PostMessage
  curl -s %s -d '{"channel_id":"general"}' \
    %s/herald.v1.MessageService/GetHistory

`, h, base, h, base, h, base)
}

func authLine(on bool) string {
	if on {
		return "on: send Authorization: Bearer TOKEN (mint one with \"herald token --user ID\"); loopback only"
	}
	return "off: every caller is \"anonymous\", an admin; loopback only"
}
