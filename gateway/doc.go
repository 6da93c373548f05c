// Package gateway is the edge and gateway roles of a node: the Connect
// services herald.v1.ChannelService and MessageService (Connect, gRPC and
// gRPC-Web, JSON or binary, HTTP/1.1 or h2c on one port), the WebSocket
// endpoint GET /ws (lxzan/gws), and /healthz and /readyz.
//
// Every request is validated before it reaches the cluster, and every
// error leaves through one mapping (connectError) to a Connect code, with
// the Herald-Outcome header on writes that failed in the cluster.
//
// Subscriptions, over WebSocket or the Subscribe stream, go through one
// hub: one upstream stream per watched channel, each event encoded once,
// each subscriber spliced from its own backlog onto the live stream at the
// exact seq where the backlog ends. A subscriber that cannot keep up gets
// resync_required SLOW_CONSUMER; none is ever silently skipped.
//
// Concurrency: Server is safe for concurrent use; it owns the hub's pump
// and catch-up goroutines, one read loop per WebSocket connection and one
// ping loop, and Close ends and waits for all of them.
package gateway
