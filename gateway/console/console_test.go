package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldhq/herald/gateway/console"
)

func get(t *testing.T, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestHandler serves the page, its assets and nothing else, with headers
// that keep the page to its own node and revalidate after an upgrade.
func TestHandler(t *testing.T) {
	srv := httptest.NewServer(console.Handler())
	defer srv.Close()

	for _, c := range []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/console/console.js" defer></script>`},
		{"/console/console.js", "text/javascript; charset=utf-8", `const TOKEN_KEY = "herald.token";`},
		{"/console/console.css", "text/css; charset=utf-8", "#messages"},
	} {
		resp, body := get(t, srv.URL+c.path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", c.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.contentType)
		}
		if !strings.Contains(body, c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", c.path, csp, want)
			}
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", c.path, got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", c.path, got)
		}

		tag := resp.Header.Get("ETag")
		if tag == "" {
			t.Errorf("GET %s: no ETag", c.path)
			continue
		}
		again, body := get(t, srv.URL+c.path, http.Header{"If-None-Match": {tag}})
		if again.StatusCode != http.StatusNotModified || body != "" {
			t.Errorf("GET %s with If-None-Match %s: %d with %d bytes, want 304 and none", c.path, tag, again.StatusCode, len(body))
		}
	}

	for _, path := range []string{"/console/", "/console/index.html.bak", "/console/../console.go", "/index.html", "/console/nope.js"} {
		if resp, _ := get(t, srv.URL+path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestNoRemoteAssets keeps the console self-contained: nothing it loads
// comes from another origin (the policy would refuse it anyway).
func TestNoRemoteAssets(t *testing.T) {
	srv := httptest.NewServer(console.Handler())
	defer srv.Close()
	for _, path := range []string{"/", "/console/console.js", "/console/console.css"} {
		_, body := get(t, srv.URL+path, nil)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s: refers to %q; the console loads only its own files", path, bad)
			}
		}
	}
}
