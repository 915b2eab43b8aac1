package mirror

import (
	"encoding/binary"
	"net/netip"

	"github.com/vpcd/vpcd/encap"
)

// HeaderLen is everything the daemon puts before a mirrored frame: an
// Ethernet header and the VXLAN outer headers.
const HeaderLen = encap.EthLen + encap.OuterLen

// injectMAC is the source MAC that tells the mirror_inject program which
// session a copy belongs to: 02:6d and the session index (bpf/lib/common.h).
func injectMAC(b []byte, session uint32) {
	b[0], b[1] = 0x02, 0x6d
	binary.BigEndian.PutUint32(b[2:6], session)
}

// Encap writes into buf (grown as needed) the frame the daemon injects for
// one copy: Ethernet (to the VPC router, from the session's inject MAC),
// then the VXLAN outer headers (encap.PutOuter) from the source ENI to the
// target ENI with vni, then the copied frame. id numbers the IPv4 packets;
// sport spreads sessions over source ports. The only error is a VNI beyond
// 24 bits.
func Encap(buf []byte, session, vni uint32, src, dst netip.Addr, id, sport uint16, frame []byte) ([]byte, error) {
	n := HeaderLen + len(frame)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	b := buf[:n]
	// Ethernet: the destination is ignored (the program routes by IP).
	copy(b[0:6], encap.GatewayMAC)
	injectMAC(b[6:12], session)
	binary.BigEndian.PutUint16(b[12:14], encap.EtherTypeIPv4)
	outer := encap.Outer{Src: src, Dst: dst, ID: id, SrcPort: sport, VNI: vni}
	if err := encap.PutOuter(b[encap.EthLen:HeaderLen], outer, len(frame)); err != nil {
		return buf, err
	}
	copy(b[HeaderLen:], frame)
	return b, nil
}

// SourcePort is the UDP source port of a session's copies: one per
// session, in the dynamic range (encap.SourcePort of a multiplicative hash
// of the session index), so that a target tells sessions apart as it would
// on AWS and a capture groups them.
func SourcePort(session uint32) uint16 { return encap.SourcePort(session * 2654435761) }
