package cluster

import "time"

// RPCClockWindow is how far an internal RPC credential's time may be from
// the receiver's clock.
const RPCClockWindow = rpcClockWindow

// SkewRPCClock sets the clock n checks internal RPC credentials against d
// ahead of the real one (behind if negative); 0 puts it back.
func SkewRPCClock(n *Node, d time.Duration) { n.auth.skew.Store(int64(d)) }

// WatchSource says where a stream from Node.Watch reads: "" for its own
// node's replica, else the peer it reads from.
func WatchSource(s Stream) string {
	w := s.(*watchStream)
	w.mu.Lock()
	defer w.mu.Unlock()
	if rw, ok := w.src.(*remoteWatch); ok {
		return "peer " + rw.sourceOf()
	}
	return ""
}

// Upstreams is the number of partitions n reads events of from peers: its
// WatchPartition streams.
func Upstreams(n *Node) int {
	streams, _ := n.ups.stats()
	return streams
}

// SetRemoteBuffer sets how many events a watch n reads from a peer holds
// for a reader that does not read.
func SetRemoteBuffer(n *Node, events int) { n.ups.buffer.Store(int64(events)) }

// RemoteOverflows is how many times a reader of a watch from a peer fell
// the buffer behind, and the watch started again from its cursor.
func RemoteOverflows(n *Node) int64 { return n.ups.overflows.Load() }
