package mirror

import (
	"encoding/binary"
	"net/netip"

	"github.com/vpcd/vpcd/encap"
)

// Sizes of the headers the daemon puts around a copy.
const (
	ethLen = 14
	ipLen  = 20
	udpLen = 8
	// HeaderLen is everything before the mirrored frame.
	HeaderLen = ethLen + ipLen + udpLen + encap.HeaderLen
)

// injectMAC is the source MAC that tells the mirror_inject program which
// session a copy belongs to: 02:6d and the session index (bpf/lib/common.h).
func injectMAC(b []byte, session uint32) {
	b[0], b[1] = 0x02, 0x6d
	binary.BigEndian.PutUint32(b[2:6], session)
}

// Encap writes into buf (grown as needed) the frame the daemon injects for
// one copy: Ethernet (to the VPC router, from the session's inject MAC),
// IPv4 from the source ENI to the target ENI, UDP to port 4789 with no
// checksum (optional for IPv4, and the VPC authenticates), VXLAN with vni,
// then the copied frame. id numbers the IPv4 packets; sport spreads
// sessions over source ports. The only error is a VNI beyond 24 bits.
func Encap(buf []byte, session, vni uint32, src, dst netip.Addr, id, sport uint16, frame []byte) ([]byte, error) {
	n := HeaderLen + len(frame)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	b := buf[:n]
	// Ethernet: the destination is ignored (the program routes by IP).
	copy(b[0:6], []byte{0x02, 0x76, 0x70, 0x63, 0x00, 0x01})
	injectMAC(b[6:12], session)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)

	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45
	ip[1] = 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen+udpLen+encap.HeaderLen+len(frame)))
	binary.BigEndian.PutUint16(ip[4:6], id)
	binary.BigEndian.PutUint16(ip[6:8], 0)
	ip[8] = 64 // TTL
	ip[9] = 17 // UDP
	ip[10], ip[11] = 0, 0
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], ipChecksum(ip))

	udp := b[ethLen+ipLen : ethLen+ipLen+udpLen]
	binary.BigEndian.PutUint16(udp[0:2], sport)
	binary.BigEndian.PutUint16(udp[2:4], encap.VXLANPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen+encap.HeaderLen+len(frame)))
	udp[6], udp[7] = 0, 0

	if err := encap.PutHeader(b[ethLen+ipLen+udpLen:HeaderLen], vni); err != nil {
		return buf, err
	}
	copy(b[HeaderLen:], frame)
	return b, nil
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// SourcePort is the UDP source port of a session's copies: one per
// session, in the dynamic range, so that a target tells sessions apart as
// it would on AWS and a capture groups them.
func SourcePort(session uint32) uint16 { return uint16(49152 + session*2654435761%16384) }
