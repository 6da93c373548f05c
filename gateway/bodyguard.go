package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// bodyGuard wraps a request body so that the client's mistakes reach it
// as its own. connect-go reads envelopes as a client reads a server's:
// one that ends early or carries flags a client may not send is internal
// (the server's fault, from the client's side), and a body that stops
// arriving is unknown. bodyGuard follows the envelopes as they pass and
// returns a *connect.Error from Read instead, which connect-go passes on
// as is: invalid_argument for a body cut short inside an envelope, for
// flags other than compressed, and for the compressed flag without an
// encoding; deadline_exceeded for a body slower than the body timeout.
type bodyGuard struct {
	r          io.ReadCloser
	timeout    time.Duration
	enveloped  bool // gRPC, gRPC-Web and Connect streaming bodies
	compressed bool // the request names a message encoding
	// renew, for a long-lived request stream, moves the read deadline on
	// after each whole message: timeout bounds the time between messages,
	// not the body.
	renew func()

	prefix [5]byte
	have   int    // bytes of the current envelope prefix read
	left   uint64 // bytes of the current envelope's message still due
	err    error  // a bad envelope, returned from then on
}

// newBodyGuard wraps the body of request r.
func newBodyGuard(body io.ReadCloser, r *http.Request, timeout time.Duration) *bodyGuard {
	ct := r.Header.Get("Content-Type")
	enc := r.Header.Get("Grpc-Encoding") + r.Header.Get("Connect-Content-Encoding")
	return &bodyGuard{r: body, timeout: timeout,
		enveloped:  strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+"),
		compressed: enc != "" && enc != "identity"}
}

func (g *bodyGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if g.enveloped {
		n = g.track(p[:n])
	}
	switch {
	case g.err != nil:
		return n, g.err
	case err == io.EOF && g.have > 0:
		return n, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
			"the request body ends %d bytes into a 5-byte envelope prefix", g.have))
	case err == io.EOF && g.left > 0:
		return n, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
			"the request body ends %d bytes short of the message its envelope announced", g.left))
	case errors.Is(err, os.ErrDeadlineExceeded) && g.renew != nil:
		return n, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
			"the stream sent no whole message for %v; open a new one when there is more to send", g.timeout))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
			"the request body did not arrive within %v", g.timeout))
	}
	return n, err
}

// track follows the envelopes in b, the next bytes of the body, and
// returns how many of them to deliver: all of them, or on a bad prefix
// (g.err set) those before its last byte, so that connect-go never holds
// the whole prefix and reads the error instead (io.ReadFull drops an
// error that comes with the last byte it wanted).
func (g *bodyGuard) track(b []byte) int {
	for i := 0; i < len(b); {
		if g.left > 0 {
			k := min(uint64(len(b)-i), g.left)
			g.left -= k
			i += int(k)
			if g.left == 0 && g.renew != nil {
				g.renew()
			}
			continue
		}
		k := copy(g.prefix[g.have:], b[i:])
		g.have += k
		i += k
		if g.have < len(g.prefix) {
			return len(b)
		}
		g.left, g.have = uint64(binary.BigEndian.Uint32(g.prefix[1:])), 0
		switch flags := g.prefix[0]; {
		case flags&^envelopeCompressed != 0:
			g.err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"envelope flags %#02x: a request message may set only the compressed flag, 0x01", flags))
			return i - 1
		case flags&envelopeCompressed != 0 && !g.compressed:
			g.err = connect.NewError(connect.CodeInvalidArgument, errors.New(
				"a compressed message (envelope flag 0x01), but the request names no encoding (Grpc-Encoding or Connect-Content-Encoding)"))
			return i - 1
		}
		if g.left == 0 && g.renew != nil {
			g.renew()
		}
	}
	return len(b)
}

// envelopeCompressed is the envelope flag of a compressed message.
const envelopeCompressed = 0x01

func (g *bodyGuard) Close() error { return g.r.Close() }
