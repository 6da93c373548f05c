package gateway_test

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// rawWS is a WebSocket connection made by hand, so that a test can send
// what no client library would: frames with reserved bits, lengths that
// lie, invalid UTF-8, frames cut short.
type rawWS struct {
	net.Conn
	r *bufio.Reader
}

// WebSocket opcodes and header bits (RFC 6455 5.2).
const (
	wsFin      = 0x80
	wsRSV1     = 0x40
	wsOpText   = 0x1
	wsOpBinary = 0x2
	wsOpClose  = 0x8
	wsOpPing   = 0x9
	wsOpPong   = 0xa
)

// dialRawWS upgrades a TCP connection to n's /ws with header added to the
// request. It returns the connection after a 101, or the response that
// refused it (and a nil connection).
func dialRawWS(t *testing.T, n *node, header http.Header) (*rawWS, *http.Response) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.Addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", n.Addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(wsWait)); err != nil {
		t.Fatal(err)
	}
	req := upgradeRequest(t, n, header)
	if err := req.Write(conn); err != nil {
		t.Fatalf("write the upgrade request: %v", err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		t.Fatalf("read the upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, resp
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return &rawWS{Conn: conn, r: r}, resp
}

// writeFrame sends one masked client frame: head is the first byte (FIN,
// reserved bits, opcode). The header announces claim payload bytes (or
// len(payload) if claim < 0) and payload follows, so a frame can be cut
// short.
func (c *rawWS) writeFrame(head byte, payload []byte, claim int) error {
	if claim < 0 {
		claim = len(payload)
	}
	b := []byte{head, 0}
	switch {
	case claim < 126:
		b[1] = byte(claim)
	case claim <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(claim))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(claim))
	}
	b[1] |= 0x80 // masked, as every client frame must be
	var mask [4]byte
	_, _ = rand.Read(mask[:]) // never fails
	b = append(b, mask[:]...)
	for i, p := range payload {
		b = append(b, p^mask[i%4])
	}
	_, err := c.Write(b)
	return err
}

// readFrame reads one server frame (unmasked) within timeout.
func (c *rawWS) readFrame(timeout time.Duration) (op byte, payload []byte, err error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return 0, nil, err
	}
	var h [2]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.r, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.r, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if h[1]&0x80 != 0 || n > 16<<20 {
		return 0, nil, fmt.Errorf("bad server frame header %x (length %d)", h, n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// errNoCloseFrame is closeCode's error for a connection that ended
// without a close frame.
var errNoCloseFrame = errors.New("connection ended without a close frame")

// closeCode reads frames until the server's close frame and returns its
// status code; it fails if none comes within timeout.
func (c *rawWS) closeCode(timeout time.Duration) (uint16, error) {
	deadline := time.Now().Add(timeout)
	for {
		op, p, err := c.readFrame(time.Until(deadline))
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return 0, errNoCloseFrame
		case err != nil:
			return 0, err
		case op == wsOpClose && len(p) >= 2:
			return binary.BigEndian.Uint16(p), nil
		case op == wsOpClose:
			return 0, fmt.Errorf("close frame without a status code")
		}
	}
}

// nextData returns the payload of the next text or binary frame, skipping
// control frames.
func (c *rawWS) nextData(timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		op, p, err := c.readFrame(time.Until(deadline))
		switch {
		case err != nil:
			return nil, err
		case op == wsOpClose:
			return nil, fmt.Errorf("closed (%x) while waiting for a data frame", p)
		case op == wsOpText || op == wsOpBinary:
			return p, nil
		}
	}
}
