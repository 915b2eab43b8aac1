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
// them: see WirePorts and HostPorts.
func FlowHash(src, dst netip.Addr, proto uint8, ports uint32) uint32 {
	s4, d4 := src.As4(), dst.As4()
	saddr := binary.NativeEndian.Uint32(s4[:])
	daddr := binary.NativeEndian.Uint32(d4[:])
	h := saddr * 0x9e3779b1
	h ^= daddr + 0x7f4a7c15 + (h << 6) + (h >> 2)
	h ^= ports + uint32(proto) + 0x165667b1 + (h << 6) + (h >> 2)
	return h ^ (h >> 16)
}

// WirePorts is the ports word of a TCP or UDP packet as the ENI program's
// slow path (the first packet of a flow) hashes it: each port a 16-bit word
// read from the packet in the host's byte order. Zero for other protocols.
func WirePorts(sport, dport uint16) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return uint32(binary.NativeEndian.Uint16(b[0:]))<<16 | uint32(binary.NativeEndian.Uint16(b[2:]))
}

// HostPorts is the ports word as the ENI program's fast path (a flow's
// later packets, bpf/lib/eni.h's fast_forward) hashes it: the port numbers
// themselves. On a little-endian host it differs from WirePorts, so a
// flow's first packet and its later ones may leave with different source
// ports; the receiver ignores the source port.
func HostPorts(sport, dport uint16) uint32 { return uint32(sport)<<16 | uint32(dport) }
