package tunnel

import (
	"encoding/binary"
	"math/bits"
)

// csumAdd adds b to a one's complement sum kept in 64 bits, unfolded. It
// reads 8 bytes at a time in native byte order; the one's complement sum
// is byte-order independent up to a final swap, done in csumFold.
func csumAdd(sum uint64, b []byte) uint64 {
	var carry uint64
	for len(b) >= 32 {
		sum, carry = bits.Add64(sum, binary.NativeEndian.Uint64(b[0:8]), carry)
		sum, carry = bits.Add64(sum, binary.NativeEndian.Uint64(b[8:16]), carry)
		sum, carry = bits.Add64(sum, binary.NativeEndian.Uint64(b[16:24]), carry)
		sum, carry = bits.Add64(sum, binary.NativeEndian.Uint64(b[24:32]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		sum, carry = bits.Add64(sum, binary.NativeEndian.Uint64(b), carry)
		b = b[8:]
	}
	sum, carry = bits.Add64(sum, carry, 0)
	if len(b) >= 4 {
		sum, carry = bits.Add64(sum, uint64(binary.NativeEndian.Uint32(b)), 0)
		sum += carry
		b = b[4:]
	}
	if len(b) >= 2 {
		sum, carry = bits.Add64(sum, uint64(binary.NativeEndian.Uint16(b)), 0)
		sum += carry
		b = b[2:]
	}
	if len(b) == 1 {
		var last [2]byte
		last[0] = b[0]
		sum, carry = bits.Add64(sum, uint64(binary.NativeEndian.Uint16(last[:])), 0)
		sum += carry
	}
	return sum
}

// csumFold folds a sum from csumAdd into the 16-bit checksum field value
// (complemented, big-endian order as a number).
func csumFold(sum uint64) uint16 {
	sum = (sum >> 32) + (sum & 0xffffffff)
	sum = (sum >> 32) + (sum & 0xffffffff)
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	s := uint16(sum)
	if binary.NativeEndian.Uint16([]byte{0, 1}) != 1 { // little endian host
		s = bits.ReverseBytes16(s)
	}
	return ^s
}

// checksum returns the Internet checksum of b (RFC 1071).
func checksum(b []byte) uint16 { return csumFold(csumAdd(0, b)) }

// pseudoHeaderSum is the unfolded sum of the IPv4 TCP/UDP pseudo header.
func pseudoHeaderSum(src, dst []byte, proto uint8, length int) uint64 {
	var ph [12]byte
	copy(ph[0:4], src)
	copy(ph[4:8], dst)
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(length))
	return csumAdd(0, ph[:])
}
