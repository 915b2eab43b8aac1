// Package encap is the VXLAN wire format (RFC 7348) in Go, with the same
// constants as the eBPF programs (bpf/lib/common.h): used by tests, and by
// the mirror (issue #5) to wrap copies of packets.
package encap

import (
	"encoding/binary"
	"errors"
)

const (
	// VXLANPort is the IANA UDP port of VXLAN.
	VXLANPort = 4789
	// HeaderLen is the VXLAN header's length.
	HeaderLen = 8
	// flagVNI is the I flag: the VNI field is valid.
	flagVNI = 0x08
	// MaxVNI is the largest 24-bit VNI.
	MaxVNI = 1<<24 - 1
)

// ErrShort means the buffer is shorter than a VXLAN header.
var ErrShort = errors.New("vxlan: header truncated")

// ErrNoVNI means the I flag is not set.
var ErrNoVNI = errors.New("vxlan: I flag not set")

// PutHeader writes a VXLAN header with vni into b[:8].
func PutHeader(b []byte, vni uint32) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	if vni > MaxVNI {
		return errors.New("vxlan: VNI out of range")
	}
	binary.BigEndian.PutUint32(b[0:4], flagVNI<<24)
	binary.BigEndian.PutUint32(b[4:8], vni<<8)
	return nil
}

// ParseHeader returns the VNI of the VXLAN header at the start of b.
func ParseHeader(b []byte) (uint32, error) {
	if len(b) < HeaderLen {
		return 0, ErrShort
	}
	if b[0]&flagVNI == 0 {
		return 0, ErrNoVNI
	}
	return binary.BigEndian.Uint32(b[4:8]) >> 8, nil
}
