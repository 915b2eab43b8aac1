// Package encap is vpcd's wire format in Go: the VXLAN encapsulation (RFC
// 7348) that the eBPF programs put around a workload's frame before it
// enters the WireGuard tunnel, with the same sizes, port, flags and source-
// port formula as bpf/lib/common.h and bpf/lib/encap.h; the Internet
// checksums (RFC 1071) the tunnel device and the mirror need; and the VPC
// router's fixed MAC. The tunnel device, the mirror and the datapath's
// loader take these from here instead of writing them again.
//
// A VXLAN packet as vpcd carries it, from the outer IPv4 header on:
//
//	offset  0  outer IPv4, 20 bytes, no options   (OuterUDPAt = 20)
//	       20  UDP to VXLANPort, 8 bytes          (VXLANAt    = 28)
//	       28  VXLAN: I flag, VNI << 8, 8 bytes   (InnerEthAt = 36 = OuterLen)
//	       36  inner Ethernet, 14 bytes           (InnerIPAt  = 50 = EncapLen)
//	       50  inner IPv4                         (InnerL4At  = 70 without options)
package encap

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// Sizes of the headers, as bpf/lib/common.h has them.
const (
	// EthLen is an Ethernet header without VLAN tags (ETH_HLEN).
	EthLen = 14
	// IPv4Len is an IPv4 header without options.
	IPv4Len = 20
	// UDPLen is a UDP header.
	UDPLen = 8
	// HeaderLen is the VXLAN header's length.
	HeaderLen = 8
	// OuterLen is what goes before the inner Ethernet frame: IPv4, UDP and
	// VXLAN (VXLAN_OUTER_LEN).
	OuterLen = IPv4Len + UDPLen + HeaderLen
	// EncapLen is what encapsulation adds to an inner IP packet: the outer
	// headers and the inner Ethernet header (VXLAN_ENCAP_LEN).
	EncapLen = OuterLen + EthLen
)

// Offsets in a VXLAN packet that starts at its outer IPv4 header, which has
// no options (vpcd never sends any).
const (
	OuterUDPAt = IPv4Len
	VXLANAt    = OuterUDPAt + UDPLen
	InnerEthAt = VXLANAt + HeaderLen
	InnerIPAt  = InnerEthAt + EthLen
	// InnerL4At is where the inner transport header starts when the inner
	// IPv4 header has no options either.
	InnerL4At = InnerIPAt + IPv4Len
)

// Protocol numbers and values the encapsulation uses.
const (
	// VXLANPort is the IANA UDP port of VXLAN (VXLAN_PORT).
	VXLANPort = 4789
	// EtherTypeIPv4 is the Ethernet type of IPv4 (ETH_P_IP).
	EtherTypeIPv4 = 0x0800
	// ProtoTCP and ProtoUDP are IP protocol numbers.
	ProtoTCP = 6
	ProtoUDP = 17
	// FlagVNI is the I flag in the first byte of the VXLAN header: the VNI
	// field is valid (VXLAN_FLAG_VNI >> 24).
	FlagVNI = 0x08
	// MaxVNI is the largest 24-bit VNI.
	MaxVNI = 1<<24 - 1
	// TTL is the outer header's time to live.
	TTL = 64
)

// GatewayMAC is the fixed MAC of the VPC router that answers every ARP of a
// workload ("vpc" in its middle bytes, locally administered). The daemon
// hands it to the datapath (struct vpcd_config's gw_mac); nothing else
// defines it.
var GatewayMAC = net.HardwareAddr{0x02, 0x76, 0x70, 0x63, 0x00, 0x01}

// ErrShort means the buffer is shorter than a VXLAN header.
var ErrShort = errors.New("vxlan: header truncated")

// ErrNoVNI means the I flag is not set.
var ErrNoVNI = errors.New("vxlan: I flag not set")

// ErrVNIRange means a VNI does not fit in 24 bits.
var ErrVNIRange = errors.New("vxlan: VNI out of range")

// PutHeader writes a VXLAN header with vni into b[:8].
func PutHeader(b []byte, vni uint32) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	if vni > MaxVNI {
		return ErrVNIRange
	}
	binary.BigEndian.PutUint32(b[0:4], FlagVNI<<24)
	binary.BigEndian.PutUint32(b[4:8], vni<<8)
	return nil
}

// ParseHeader returns the VNI of the VXLAN header at the start of b.
func ParseHeader(b []byte) (uint32, error) {
	if len(b) < HeaderLen {
		return 0, ErrShort
	}
	if b[0]&FlagVNI == 0 {
		return 0, ErrNoVNI
	}
	return binary.BigEndian.Uint32(b[4:8]) >> 8, nil
}

// Outer is what the outer headers of one VXLAN packet say.
type Outer struct {
	Src, Dst netip.Addr // IPv4 addresses
	ID       uint16     // IPv4 identification
	SrcPort  uint16     // UDP source port, see SourcePort
	VNI      uint32
}

// PutOuter writes the outer IPv4, UDP and VXLAN headers (OuterLen bytes)
// for an inner Ethernet frame of innerLen bytes into b, as the datapath's
// vxlan_fill does: no IP options, TTL 64, a valid IPv4 header checksum, UDP
// to VXLANPort with no checksum (optional over IPv4; the tunnel
// authenticates every byte). The only errors are a short b and a VNI beyond
// 24 bits.
func PutOuter(b []byte, o Outer, innerLen int) error {
	if len(b) < OuterLen {
		return ErrShort
	}
	if err := PutHeader(b[VXLANAt:InnerEthAt], o.VNI); err != nil {
		return err
	}
	ip := b[:IPv4Len]
	ip[0] = 0x45
	ip[1] = 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(OuterLen+innerLen))
	binary.BigEndian.PutUint16(ip[4:6], o.ID)
	binary.BigEndian.PutUint16(ip[6:8], 0)
	ip[8] = TTL
	ip[9] = ProtoUDP
	ip[10], ip[11] = 0, 0
	s4, d4 := o.Src.As4(), o.Dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], Checksum(ip))

	udp := b[OuterUDPAt:VXLANAt]
	binary.BigEndian.PutUint16(udp[0:2], o.SrcPort)
	binary.BigEndian.PutUint16(udp[2:4], VXLANPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(UDPLen+HeaderLen+innerLen))
	udp[6], udp[7] = 0, 0
	return nil
}
