package encap

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds b to a one's complement sum kept in 64 bits, unfolded. It
// reads 8 bytes at a time in native byte order; the one's complement sum
// is byte-order independent up to a final swap, done in Fold.
func Sum(sum uint64, b []byte) uint64 {
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

// Fold folds a sum from Sum into the 16-bit checksum field value
// (complemented, big-endian order as a number).
func Fold(sum uint64) uint16 {
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

// Checksum returns the Internet checksum of b (RFC 1071).
func Checksum(b []byte) uint16 { return Fold(Sum(0, b)) }

// PseudoHeaderSum is the unfolded sum of the IPv4 TCP/UDP pseudo header.
func PseudoHeaderSum(src, dst []byte, proto uint8, length int) uint64 {
	var ph [12]byte
	copy(ph[0:4], src)
	copy(ph[4:8], dst)
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(length))
	return Sum(0, ph[:])
}

// IPv4BaseSum is the one's complement sum, in big-endian 16-bit words and
// unfolded, of an IPv4 header without its total length, ID and checksum:
// what the segments of one super-packet share. IPv4Checksum finishes it.
func IPv4BaseSum(h []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i == 2 || i == 4 || i == 10 {
			continue
		}
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	return s
}

// IPv4Checksum is the header checksum of a header whose other words sum
// to base, with total length totLen and identification id.
func IPv4Checksum(base uint32, totLen, id uint16) uint16 {
	s := base + uint32(totLen) + uint32(id)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// PseudoBase is the one's complement sum, in big-endian words, of the
// addresses and protocol of an IPv4 pseudo header; PseudoPartial adds a
// length and folds it into the value a CHECKSUM_PARTIAL field holds.
func PseudoBase(src, dst []byte, proto uint8) uint32 {
	return uint32(src[0])<<8 | uint32(src[1]) + (uint32(src[2])<<8 | uint32(src[3])) +
		(uint32(dst[0])<<8 | uint32(dst[1])) + (uint32(dst[2])<<8 | uint32(dst[3])) + uint32(proto)
}

// PseudoPartial is the value a CHECKSUM_PARTIAL packet's TCP or UDP
// checksum field holds: the folded, uncomplemented pseudo-header sum for a
// transport segment of length bytes whose addresses and protocol sum to
// base (PseudoBase). CompletePartial finishes it.
func PseudoPartial(base uint32, length int) uint16 {
	s := base + uint32(length)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return uint16(s)
}

// CompletePartial completes a CHECKSUM_PARTIAL packet as the kernel would:
// the 16-bit field at start+off holds the pseudo-header sum (PseudoPartial),
// and gets the checksum of everything from start on, seeded with it. It
// reports false, changing nothing, when the field is not inside pkt.
func CompletePartial(pkt []byte, start, off int) bool {
	at := start + off
	if start < 0 || off < 0 || start >= len(pkt) || at+2 > len(pkt) {
		return false
	}
	var seed [2]byte
	copy(seed[:], pkt[at:at+2])
	pkt[at], pkt[at+1] = 0, 0
	binary.BigEndian.PutUint16(pkt[at:], Fold(Sum(Sum(0, seed[:]), pkt[start:])))
	return true
}
