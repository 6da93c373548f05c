//go:build unix

package gateway_test

import "syscall"

// wsSetRcvBuf sets a socket's receive buffer size.
func wsSetRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
