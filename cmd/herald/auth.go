package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/gateway"
)

// limitFlags are the limits every serving command takes: per user, and
// how long a request may take.
type limitFlags struct {
	posts          float64
	conns          int
	requestTimeout time.Duration
	pprof          bool
	metricsAddr    string
}

// Limits that apply when authentication is on and no flag says otherwise;
// with authentication off there is only one user, and no limit.
const (
	defaultMaxPostsPerUser = 20
	defaultMaxConnsPerUser = 32
)

func (l *limitFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Float64Var(&l.posts, "max-posts-per-user", 0,
		fmt.Sprintf("posts a second one user may make through this node; 0 = no limit (default %d when authentication is on)", defaultMaxPostsPerUser))
	f.IntVar(&l.conns, "max-conns-per-user", 0,
		fmt.Sprintf("WebSocket connections and Subscribe streams one user may hold on this node; 0 = no limit (default %d when authentication is on)", defaultMaxConnsPerUser))
	f.DurationVar(&l.requestTimeout, "request-timeout", cluster.DefaultRequestTimeout,
		"longest a request may take inside the cluster; one that cannot reach its partition's leader comes back unavailable (or indeterminate) within it")
	f.BoolVar(&l.pprof, "pprof", false,
		"serve Go's profiler at /debug/pprof/ on the HTTP port, to admin tokens only (to everyone with authentication off), e.g. go tool pprof 'http://NODE/debug/pprof/profile?seconds=30'")
	f.StringVar(&l.metricsAddr, "metrics-addr", "",
		"also serve /metrics, without authentication, on this address (e.g. 127.0.0.1:9464; herald dev --nodes N: node i on its port + i-1), for a Prometheus without an admin token; the HTTP port serves it to admin tokens (to everyone with authentication off)")
}

// resolve fills in the defaults for flags the user did not set.
func (l *limitFlags) resolve(cmd *cobra.Command, authOn bool) {
	if !authOn {
		return
	}
	if !cmd.Flags().Changed("max-posts-per-user") {
		l.posts = defaultMaxPostsPerUser
	}
	if !cmd.Flags().Changed("max-conns-per-user") {
		l.conns = defaultMaxConnsPerUser
	}
}

// secretFrom reads the secret named by --secret-file or HERALD_SECRET_FILE;
// it returns nil when neither is set.
func secretFrom(flag string) ([]byte, error) {
	path := flag
	if path == "" {
		path = os.Getenv(secretEnv)
	}
	if path == "" {
		return nil, nil
	}
	return readSecret(path)
}

func newTokenCmd() *cobra.Command {
	var (
		user, secretFile string
		admin            bool
		ttl              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a bearer token for a user, signed with the cluster secret",
		Long: `Print a bearer token (an HS256 JWT: sub = the user, an expiry, and the
admin claim with --admin) signed with a key derived from the cluster
secret. Clients send it as "Authorization: Bearer TOKEN", or in the auth
frame of a WebSocket connection. The secret comes from --secret-file or
HERALD_SECRET_FILE, never from the command line.`,
		Example: `  herald token --user alice --secret-file cluster.secret
  HERALD_SECRET_FILE=cluster.secret herald token --user ops --admin --ttl 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user == "" {
				return errors.New("--user is required: the user id the token speaks for")
			}
			secret, err := secretFrom(secretFile)
			if err != nil {
				return err
			}
			if secret == nil {
				return errors.New("no secret: pass --secret-file FILE or set " + secretEnv + " (create one with \"herald secret new FILE\")")
			}
			token, err := gateway.NewAuthenticator(secret).Mint(user, admin, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "user id the token speaks for (required)")
	f.BoolVar(&admin, "admin", false, "give the token the admin claim (admin API, deleting any message, private channels)")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	f.StringVar(&secretFile, "secret-file", "", "file holding the cluster secret (or set "+secretEnv+")")
	return cmd
}
