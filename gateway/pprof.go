package gateway

import (
	"net/http"
	"net/http/pprof"
)

// handlePprof serves Go's profiler (net/http/pprof) under /debug/pprof/,
// to admins only (with authentication off, to everyone, as the admin API):
// a profile shows what a node is busy with, and its command line and
// goroutine stacks are no business of users.
//
//	go tool pprof -http :0 'http://NODE/debug/pprof/profile?seconds=30'
func (s *Server) handlePprof(mux *http.ServeMux) {
	mux.Handle("GET /debug/pprof/", s.adminOnly(profiling, http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/cmdline", s.adminOnly(profiling, http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("GET /debug/pprof/profile", s.adminOnly(profiling, http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/symbol", s.adminOnly(profiling, http.HandlerFunc(pprof.Symbol)))
	mux.Handle("GET /debug/pprof/trace", s.adminOnly(profiling, http.HandlerFunc(pprof.Trace)))
}

// profiling is what the profiler's endpoints need an admin token for.
const profiling = "profiling a node"

// adminOnly serves h to a request with an admin's bearer token: 401
// without a valid token, 403 with a user's, saying that what needs one.
func (s *Server) adminOnly(what string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.authenticate(r.Header)
		switch {
		case err != nil:
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "unauthenticated: send an admin token as Authorization: Bearer TOKEN (mint one with \"herald token --user NAME --admin\")", http.StatusUnauthorized)
		case !id.Admin:
			http.Error(w, "permission denied: "+what+" needs an admin token", http.StatusForbidden)
		default:
			h.ServeHTTP(w, r)
		}
	})
}
