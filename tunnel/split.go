package tunnel

import (
	"encoding/binary"
	"fmt"

	"github.com/vpcd/vpcd/encap"
)

const (
	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
)

// How splitVXLAN fills the inner transport checksums.
type csumMode int

const (
	// csumPartial leaves TCP's partial (the pseudo-header sum, see
	// below) and sums UDP.
	csumPartial csumMode = iota
	// csumFull sums both.
	csumFull
	// csumCopies leaves UDP's empty: packets of mirror copies, whose
	// checksums the receiving vpcd's kernel fills in as it cuts them
	// into the copies (writeCopies).
	csumCopies
)

// innerGSOType returns a tunnel GSO frame's type with the inner type that
// its inner packet's protocol says. The kernel reports the first inner
// type bit it finds, TCP before UDP, and a batch of mirror copies can
// carry both: a copy keeps the type bits of the TCP packet it was cloned
// from (TCP sets them on every packet, single segments too), and GRO adds
// UDP's when it merges the copies. Taken for TCP, such a batch was lost.
func innerGSOType(pkt []byte, t uint8) uint8 {
	if t&vnetGSOTunnelV4 == 0 || len(pkt) < 20 || pkt[0]>>4 != 4 {
		return t
	}
	iIP := int(pkt[0]&0x0f)*4 + encap.UDPLen + encap.HeaderLen + encap.EthLen
	if len(pkt) < iIP+20 {
		return t
	}
	keep := t & (vnetGSOTunnelAny | vnetGSOECN)
	switch pkt[iIP+9] {
	case encap.ProtoTCP:
		return keep | vnetGSOTCPv4
	case encap.ProtoUDP:
		return keep | vnetGSOUDPL4
	}
	return t
}

// splitVXLAN splits a VXLAN GSO super-packet (outer IPv4 + UDP + VXLAN +
// inner Ethernet + inner IPv4 + TCP or UDP + gso_size-sized payload
// segments) into one whole VXLAN packet per segment, as the kernel's
// software segmentation would: fresh lengths, IP IDs and checksums, TCP
// sequence numbers and flags per segment; the inner transport checksums
// as mode says.
func splitVXLAN(pkt []byte, h vnetHdr, bufs [][]byte, sizes []int, offset int, mode csumMode) (int, error) {
	if h.gsoType&vnetGSOTunnelV4 == 0 {
		return 0, fmt.Errorf("%w: GSO type %#x is not IPv4 UDP tunnel", errMalformed, h.gsoType)
	}
	inner := h.gsoType &^ (vnetGSOTunnelAny | vnetGSOECN)
	if inner != vnetGSOTCPv4 && inner != vnetGSOUDPL4 {
		return 0, fmt.Errorf("%w: inner GSO type %#x", errMalformed, inner)
	}
	// Locate the headers from the packet itself.
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, errMalformed
	}
	oIHL := int(pkt[0]&0x0f) * 4
	oUDP := oIHL
	iEth := oUDP + encap.UDPLen + encap.HeaderLen
	iIP := iEth + encap.EthLen
	if len(pkt) < iIP+20 || pkt[9] != encap.ProtoUDP || binary.BigEndian.Uint16(pkt[iEth+12:]) != encap.EtherTypeIPv4 || pkt[iIP]>>4 != 4 {
		return 0, errMalformed
	}
	iIHL := int(pkt[iIP]&0x0f) * 4
	if oIHL < 20 || iIHL < 20 {
		return 0, errMalformed
	}
	iL4 := iIP + iIHL
	var l4Len int
	if inner == vnetGSOTCPv4 {
		if len(pkt) < iL4+20 {
			return 0, errMalformed
		}
		l4Len = int(pkt[iL4+12]>>4) * 4
		if l4Len < 20 {
			return 0, errMalformed
		}
	} else {
		l4Len = 8
	}
	hdrLen := iL4 + l4Len
	mss := int(h.gsoSize)
	if mss == 0 || hdrLen > len(pkt) {
		return 0, errMalformed
	}
	payload := pkt[hdrLen:]
	segs := (len(payload) + mss - 1) / mss
	if segs > len(bufs) {
		return 0, fmt.Errorf("%w: %d segments for %d buffers", errMalformed, segs, len(bufs))
	}
	outerCsum := h.flags&vnetFlagUDPTunnelCsum != 0
	oID := binary.BigEndian.Uint16(pkt[4:])
	iID := binary.BigEndian.Uint16(pkt[iIP+4:])
	var seq uint32
	if inner == vnetGSOTCPv4 {
		seq = binary.BigEndian.Uint32(pkt[iL4+4:])
	}
	oBase := encap.IPv4BaseSum(pkt[:oIHL])
	iBase := encap.IPv4BaseSum(pkt[iIP:iL4])
	pBase := encap.PseudoBase(pkt[iIP+12:iIP+16], pkt[iIP+16:iIP+20], pkt[iIP+9])
	for i := 0; i < segs; i++ {
		chunk := payload[i*mss : min((i+1)*mss, len(payload))]
		total := hdrLen + len(chunk)
		out := bufs[i][offset:]
		if len(out) < total {
			return 0, errMalformed
		}
		out = out[:total]
		copy(out, pkt[:hdrLen])
		copy(out[hdrLen:], chunk)

		// Outer IPv4 and UDP.
		binary.BigEndian.PutUint16(out[2:], uint16(total))
		binary.BigEndian.PutUint16(out[4:], oID+uint16(i))
		binary.BigEndian.PutUint16(out[10:], encap.IPv4Checksum(oBase, uint16(total), oID+uint16(i)))
		binary.BigEndian.PutUint16(out[oUDP+4:], uint16(total-oUDP))
		out[oUDP+6], out[oUDP+7] = 0, 0

		// Inner IPv4.
		iTotal := total - iIP
		binary.BigEndian.PutUint16(out[iIP+2:], uint16(iTotal))
		binary.BigEndian.PutUint16(out[iIP+4:], iID+uint16(i))
		binary.BigEndian.PutUint16(out[iIP+10:], encap.IPv4Checksum(iBase, uint16(iTotal), iID+uint16(i)))

		// Inner transport header and checksum.
		var csumAt int
		proto := out[iIP+9]
		if inner == vnetGSOTCPv4 {
			binary.BigEndian.PutUint32(out[iL4+4:], seq+uint32(i*mss))
			flags := out[iL4+13]
			if i != segs-1 {
				flags &^= tcpFlagFIN | tcpFlagPSH
			}
			if i != 0 {
				flags &^= tcpFlagCWR
			}
			out[iL4+13] = flags
			csumAt = iL4 + 16
		} else {
			binary.BigEndian.PutUint16(out[iL4+4:], uint16(total-iL4))
			csumAt = iL4 + 6
		}
		out[csumAt], out[csumAt+1] = 0, 0
		if proto == encap.ProtoUDP && mode == csumCopies {
			// Left empty (no checksum, as IPv4 allows).
		} else if proto == encap.ProtoTCP && mode != csumFull {
			// TCP keeps the pseudo-header sum, as a CHECKSUM_PARTIAL
			// packet does: WireGuard authenticates every byte, and the
			// receiving vpcd hands every TCP packet to its kernel as
			// CHECKSUM_PARTIAL (Write), which completes the sum only if
			// the packet leaves a host again. Summing 64 KiB per
			// super-packet here would be wasted.
			binary.BigEndian.PutUint16(out[csumAt:], encap.PseudoPartial(pBase, total-iL4))
		} else {
			sum := encap.PseudoHeaderSum(out[iIP+12:iIP+16], out[iIP+16:iIP+20], proto, total-iL4)
			c := encap.Fold(encap.Sum(sum, out[iL4:]))
			if proto == encap.ProtoUDP && c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(out[csumAt:], c)
		}

		if outerCsum {
			osum := encap.PseudoHeaderSum(out[12:16], out[16:20], encap.ProtoUDP, total-oUDP)
			c := encap.Fold(encap.Sum(osum, out[oUDP:]))
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(out[oUDP+6:], c)
		}
		sizes[i] = total
	}
	return segs, nil
}
