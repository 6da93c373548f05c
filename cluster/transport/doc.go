// Package transport carries many hashicorp/raft groups over one TCP port per
// node.
//
// A Mux owns the node's listener. Every connection opens with a header that
// names the Raft group it belongs to:
//
//	['H'][version 1][group length, uint16 big-endian][group id, 1..255 bytes]
//
// The Mux reads the header (and runs the optional Config.Handshake hook)
// under Config.HandshakeTimeout, then hands the connection to the Layer
// registered for that group. A Layer is a raft.StreamLayer: Dial writes the
// header for its group, Accept returns the connections routed to it.
// Connections for unknown groups, with bad headers, or that stay silent are
// closed without disturbing anyone else.
//
// Concurrency: Mux and Layer methods are safe for concurrent use. The Mux
// owns one accept-loop goroutine and one goroutine per connection still in
// its handshake; Close stops and waits for all of them. A connection
// returned by Layer.Accept or Layer.Dial belongs to the caller.
//
// Errors: Mux.Layer and Mux.NewTransport return ErrGroupExists, ErrBadGroup
// or ErrClosed; Layer.Accept returns ErrLayerClosed or ErrClosed once it
// can never return another connection. See errors.go.
package transport
