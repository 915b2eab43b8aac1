package encap

import (
	"encoding/binary"
	"net/netip"
)

// Source ports of VXLAN packets: RFC 7348 asks for a hash of the inner
// packet in the dynamic range, so that equal-cost paths keep a flow's
// packets in order and spread flows.
const (
	// SourcePortBase is the first port of the dynamic range.
	SourcePortBase = 49152
	// SourcePorts is how many ports the range holds.
	SourcePorts = 16384
)

// SourcePort is the UDP source port of a VXLAN packet whose flow hashes to
// hash: bpf/lib/encap.h's vxlan_source_port.
func SourcePort(hash uint32) uint16 { return uint16(SourcePortBase + hash%SourcePorts) }

// FlowHash is bpf/lib/eni.h's flow_hash, the hash the ENI program gives
// SourcePort for a packet it sends to another host. The program reads the
// addresses as 32-bit words in the host's byte order straight from the
// packet, so FlowHash does too. ports is the word the program hashes with
// them: see Ports.
func FlowHash(src, dst netip.Addr, proto uint8, ports uint32) uint32 {
	s4, d4 := src.As4(), dst.As4()
	saddr := binary.NativeEndian.Uint32(s4[:])
	daddr := binary.NativeEndian.Uint32(d4[:])
	h := saddr * 0x9e3779b1
	h ^= daddr + 0x7f4a7c15 + (h << 6) + (h >> 2)
	h ^= ports + uint32(proto) + 0x165667b1 + (h << 6) + (h >> 2)
	return h ^ (h >> 16)
}

// Ports is the ports word of a TCP or UDP packet as the ENI program hashes
// it, on its slow and fast paths alike (bpf/lib/eni.h): the port numbers
// themselves, so that every packet of a flow, and every fragment of a
// datagram, leaves with one VXLAN source port (RFC 7348). Zero for other
// protocols.
func Ports(sport, dport uint16) uint32 { return uint32(sport)<<16 | uint32(dport) }
