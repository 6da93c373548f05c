package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cluster"
)

// secretEnv names the environment variable that may hold --secret-file.
const secretEnv = "HERALD_SECRET_FILE"

func newServerCmd() *cobra.Command {
	var (
		o          nodeOptions
		join       string
		secretFile string
		insecure   bool
		peerMap    string
		defectList []string
		tlsF       tlsFlags
		logs       logFlags
		roles      string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a Herald node of a cluster",
		Long: `Run one node of a Herald cluster, with every role unless --roles
narrows them: a node without the channel role holds no replicas (a
gateway-only node: --roles gateway,edge), one without edge or gateway
answers those calls unimplemented, and a node restarted without the
channel role hands its replicas over as a drain does. The first
--bootstrap-expect nodes that find each other through --join found the
cluster together; nodes started later join it. A restarted node rejoins
from its --data-dir with the same flags.

Node-to-node traffic is authenticated with a key derived from the cluster
secret (--secret-file, or HERALD_SECRET_FILE; create one with
"herald secret new FILE" and give every node the same file), and clients
must send bearer tokens minted from it ("herald token"). Without a secret
the server refuses to start unless --insecure is given, and then every
caller is "anonymous", an admin.

With --tls-cert, --tls-key and --tls-ca the HTTP port serves TLS (HTTP/1.1
and HTTP/2; clients may but need not present a certificate) and the Raft
port mutual TLS: nodes present their certificates to each other, signed by
the CA, and check the host they dial against the peer's certificate, so a
node's certificate must name its advertised hosts or IPs as SANs.

The node refuses writes (resource_exhausted, saying why) to the partitions
it holds replicas of while its --data-dir filesystem has less than
--min-free-disk free, and to a partition whose state here holds more than
--state-quota; reads go on, and writes resume once space is freed. A
failed Raft log write or fsync stops the process.`,
		Example: `  # three nodes on one machine
  herald server --node-id n1 --data-dir d1 --http 127.0.0.1:7701 --raft 127.0.0.1:7801 \
    --join 127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7703 --bootstrap-expect 3 --secret-file secret
  # a fourth node joins later
  herald server --node-id n4 --data-dir d4 --http 127.0.0.1:7704 --raft 127.0.0.1:7804 \
    --join 127.0.0.1:7701 --secret-file secret`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if o.nodeID == "" {
				return errors.New("--node-id is required: a name for this node, unique in the cluster, e.g. n1")
			}
			if join != "" {
				o.join = strings.Split(join, ",")
			}
			if o.bootstrapExpect == 0 && len(o.join) == 0 {
				return errors.New("give --bootstrap-expect N to found a cluster, or --join ADDR to join one")
			}
			if o.secret, err = secretFrom(secretFile); err != nil {
				return err
			}
			o.userAuth = o.secret != nil
			o.limits.resolve(cmd, o.userAuth)
			switch {
			case o.secret != nil:
			case !insecure:
				return errors.New("no cluster secret: pass --secret-file FILE (create one with \"herald secret new FILE\") or --insecure to run without authentication")
			default:
				log.Warn("running without authentication (--insecure): any client and any node can use this one")
			}
			if o.tls, err = tlsF.load(orDefault(o.advertiseHTTP, o.httpAddr), orDefault(o.advertiseRaft, o.raftAddr)); err != nil {
				return err
			}
			if peerMap != "" {
				if o.peerMap, err = cluster.LoadPeerMap(peerMap); err != nil {
					return err
				}
			}
			if o.defects, err = parseDefects(defectList); err != nil {
				return err
			}
			if !cmd.Flags().Changed("partitions") {
				o.partitions = 0
			}
			if o.roles, err = cluster.ParseRoles(roles); err != nil {
				return fmt.Errorf("--roles %q: %w", roles, err)
			}
			out := cmd.OutOrStdout()
			o.log = log
			scheme := "HTTP"
			if o.tls != nil {
				scheme = "HTTPS"
			}
			o.started = func(h, r string) {
				fmt.Fprintf(out, "Herald %s: node %s serving %s on %s, Raft on %s, data in %s\n",
					buildVersion(), o.nodeID, scheme, h, r, o.dataDir)
			}
			o.ready = func(took time.Duration) {
				fmt.Fprintf(out, "Ready in %v.\n", took.Round(time.Millisecond))
			}
			return runNode(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodeID, "node-id", "", "this node's name, unique in the cluster (required)")
	f.StringVar(&o.dataDir, "data-dir", "herald-data", "directory for all of the node's data")
	f.StringVar(&o.httpAddr, "http", "127.0.0.1:7700", "address for the Connect API, WebSocket, health checks and peers")
	f.StringVar(&o.raftAddr, "raft", "127.0.0.1:7800", "address for Raft traffic between nodes")
	f.StringVar(&o.advertiseHTTP, "advertise-http", "", "HTTP address peers and clients should dial (default: --http)")
	f.StringVar(&o.advertiseRaft, "advertise-raft", "", "Raft address peers should dial (default: --raft)")
	f.StringVar(&join, "join", "", "comma-separated HTTP addresses of cluster nodes; may include this node's")
	f.IntVar(&o.bootstrapExpect, "bootstrap-expect", 0, "found a new cluster once this many nodes have found each other")
	f.Uint32Var(&o.partitions, "partitions", cluster.DefaultPartitions, "partition count of a new cluster (fixed once founded)")
	f.IntVar(&o.metaVoters, "meta-voters", cluster.DefaultMetaVoters, "how many nodes vote in the metadata group: 3 or 5")
	f.StringVar(&o.region, "region", "", "region label recorded for this node")
	f.StringVar(&roles, "roles", "all", "comma-separated roles: edge (the public API), gateway (WebSockets and Subscribe), channel (holds replicas), admin (the admin API)")
	f.StringVar(&secretFile, "secret-file", "", "file holding the cluster secret (or set "+secretEnv+")")
	f.BoolVar(&insecure, "insecure", false, "run without a cluster secret: no authentication at all")
	tlsF.addServer(cmd)
	f.StringVar(&peerMap, "peer-map", "", "testing: JSON file mapping node ids to the raft and http addresses to dial")
	f.StringSliceVar(&defectList, "test-defect", nil, "testing the checkers only: plant a known bug (unsynced-log, skip-dedup, local-reads, skip-event)")
	_ = f.MarkHidden("test-defect") // herald torture --canary passes it
	o.limits.add(cmd)
	o.space.add(cmd)
	f.StringVar(&logs.level, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logs.format, "log-format", "text", "log format: text or json")
	return cmd
}

// defects are the bugs --test-defect plants: the cluster's, and the
// gateway's skipped event.
type defects struct {
	cluster   cluster.Defects
	skipEvent uint64 // gateway.Config.UnsafeSkipEvent
}

// parseDefects reads --test-defect.
func parseDefects(names []string) (defects, error) {
	var d defects
	for _, name := range names {
		switch name {
		case "unsynced-log":
			d.cluster.UnsyncedLog = true
		case "skip-dedup":
			d.cluster.SkipDedup = true
		case "local-reads":
			d.cluster.LocalReads = true
		case "skip-event":
			d.skipEvent = 5
		default:
			return d, fmt.Errorf("--test-defect: unknown defect %q; known: unsynced-log, skip-dedup, local-reads, skip-event", name)
		}
	}
	return d, nil
}

// orDefault returns s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// readSecret reads a cluster secret file: at least 32 bytes, hex or raw.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if raw, err := hex.DecodeString(s); err == nil {
		b = raw
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("secret in %s is %d bytes; want at least 32 (create one with \"herald secret new FILE\")", path, len(b))
	}
	return b, nil
}
