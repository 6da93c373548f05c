package transport

import "errors"

var (
	// ErrClosed is returned by Mux.Layer, Mux.NewTransport, Layer.Accept and
	// Layer.Dial once the Mux has been closed.
	ErrClosed = errors.New("transport: mux closed")

	// ErrLayerClosed is returned by Layer.Accept and Layer.Dial once the
	// Layer has been closed while its Mux is still open.
	ErrLayerClosed = errors.New("transport: layer closed")

	// ErrGroupExists is returned by Mux.Layer and Mux.NewTransport when the
	// group already has an open Layer on the Mux.
	ErrGroupExists = errors.New("transport: group already registered")

	// ErrBadGroup is returned by Mux.Layer and Mux.NewTransport for a group
	// id that is empty or longer than MaxGroupLen bytes.
	ErrBadGroup = errors.New("transport: group id must be 1 to 255 bytes")

	// ErrInvalidConfig is wrapped by Config.Validate, and so by New, with
	// the name of the bad field.
	ErrInvalidConfig = errors.New("transport: invalid config")

	// ErrNotAdvertisable is returned by New when Config.Advertise is empty
	// and the listener's address (such as 0.0.0.0:7000) cannot be dialed
	// by peers.
	ErrNotAdvertisable = errors.New("transport: listener address is not advertisable; set Advertise")

	// errBadHeader is logged when a connection's header is malformed.
	errBadHeader = errors.New("transport: bad connection header")
)
