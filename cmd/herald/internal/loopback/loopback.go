// Package loopback holds what the tools that start Herald processes on
// this machine (herald bench, herald torture) share: free ports and the
// readiness check.
package loopback

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FreePorts returns n distinct loopback addresses free at the moment, for
// processes that are told their ports before they start.
//
// The ports come from below the kernel's ephemeral range: a port the
// kernel hands out for ":0" or for an outgoing connection could be taken
// by this process's own proxies or by any connection on the machine
// between the check here and the moment the process binds it, and the
// process would then fail to start.
func FreePorts(n int) ([]string, error) {
	lo, hi := reservedRange()
	if hi-lo < 4*n {
		return nil, fmt.Errorf("find %d free loopback ports: only %d-%d lie below the ephemeral range", n, lo, hi)
	}
	var out []string
	seen := map[int]bool{}
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("find %d free loopback ports in %d-%d: only %d of them free", n, lo, hi, len(out))
		}
		port := lo + rand.IntN(hi-lo)
		if seen[port] {
			continue
		}
		seen[port] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		l.Close()
		out = append(out, addr)
	}
	return out, nil
}

// reservedRange is the range of ports [lo, hi) FreePorts picks from: above
// the well-known ones and below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range; 32768 when it cannot be read).
func reservedRange() (lo, hi int) {
	lo, hi = 10000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		if first, err := strconv.Atoi(f[0]); err == nil && first > 2048 {
			hi = first
		}
	}
	if hi < lo+1024 {
		lo = 1024
	}
	return lo, hi
}

// Ready reports whether the node at addr answers /readyz with 200, within
// a second.
func Ready(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Hold is a loopback port kept from other binds while its server is down:
// a TCP socket bound to it, without SO_REUSEADDR and not listening, so
// that nobody else can bind the port (a listener sets SO_REUSEADDR, which
// still conflicts with a bound socket that lacks it) and connections to it
// are refused, as to a stopped server's. Release it right before the
// server binds the port again.
type Hold struct{ fd int }

// HoldPort binds a socket to addr (127.0.0.1:PORT) and keeps it.
func HoldPort(addr string) (*Hold, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portText)
	ip := net.ParseIP(host).To4()
	if err != nil || ip == nil {
		return nil, fmt.Errorf("hold %s: not an IPv4 address and port", addr)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hold %s: %w", addr, err)
	}
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	if err := syscall.Bind(fd, sa); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("hold %s: %w", addr, err)
	}
	return &Hold{fd: fd}, nil
}

// Release frees the port. It is safe on a nil Hold.
func (h *Hold) Release() {
	if h != nil && h.fd >= 0 {
		_ = syscall.Close(h.fd)
		h.fd = -1
	}
}
