package cluster

import "time"

// RPCClockWindow is how far an internal RPC credential's time may be from
// the receiver's clock.
const RPCClockWindow = rpcClockWindow

// SkewRPCClock sets the clock n checks internal RPC credentials against d
// ahead of the real one (behind if negative); 0 puts it back.
func SkewRPCClock(n *Node, d time.Duration) { n.auth.skew.Store(int64(d)) }
