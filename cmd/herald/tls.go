package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cluster"
)

// tlsFlags are the --tls-cert, --tls-key and --tls-ca flags.
type tlsFlags struct {
	cert, key, ca string
}

// addServer adds the flags of a serving command.
func (f *tlsFlags) addServer(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.cert, "tls-cert", "", "this node's TLS certificate (PEM), for client and peer traffic; with --tls-key and --tls-ca")
	fs.StringVar(&f.key, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.StringVar(&f.ca, "tls-ca", "", "CA certificate (PEM) that signs every node's certificate; nodes must present one to each other")
}

// load returns the node's TLS configurations, nil when no flag is set. It
// checks that the certificate covers the hosts peers and clients dial
// (hosts: the advertised or listen addresses).
func (f *tlsFlags) load(hosts ...string) (*cluster.TLSConfigs, error) {
	if f.cert == "" && f.key == "" && f.ca == "" {
		return nil, nil
	}
	var missing []string
	for _, x := range []struct{ flag, v string }{{"--tls-cert", f.cert}, {"--tls-key", f.key}, {"--tls-ca", f.ca}} {
		if x.v == "" {
			missing = append(missing, x.flag)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("--tls-cert, --tls-key and --tls-ca go together: give all three or none (missing %s)", strings.Join(missing, " and "))
	}
	c, err := cluster.TLSFiles{Cert: f.cert, Key: f.key, CA: f.ca}.Load()
	if err != nil {
		return nil, err
	}
	for _, addr := range hosts {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			continue // the listen error says what is wrong
		}
		if err := c.CheckHost(host); err != nil {
			return nil, fmt.Errorf("--tls-cert %s does not cover %s, which peers dial: a node's certificate needs its advertised hosts as SANs (%v)", f.cert, host, err)
		}
	}
	return c, nil
}

// addClient adds the flags of a command that calls a node.
func (f *tlsFlags) addClient(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.ca, "tls-ca", "", "CA certificate (PEM) to verify the node with; connects over https")
	pf.StringVar(&f.cert, "tls-cert", "", "client certificate (PEM) to present over https, with --tls-key")
	pf.StringVar(&f.key, "tls-key", "", "private key (PEM) of --tls-cert")
}

// on reports whether any flag is set: the client then speaks https.
func (f *tlsFlags) on() bool { return f.cert != "" || f.key != "" || f.ca != "" }

// client returns the TLS configuration of a client, nil when no flag is
// set. Without --tls-ca the system's roots verify the node.
func (f *tlsFlags) client() (*tls.Config, error) {
	if !f.on() {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		b, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("read --tls-ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", f.ca)
		}
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("load --tls-cert %s with --tls-key %s: %w", f.cert, f.key, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// baseURL is the package's baseURL for a client with these flags: https
// for a HOST:PORT when any is set, and an error for an http:// URL then.
func (f *tlsFlags) baseURL(addr string) (string, error) {
	base, err := baseURL(addr)
	if err != nil || !f.on() {
		return base, err
	}
	if strings.Contains(addr, "://") {
		if strings.HasPrefix(base, "http://") {
			return "", fmt.Errorf("--addr %q is http://, but the --tls-* flags need https", addr)
		}
		return base, nil
	}
	return "https://" + addr, nil
}
