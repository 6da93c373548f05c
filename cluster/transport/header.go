package transport

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Header constants. Every connection starts with
// [headerMagic][headerVersion][uint16 BE group length][group id].
const (
	headerMagic   byte = 'H'
	headerVersion byte = 1
	headerFixed        = 4

	// MaxGroupLen is the longest group id, in bytes, a header may carry.
	MaxGroupLen = 255
)

// validGroup reports whether group fits in a header.
func validGroup(group string) bool {
	return len(group) >= 1 && len(group) <= MaxGroupLen
}

// appendHeader appends the connection header for group to b. The group must
// satisfy validGroup.
func appendHeader(b []byte, group string) []byte {
	b = append(b, headerMagic, headerVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(group)))
	return append(b, group...)
}

// readHeader reads one connection header from r and returns its group. It
// reads exactly the header's bytes and nothing after them. Malformed
// headers give an error wrapping errBadHeader.
func readHeader(r io.Reader) (string, error) {
	var fixed [headerFixed]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return "", fmt.Errorf("read header: %w", err)
	}
	if fixed[0] != headerMagic {
		return "", fmt.Errorf("%w: magic %#x", errBadHeader, fixed[0])
	}
	if fixed[1] != headerVersion {
		return "", fmt.Errorf("%w: version %d", errBadHeader, fixed[1])
	}
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if n < 1 || n > MaxGroupLen {
		return "", fmt.Errorf("%w: group length %d", errBadHeader, n)
	}
	group := make([]byte, n)
	if _, err := io.ReadFull(r, group); err != nil {
		return "", fmt.Errorf("read header group: %w", err)
	}
	return string(group), nil
}
