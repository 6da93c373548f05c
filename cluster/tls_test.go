package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
	"github.com/heraldhq/herald/api/gen/herald/cluster/v1/clusterv1connect"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/cluster/transport"
)

func TestTLSCluster(t *testing.T) {
	t.Parallel()
	ca, otherCA := clustertest.NewCA(t, "herald test CA"), clustertest.NewCA(t, "other CA")
	secret := newSecret(t)
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 4, Secret: secret,
		TLS: ca.Configs(t, "127.0.0.1")})
	t.Logf("settled %v after ready", c.WaitSettled(30*time.Second))

	t.Run("writes and reads through every node", func(t *testing.T) {
		postAndReadEverywhere(t, c, "tls-%d", 8)
	})

	raft := c.Member(0).Raft
	t.Run("raft port closes plaintext connections", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", raft, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(groupHeader("meta")); err != nil {
			t.Fatalf("write header: %v", err)
		}
		got, err := io.ReadAll(conn)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			t.Fatalf("plaintext header to %s: connection still open after 5 s, want it closed", raft)
		}
		if len(got) >= 32 {
			t.Errorf("plaintext header to %s: got %d bytes back, want no challenge", raft, len(got))
		}
	})

	t.Run("raft port needs a node certificate", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			cert    *tls.Certificate
			refused bool
		}{
			{"no client certificate", nil, true},
			{"another CA's certificate", new(otherCA.Issue(t, "127.0.0.1")), true},
			{"a node certificate", new(ca.Issue(t, "127.0.0.1")), false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := readChallenge(raft, clientTLS(ca, tc.cert))
				switch {
				case tc.refused && err == nil:
					t.Errorf("raft handshake with %s: got the challenge, want the connection refused", tc.name)
				case tc.refused:
					if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
						t.Errorf("raft handshake with %s: got %v, want the connection closed", tc.name, err)
					}
					t.Logf("%s: %v", tc.name, err)
				case err != nil:
					t.Errorf("raft handshake with %s: got %v, want the challenge", tc.name, err)
				}
			})
		}
	})

	t.Run("internal RPC needs TLS and a node certificate", func(t *testing.T) {
		addr := c.Member(0).HTTP
		ctx := context.Background()
		hello := func(scheme string, tc *tls.Config) error {
			tr := &http.Transport{TLSClientConfig: tc, Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP1(true)
			tr.Protocols.SetHTTP2(true)
			defer tr.CloseIdleConnections()
			cl := clusterv1connect.NewClusterServiceClient(&http.Client{Transport: tr}, scheme+addr,
				connect.WithInterceptors(signedBy(t, secret, c.Member(0).ID)))
			_, err := cl.Hello(ctx, &clusterv1.HelloRequest{})
			return err
		}
		if err := hello("http://", nil); err == nil {
			t.Errorf("Hello over plain http to %s: got success, want an error", addr)
		} else {
			t.Logf("plain http: %v", err)
		}
		if err := hello("https://", clientTLS(ca, nil)); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("Hello over https without a client certificate: got %v, want unauthenticated", err)
		}
		if err := hello("https://", clientTLS(ca, new(otherCA.Issue(t, "127.0.0.1")))); err == nil {
			t.Errorf("Hello over https with another CA's certificate: got success, want an error")
		} else {
			t.Logf("another CA's certificate: %v", err)
		}
		if err := hello("https://", clientTLS(ca, new(ca.Issue(t, "127.0.0.1")))); err != nil {
			t.Errorf("Hello over https with a node certificate: got %v, want success", err)
		}
	})
}

// clientTLS is a client configuration that trusts ca and presents cert,
// if not nil, whatever CAs the server asks for.
func clientTLS(ca *clustertest.CA, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}

// groupHeader is the Raft transport's stream header for group.
func groupHeader(group string) []byte {
	return append([]byte{'H', 1, 0, byte(len(group))}, group...)
}

// readChallenge opens a TLS connection to a Raft port, sends the header
// of the metadata group and reads the node's challenge.
func readChallenge(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write(groupHeader("meta")); err != nil {
		return err
	}
	_, err = io.ReadFull(conn, make([]byte, 32))
	return err
}

// TestTLSTransportVerifiesPeers checks the dialing side: a Raft stream
// opens only to a node whose certificate comes from the CA and names the
// host dialed.
func TestTLSTransportVerifiesPeers(t *testing.T) {
	t.Parallel()
	ca, otherCA := clustertest.NewCA(t, "herald test CA"), clustertest.NewCA(t, "other CA")
	dialer := ca.Configs(t, "127.0.0.1")
	for _, tc := range []struct {
		name   string
		server *cluster.TLSConfigs
		want   string // in the dial error; "" = success
	}{
		{"node certificate", ca.Configs(t, "127.0.0.1"), ""},
		{"another CA's certificate", otherCA.Configs(t, "127.0.0.1"), "unknown authority"},
		{"certificate for another host", ca.Configs(t, "10.9.9.9", "node.example"), "not 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := newTLSMux(t, tc.server)
			if _, err := server.Layer("g"); err != nil {
				t.Fatal(err)
			}
			client := newTLSMux(t, dialer)
			l, err := client.Layer("g")
			if err != nil {
				t.Fatal(err)
			}
			conn, err := l.Dial(raft.ServerAddress(server.Addr().String()), 5*time.Second)
			if conn != nil {
				conn.Close()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("dial %s with a %s: got %v, want success", server.Addr(), tc.name, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("dial %s with a %s: got %v, want an error with %q", server.Addr(), tc.name, err, tc.want)
			}
		})
	}
}

// newTLSMux starts a transport Mux with TLS on 127.0.0.1, as a Node does.
func newTLSMux(t *testing.T, c *cluster.TLSConfigs) *transport.Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := transport.New(transport.Config{Listener: tls.NewListener(ln, c.Raft), DialTLS: c.Peer})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestTLSFilesLoad(t *testing.T) {
	t.Parallel()
	ca, otherCA := clustertest.NewCA(t, "herald test CA"), clustertest.NewCA(t, "other CA")
	dir := t.TempDir()
	good := ca.WriteFiles(t, dir, "127.0.0.1", "node1.example")
	if _, err := good.Load(); err != nil {
		t.Fatalf("Load(%+v): %v", good, err)
	}
	otherDir := t.TempDir()
	foreign := otherCA.WriteFiles(t, otherDir, "127.0.0.1")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name  string
		files cluster.TLSFiles
		want  string // the file the error must name
	}{
		{"missing certificate", cluster.TLSFiles{Cert: missing, Key: good.Key, CA: good.CA}, missing},
		{"key of another certificate", cluster.TLSFiles{Cert: good.Cert, Key: foreign.Key, CA: good.CA}, foreign.Key},
		{"missing CA", cluster.TLSFiles{Cert: good.Cert, Key: good.Key, CA: missing}, missing},
		{"CA without PEM", cluster.TLSFiles{Cert: good.Cert, Key: good.Key, CA: garbage}, garbage},
		{"certificate from another CA", cluster.TLSFiles{Cert: foreign.Cert, Key: foreign.Key, CA: good.CA}, foreign.Cert},
	} {
		_, err := tc.files.Load()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load with %s: got %v, want an error naming %s", tc.name, err, tc.want)
		}
	}

	cfg, err := good.Load()
	if err != nil {
		t.Fatal(err)
	}
	for host, ok := range map[string]bool{"127.0.0.1": true, "node1.example": true, "0.0.0.0": true,
		"10.0.0.1": false, "node2.example": false} {
		if err := cfg.CheckHost(host); (err == nil) != ok {
			t.Errorf("CheckHost(%q): got %v, want ok=%v", host, err, ok)
		}
	}
	_, err = cluster.TLSFiles{Cert: foreign.Cert, Key: foreign.Key, CA: good.CA}.Load()
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); !ok {
		t.Errorf("Load of another CA's certificate: got %v, want an x509.UnknownAuthorityError", err)
	}
}
