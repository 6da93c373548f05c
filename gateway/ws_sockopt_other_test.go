//go:build !unix

package gateway_test

// wsSetRcvBuf leaves the receive buffer alone where there are no Unix
// socket options; tests that fill socket buffers then just take longer to.
func wsSetRcvBuf(uintptr, int) error { return nil }
