package tunnel

import (
	"bytes"
	"encoding/binary"

	"github.com/vpcd/vpcd/encap"
)

// Receive-side coalescing (GRO) for VXLAN-wrapped TCP. wireguard-go hands
// Write a batch of decrypted packets; consecutive segments of one inner TCP
// flow are written to the kernel as one VXLAN GSO super-packet (virtio-net
// UDP tunnel GSO), so that the tunnel program, the redirect and the
// workload's TCP stack each run once per batch instead of once per segment.

const (
	maxGSOLen = 65535 - 64 // room for the outer headers' length fields

	tcpFlagACK = 0x10
	tcpFlagRST = 0x04
	tcpFlagSYN = 0x02
	tcpFlagURG = 0x20
	tcpFlagECE = 0x40
)

// groPacket is a parsed candidate for coalescing.
type groPacket struct {
	pkt     []byte
	tcpLen  int // TCP header length
	payload int // TCP payload length
	seq     uint32
	flags   uint8
}

// parseGRO reports whether pkt is a VXLAN-wrapped IPv4 TCP segment that may
// be coalesced: no IP options or fragments, only ACK and PSH set, payload.
func parseGRO(pkt []byte) (groPacket, bool) {
	g := groPacket{pkt: pkt}
	if at, ok := innerTCP(pkt); !ok || at != encap.InnerL4At || pkt[encap.VXLANAt]&encap.FlagVNI == 0 {
		return g, false
	}
	tcp := pkt[encap.InnerL4At:]
	g.tcpLen = int(tcp[12]>>4) * 4
	g.flags = tcp[13]
	if g.tcpLen < 20 || encap.InnerL4At+g.tcpLen > len(pkt) {
		return g, false
	}
	if g.flags&^(tcpFlagACK|tcpFlagPSH) != 0 || g.flags&tcpFlagACK == 0 {
		return g, false
	}
	g.payload = len(pkt) - encap.InnerL4At - g.tcpLen
	if g.payload == 0 {
		return g, false
	}
	g.seq = binary.BigEndian.Uint32(tcp[4:])
	return g, true
}

// canFollow reports whether p continues the group whose first packet is
// head and whose next expected sequence number is next, with segments of
// gsoSize bytes.
func canFollow(head, p groPacket, next uint32, gsoSize, total int) bool {
	if p.seq != next || p.payload > gsoSize || total+p.payload > maxGSOLen {
		return false
	}
	if p.tcpLen != head.tcpLen {
		return false
	}
	h, q := head.pkt, p.pkt
	if !sameFlow(h, q) {
		return false
	}
	ht, qt := h[encap.InnerL4At:], q[encap.InnerL4At:]
	// Ack number, window and options (timestamps) equal.
	return bytes.Equal(ht[8:12], qt[8:12]) &&
		bytes.Equal(ht[14:16], qt[14:16]) && bytes.Equal(ht[20:head.tcpLen], qt[20:p.tcpLen])
}

// sameFlow reports whether two VXLAN-wrapped IPv4 packets (options-free
// inner header) belong to one flow for coalescing: same outer addresses
// and ports, VNI, inner Ethernet header, TOS, TTL, addresses and
// transport ports.
func sameFlow(h, q []byte) bool {
	const ports, vni, eth = encap.OuterUDPAt, encap.VXLANAt + 4, encap.InnerEthAt
	hi, qi := h[encap.InnerIPAt:], q[encap.InnerIPAt:]
	return bytes.Equal(h[12:20], q[12:20]) && bytes.Equal(h[ports:ports+4], q[ports:ports+4]) &&
		bytes.Equal(h[vni:vni+4], q[vni:vni+4]) && bytes.Equal(h[eth:eth+encap.EthLen], q[eth:eth+encap.EthLen]) &&
		hi[1] == qi[1] && hi[8] == qi[8] && bytes.Equal(hi[12:20], qi[12:20]) &&
		bytes.Equal(h[encap.InnerL4At:encap.InnerL4At+4], q[encap.InnerL4At:encap.InnerL4At+4])
}

// Mirror copies (VXLAN whose VNI word carries the mirror mark) of one
// session arrive as runs of equal-sized UDP packets of one flow: the
// session's copies of a bulk stream, cut at its packet_length. Such a run
// is written as one UDP GSO packet, so the tunnel program and the
// target's delivery run once per batch, not once per copy.

// mirrorMark is the low byte of the VNI word of a mirror copy's VPC VXLAN
// header (VXLAN_MIRROR_MARK in bpf/lib/common.h).
const mirrorMark = 0x4d

// maxCopies bounds a batch of copies (the kernel's UDP_MAX_SEGMENTS is 128
// or more).
const maxCopies = 64

// Across the tunnel, a batch of copies travels several to a packet: the
// sending vpcd cuts the kernel's UDP GSO batch into packets of as many
// whole copies as the tunnel MTU holds and marks each packet's VPC VXLAN
// header (reserved bytes 1..3: batchMark, then the copy size); the
// receiving vpcd writes such packets back to its kernel as UDP GSO with
// that size, with the mark cleared. The mark never leaves the tunnel: it
// is inside WireGuard, between vpcd hosts.
const batchMark = 0x42

// copiesPerPacket returns the copy size of a UDP GSO batch of mirror
// copies read from the kernel, and how many whole copies fit one packet of
// the tunnel MTU (0 when pkt is not such a batch).
func copiesPerPacket(pkt []byte, h vnetHdr, mtu int) (int, int) {
	if h.gsoType&^vnetGSOECN != vnetGSOTunnelV4|vnetGSOUDPL4 || mtu <= 0 ||
		len(pkt) < encap.InnerL4At+encap.UDPLen || pkt[0] != 0x45 ||
		pkt[encap.VXLANAt+7] != mirrorMark || pkt[encap.InnerIPAt] != 0x45 {
		return 0, 0
	}
	g := int(h.gsoSize)
	if g == 0 {
		return 0, 0
	}
	return g, (mtu - encap.InnerL4At - encap.UDPLen) / g
}

// markBatch marks a packet of copies of size g as a batch, when it holds
// more than one.
func markBatch(pkt []byte, g int) {
	if len(pkt)-encap.InnerL4At-encap.UDPLen > g {
		pkt[encap.VXLANAt+1] = batchMark
		binary.BigEndian.PutUint16(pkt[encap.VXLANAt+2:], uint16(g))
	}
}

func clearBatchMark(pkt []byte) {
	pkt[encap.VXLANAt+1], pkt[encap.VXLANAt+2], pkt[encap.VXLANAt+3] = 0, 0, 0
}

// mirrorUnit reports whether pkt is a VXLAN-wrapped mirror copy or batch
// of copies (a whole, unfragmented IPv4 UDP datagram with no IP options),
// its UDP payload length, and for a batch the size of its copies (g > 0,
// at most maxCopies of them, the payload longer than one).
func mirrorUnit(pkt []byte) (payload, g int, ok bool) {
	const at = encap.InnerL4At
	if len(pkt) < at+encap.UDPLen || !wholeVXLAN(pkt) ||
		pkt[encap.VXLANAt+7] != mirrorMark || pkt[encap.VXLANAt]&encap.FlagVNI == 0 {
		return 0, 0, false
	}
	ip := pkt[encap.InnerIPAt:]
	if ip[0] != 0x45 || ip[9] != encap.ProtoUDP || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 ||
		encap.InnerIPAt+int(binary.BigEndian.Uint16(ip[2:])) != len(pkt) ||
		encap.InnerL4At+int(binary.BigEndian.Uint16(pkt[at+4:])) != len(pkt) {
		return 0, 0, false
	}
	payload = len(pkt) - at - encap.UDPLen
	if payload <= 0 {
		return 0, 0, false
	}
	if pkt[encap.VXLANAt+1] == batchMark {
		g = int(binary.BigEndian.Uint16(pkt[encap.VXLANAt+2:]))
		if g == 0 || payload <= g || (payload+g-1)/g > maxCopies {
			return 0, 0, false
		}
	} else if pkt[encap.VXLANAt+1] != 0 || pkt[encap.VXLANAt+2] != 0 || pkt[encap.VXLANAt+3] != 0 {
		return 0, 0, false
	}
	return payload, g, true
}

// copyRun returns how many packets from bufs[0] on form one batch of
// mirror copies, the copies' size, the batch's total length (one set of
// headers) and whether bufs[0] alone already holds several copies. A run
// is single copies or peer batches of one size (all but the last copy of
// the run that size), with the same outer and inner addresses, ports, VNI
// and inner Ethernet header; at most maxCopies copies and 64 KiB.
func copyRun(bufs [][]byte, offset int) (n, size, total int, batch bool) {
	h := bufs[0][offset:]
	payload, g, ok := mirrorUnit(h)
	if !ok {
		return 1, 0, len(h), false
	}
	size, batch = payload, g > 0
	if batch {
		size = g
	}
	total = len(h)
	copies := (payload + size - 1) / size
	n = 1
	for ended := payload%size != 0; !ended && n < len(bufs); n++ {
		q := bufs[n][offset:]
		qp, qg, ok := mirrorUnit(q)
		if !ok || (qg > 0 && qg != size) || (qg == 0 && qp > size) || total+qp > maxGSOLen {
			break
		}
		qc := (qp + size - 1) / size
		if copies+qc > maxCopies {
			break
		}
		if !sameFlow(h, q) {
			break
		}
		total += qp
		copies += qc
		ended = qp%size != 0
	}
	return n, size, total, batch
}
