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
	// Same outer addresses and ports, VNI, inner Ethernet and addresses.
	const ports, vni, eth = encap.OuterUDPAt, encap.VXLANAt + 4, encap.InnerEthAt
	if !bytes.Equal(h[12:20], q[12:20]) || !bytes.Equal(h[ports:ports+4], q[ports:ports+4]) ||
		!bytes.Equal(h[vni:vni+4], q[vni:vni+4]) || !bytes.Equal(h[eth:eth+encap.EthLen], q[eth:eth+encap.EthLen]) {
		return false
	}
	hi, qi := h[encap.InnerIPAt:], q[encap.InnerIPAt:]
	if hi[1] != qi[1] || hi[8] != qi[8] || !bytes.Equal(hi[12:20], qi[12:20]) {
		return false
	}
	ht, qt := h[encap.InnerL4At:], q[encap.InnerL4At:]
	// Ports, ack number, window and options (timestamps) equal.
	return bytes.Equal(ht[0:4], qt[0:4]) && bytes.Equal(ht[8:12], qt[8:12]) &&
		bytes.Equal(ht[14:16], qt[14:16]) && bytes.Equal(ht[20:head.tcpLen], qt[20:p.tcpLen])
}
