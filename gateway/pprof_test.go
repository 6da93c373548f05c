package gateway_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/gateway"
)

// TestPprof: with Pprof on, /debug/pprof/ answers 401 without a token, 403
// with a user's and serves the index and a real CPU profile (gzipped
// protobuf) with an admin's; with it off, the path does not exist, and
// with authentication off everyone may profile (as the admin API).
func TestPprof(t *testing.T) {
	get := func(t *testing.T, url, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: read body: %v", url, err)
		}
		return resp.StatusCode, body
	}
	n := startAuthNode(t, gateway.Config{Pprof: true})
	index := n.URL + "/debug/pprof/"
	for _, tc := range []struct {
		name, token string
		code        int
		body        string
	}{
		{"no token", "", http.StatusUnauthorized, "admin token"},
		{"user token", n.mint(t, "alice", false, time.Hour), http.StatusForbidden, "needs an admin token"},
		{"admin token", n.mint(t, "root", true, time.Hour), http.StatusOK, "goroutine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, index, tc.token)
			if code != tc.code || !strings.Contains(string(body), tc.body) {
				t.Fatalf("GET /debug/pprof/: got %d %.200q, want %d containing %q", code, body, tc.code, tc.body)
			}
		})
	}
	code, body := get(t, n.URL+"/debug/pprof/profile?seconds=1", n.mint(t, "root", true, time.Hour))
	if code != http.StatusOK || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Fatalf("GET /debug/pprof/profile: got %d, %d bytes starting %x, want 200 and a gzipped profile", code, len(body), body[:min(len(body), 4)])
	}

	off := startNode(t, nodeOptions{})
	if code, _ := get(t, off.URL+"/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("Pprof off: GET /debug/pprof/ got %d, want 404", code)
	}
	open := startNode(t, nodeOptions{gateway: gateway.Config{Pprof: true}})
	if code, body := get(t, open.URL+"/debug/pprof/", ""); code != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Errorf("authentication off: GET /debug/pprof/ got %d %.100q, want 200 with the index", code, body)
	}
}
