// Package console is the web console every node serves at "/": static
// files embedded in the binary (no build step, nothing fetched from
// elsewhere) that talk to the node's Connect API and WebSocket like any
// other client, with the caller's token, so they can show no more than
// that token may read.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is where the console's assets are served; its page is at "/".
const Prefix = "/console/"

// policy lets the page load only its own assets and talk only to its own
// node (Connect calls and the WebSocket), and keeps it out of frames.
const policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console's page at "/" and its assets under Prefix.
// Everything is public: the files hold no data, and every call the page
// makes carries the token the user gave it.
func Handler() http.Handler {
	files := load()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "index.html"
		if r.URL.Path != "/" {
			name = strings.TrimPrefix(r.URL.Path, Prefix)
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", policy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache") // revalidate: a new binary brings new files
		h.Set("ETag", f.etag)              // embedded files have no modification time
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	})
}

type file struct {
	body []byte
	etag string
}

// load reads every embedded file, naming each with a hash of its content.
func load() map[string]file {
	files := make(map[string]file)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		files[strings.TrimPrefix(p, "static/")] = file{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return files
}
