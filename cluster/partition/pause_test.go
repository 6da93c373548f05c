package partition_test

import (
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/transport"
)

// pausable wraps a replica's real Raft transport so that a test can freeze
// the replica the way SIGSTOP freezes a process, as far as its peers and
// its own leadership can tell, while its Go code keeps running:
//
//   - RPCs arriving for the replica, on the consumer channel and on the
//     heartbeat fast path alike, wait until they are released;
//   - RPCs the replica sends wait too, except heartbeats, which are
//     answered at once with success in the replica's own term: a leader
//     whose clock stopped has not yet noticed that its followers moved on,
//     so it keeps its lease and goes on believing it leads.
//
// release lets one kind of traffic through again; resume lets everything
// through. Held RPCs are then delivered in the order they arrived, as a
// resumed process reads its sockets.
type pausable struct {
	inner    raft.Transport
	consumer chan raft.RPC
	done     chan struct{}

	mu         sync.Mutex // guards following
	paused     bool
	heartbeats chan struct{} // closed when incoming heartbeats may pass
	everything chan struct{} // closed when everything may pass
}

var (
	_ raft.Transport   = (*pausable)(nil)
	_ raft.WithClose   = (*pausable)(nil)
	_ raft.WithPreVote = (*pausable)(nil)
)

func newPausable(inner raft.Transport) *pausable {
	p := &pausable{inner: inner, consumer: make(chan raft.RPC), done: make(chan struct{}),
		heartbeats: closedChan(), everything: closedChan()}
	go p.pump() // ends at Close
	return p
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// pause freezes the replica's traffic.
func (p *pausable) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	p.heartbeats = make(chan struct{})
	p.everything = make(chan struct{})
}

// releaseHeartbeats lets incoming heartbeats through; everything else stays
// held.
func (p *pausable) releaseHeartbeats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.heartbeats)
}

// resume lets all traffic through again.
func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		return
	}
	p.paused = false
	select {
	case <-p.heartbeats:
	default:
		close(p.heartbeats)
	}
	close(p.everything)
}

func (p *pausable) gates() (heartbeats, everything chan struct{}, paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heartbeats, p.everything, p.paused
}

func (p *pausable) wait(gate chan struct{}) {
	select {
	case <-gate:
	case <-p.done:
	}
}

// waitAll blocks an outgoing or incoming RPC while paused.
func (p *pausable) waitAll() {
	_, everything, _ := p.gates()
	p.wait(everything)
}

// pump forwards the inner consumer's RPCs, holding them while paused;
// incoming heartbeats that arrive this way pass once heartbeats are
// released. Each held RPC waits on its own, as each arrives on its own
// connection: NetworkTransport reads a connection's next RPC only once
// the previous one has been answered.
func (p *pausable) pump() {
	for {
		select {
		case <-p.done:
			return
		case rpc := <-p.inner.Consumer():
			heartbeats, everything, paused := p.gates()
			if !paused {
				p.forward(rpc)
				continue
			}
			gate := everything
			if isHeartbeat(rpc.Command) {
				gate = heartbeats
			}
			go func() { // ends once released, or at Close
				p.wait(gate)
				p.forward(rpc)
			}()
		}
	}
}

func (p *pausable) forward(rpc raft.RPC) {
	select {
	case p.consumer <- rpc:
	case <-p.done:
	}
}

// isHeartbeat is NetworkTransport's test for a heartbeat.
func isHeartbeat(cmd any) bool {
	req, ok := cmd.(*raft.AppendEntriesRequest)
	return ok && req.Term != 0 && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

func (p *pausable) Consumer() <-chan raft.RPC { return p.consumer }

func (p *pausable) LocalAddr() raft.ServerAddress { return p.inner.LocalAddr() }

func (p *pausable) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (p *pausable) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if _, _, paused := p.gates(); paused && isHeartbeat(args) {
		*resp = raft.AppendEntriesResponse{RPCHeader: args.RPCHeader, Term: args.Term, Success: true}
		return nil
	}
	p.waitAll()
	return p.inner.AppendEntries(id, target, args, resp)
}

func (p *pausable) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	p.waitAll()
	return p.inner.RequestVote(id, target, args, resp)
}

func (p *pausable) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	p.waitAll()
	return p.inner.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

func (p *pausable) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	p.waitAll()
	return p.inner.InstallSnapshot(id, target, args, resp, data)
}

func (p *pausable) EncodePeer(id raft.ServerID, addr raft.ServerAddress) []byte {
	return p.inner.EncodePeer(id, addr)
}

func (p *pausable) DecodePeer(b []byte) raft.ServerAddress { return p.inner.DecodePeer(b) }

// SetHeartbeatHandler hands raft's handler to the inner transport, held
// while paused. Whether the inner transport uses it is what the test is
// about.
func (p *pausable) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	p.inner.SetHeartbeatHandler(func(rpc raft.RPC) {
		heartbeats, _, _ := p.gates()
		p.wait(heartbeats)
		cb(rpc)
	})
}

// Stopping passes the notice on to the inner transport.
func (p *pausable) Stopping() { transport.Stopping(p.inner) }

// GateHeartbeats passes the gate on to the inner transport.
func (p *pausable) GateHeartbeats(allow func(term uint64) bool) {
	if g, ok := p.inner.(transport.HeartbeatGate); ok {
		g.GateHeartbeats(allow)
	}
}

func (p *pausable) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	p.waitAll()
	return p.inner.TimeoutNow(id, target, args, resp)
}

// Close releases everything held and closes the inner transport.
func (p *pausable) Close() error {
	p.mu.Lock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.mu.Unlock()
	return p.inner.(raft.WithClose).Close()
}
