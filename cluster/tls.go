package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// TLSFiles names the PEM files of a node's TLS setup: its certificate
// (which may be followed by intermediates), its private key, and the CA
// certificates that sign every node's certificate.
type TLSFiles struct {
	Cert, Key, CA string
}

// Load reads and checks the files and builds the node's TLS
// configurations. The certificate must chain to the CA and be usable for
// both server and client authentication, since a node is both. Errors name
// the file at fault. The files are read once: a new certificate takes a
// restart.
func (f TLSFiles) Load() (*TLSConfigs, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	b, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("TLS CA %s: no PEM certificate in it", f.CA)
	}
	c, err := NewTLSConfigs(cert, pool)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s: %w", f.Cert, err)
	}
	return c, nil
}

// TLSConfigs are a node's TLS configurations, one per side of its traffic
// (DESIGN.md "Node-to-node authentication"). They are built once and must
// not be modified: hand an http.Server or http.Transport, which edit the
// configuration they get, a Clone. A nil *TLSConfigs means plaintext
// everywhere.
type TLSConfigs struct {
	// HTTP serves the node's HTTP port (clients and internal RPC). A
	// client certificate is verified against the CA when one is presented
	// but is not required: users authenticate with bearer tokens. Internal
	// RPCs are refused without one (see Node.RPCHandler).
	HTTP *tls.Config
	// Raft serves the Raft port: the peer must present a certificate
	// signed by the CA (mutual TLS).
	Raft *tls.Config
	// Peer dials other nodes, for Raft and internal RPC: it presents the
	// node's certificate and verifies the peer's against the CA and the
	// host of the address dialed.
	Peer *tls.Config

	leaf *x509.Certificate
}

// NewTLSConfigs builds a node's TLS configurations from its certificate
// and the pool of CAs that sign node certificates. It fails if the
// certificate does not chain to the pool for both server and client
// authentication. TLS 1.2 is the minimum version.
func NewTLSConfigs(cert tls.Certificate, cas *x509.CertPool) (*TLSConfigs, error) {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return nil, errors.New("no certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("intermediate certificate: %w", err)
		}
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts := x509.VerifyOptions{Roots: cas, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := leaf.Verify(opts); err != nil {
			return nil, fmt.Errorf("not valid against the TLS CA for %s: %w", usageName(usage), err)
		}
	}
	certs := []tls.Certificate{cert}
	return &TLSConfigs{
		HTTP: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: certs,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    cas,
		},
		Raft: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: certs,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    cas,
		},
		Peer: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: certs,
			RootCAs:      cas,
		},
		leaf: leaf,
	}, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "server authentication"
	}
	return "client authentication"
}

// CheckHost reports an error if the node's certificate does not cover
// host, an address peers or clients dial it at: peers verify the host
// they dial against the certificate's SANs. Unspecified addresses (such
// as 0.0.0.0), which nobody dials, pass. c must come from NewTLSConfigs.
func (c *TLSConfigs) CheckHost(host string) error {
	if c.leaf == nil {
		return errors.New("cluster: TLS configurations without a certificate")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil
	}
	return c.leaf.VerifyHostname(host)
}
