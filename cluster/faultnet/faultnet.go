// Package faultnet puts TCP proxies on the links between nodes so that
// tests and the torture tool can break those links the ways networks
// break: cut a link one way or both, stall one direction of the bytes
// between two nodes, slow a link down, and heal it again. Nodes are told to
// dial their peers through the proxies (Herald's --peer-map), so every
// node-to-node connection, Raft and internal RPC alike, passes through one.
//
// A fault stalls bytes rather than dropping them: a stalled connection
// forwards nothing until the fault heals, as a TCP connection over a
// broken path does while it retransmits, and then carries on whole. The
// nodes' own timeouts decide when such a connection is given up.
//
// Net's methods are safe for concurrent use. Every proxy runs on loopback;
// Close stops them and their connections.
package faultnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Net is the set of proxies of one group of nodes.
type Net struct {
	mu      sync.Mutex // guards following
	links   []*link
	cut     map[pair]bool          // new and open connections that from dialed to to stall
	stalled map[pair]bool          // bytes from → to stall, on every connection between them
	delay   map[pair]time.Duration // added to every chunk of bytes from → to
	changed chan struct{}          // closed and replaced when any fault changes
	closed  bool
	wg      sync.WaitGroup
}

type pair struct{ from, to string }

// New returns a Net with no proxies and no faults.
func New() *Net {
	return &Net{cut: map[pair]bool{}, stalled: map[pair]bool{}, delay: map[pair]time.Duration{},
		changed: make(chan struct{})}
}

// link is one proxy: connections that node from opens to node to's target
// address.
type link struct {
	from, to, target string
	ln               net.Listener
}

// Proxy starts a proxy for the connections node from opens to node to at
// target (a host:port) and returns the address from should dial instead.
func (n *Net) Proxy(from, to, target string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = ln.Close()
		return "", errors.New("faultnet: closed")
	}
	l := &link{from: from, to: to, target: target, ln: ln}
	n.links = append(n.links, l)
	n.wg.Go(func() { n.accept(l) })
	n.mu.Unlock()
	return ln.Addr().String(), nil
}

// Cut stalls every connection node from opens to node to, open and new,
// in both directions: from cannot reach to, while connections that to
// opens to from still work.
func (n *Net) Cut(from, to string) { n.set(func() { n.cut[pair{from, to}] = true }) }

// Partition cuts a and b apart both ways.
func (n *Net) Partition(a, b string) {
	n.set(func() {
		n.cut[pair{a, b}] = true
		n.cut[pair{b, a}] = true
	})
}

// Stall stalls the bytes node from sends to node to on every connection
// between them, whoever opened it; bytes to → from still flow.
func (n *Net) Stall(from, to string) { n.set(func() { n.stalled[pair{from, to}] = true }) }

// Uncut undoes Cut(from, to); the link's other faults stay.
func (n *Net) Uncut(from, to string) { n.set(func() { delete(n.cut, pair{from, to}) }) }

// Unstall undoes Stall(from, to); the link's other faults stay.
func (n *Net) Unstall(from, to string) { n.set(func() { delete(n.stalled, pair{from, to}) }) }

// Delay adds d to every chunk of bytes node from sends to node to; 0
// removes the delay.
func (n *Net) Delay(from, to string, d time.Duration) {
	n.set(func() {
		if d > 0 {
			n.delay[pair{from, to}] = d
		} else {
			delete(n.delay, pair{from, to})
		}
	})
}

// Heal removes every fault; stalled connections carry on.
func (n *Net) Heal() {
	n.set(func() {
		clear(n.cut)
		clear(n.stalled)
		clear(n.delay)
	})
}

func (n *Net) set(change func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	change()
	close(n.changed)
	n.changed = make(chan struct{})
}

// Close stops every proxy and closes every connection through them.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for _, l := range n.links {
		_ = l.ln.Close() // ends accept, which closes its connections
	}
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

// accept runs one proxy until Close.
func (n *Net) accept(l *link) {
	var conns sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	defer func() {
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		conns.Wait()
	}()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		conns.Go(func() {
			n.serve(l, c)
			mu.Lock()
			delete(open, c)
			mu.Unlock()
		})
	}
}

// serve forwards one connection, dialing the target once the link is not
// cut.
func (n *Net) serve(l *link, c net.Conn) {
	defer c.Close()
	if !n.wait(func() bool { return !n.cut[pair{l.from, l.to}] }) {
		return
	}
	t, err := net.DialTimeout("tcp", l.target, 5*time.Second)
	if err != nil {
		return // the client sees the connection close, as if refused
	}
	defer t.Close()
	var wg sync.WaitGroup
	wg.Go(func() { n.pump(l, c, t, l.from, l.to) })
	wg.Go(func() { n.pump(l, t, c, l.to, l.from) })
	wg.Wait()
}

// pump copies the bytes src → dst that node from sends to node to, holding
// them while they stall. At src's end of stream it half-closes dst; on any
// other error it closes both connections, which ends the other pump too.
func (n *Net) pump(l *link, src, dst net.Conn, from, to string) {
	buf := make([]byte, 32<<10)
	flowing := func() bool {
		return !n.cut[pair{l.from, l.to}] && !n.stalled[pair{from, to}]
	}
	fail := func() {
		_ = src.Close()
		_ = dst.Close()
	}
	for {
		if !n.wait(flowing) {
			fail()
			return
		}
		k, err := src.Read(buf)
		if k > 0 {
			if !n.wait(flowing) {
				fail()
				return
			}
			n.mu.Lock()
			d := n.delay[pair{from, to}]
			n.mu.Unlock()
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				fail()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
				return
			}
		}
		if err != nil {
			fail()
			return
		}
	}
}

// wait blocks until ok (called with n.mu held) holds, and reports false if
// the Net closed first.
func (n *Net) wait(ok func() bool) bool {
	for {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return false
		}
		if ok() {
			n.mu.Unlock()
			return true
		}
		changed := n.changed
		n.mu.Unlock()
		<-changed
	}
}

// String describes the faults in force, for logs.
func (n *Net) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := ""
	for p := range n.cut {
		s += fmt.Sprintf(" cut %s→%s", p.from, p.to)
	}
	for p := range n.stalled {
		s += fmt.Sprintf(" stall %s→%s", p.from, p.to)
	}
	for p, d := range n.delay {
		s += fmt.Sprintf(" delay %s→%s %v", p.from, p.to, d)
	}
	if s == "" {
		return "no faults"
	}
	return s[1:]
}
