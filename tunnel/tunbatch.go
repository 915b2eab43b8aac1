package tunnel

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/vpcd/vpcd/bpf/limits"
	"github.com/vpcd/vpcd/encap"
)

// The ENI program marks a TCP super-packet it sends to another host when a
// mirror session wants copies of its segments for a target on another host:
// tunnelBatchMark in reserved byte 1 of the packet's VPC VXLAN header, the
// session's index in bytes 2..3 (VXLAN_TUNNEL_BATCH_MARK in
// bpf/lib/common.h). The daemon reads the super-packet to cut it into its
// wire segments anyway; with the segments' bytes in hand it makes the
// compact batch of their copies itself (tunnelBatch), the same batch the
// kernel makes from a clone (compact.go), and clears the mark. The copies
// cost no clone, no second pass through the kernel and no read of their
// own. The kernel has counted them sent; a batch the daemon cannot make is
// counted here (MirrorFailures).
const tunnelBatchMark = 0x54

// MirrorTarget is what the tunnel needs to make a session's copies of a
// marked super-packet: what the kernel reads from its maps for a batch.
type MirrorTarget struct {
	VNI        uint32     // the session's virtual_network_id
	Snap       int        // bytes of each frame a copy holds
	Source     netip.Addr // the source ENI's address: the copies' IPv4 source
	Target     netip.Addr // the target ENI's address
	TargetMAC  [6]byte
	TargetHost netip.Addr // the underlay address of the target's host
}

// mirrorTargets is a session index's target, as the agent last set them.
type mirrorTargets map[uint16]MirrorTarget

// maxMirrorIndex bounds the session indexes (MAX_MIRROR_SESSIONS).
const maxMirrorIndex = limits.MaxMirrorSessions

// tunnelBatches holds the daemon's side of the batches it makes.
type tunnelBatches struct {
	targets atomic.Pointer[mirrorTargets]
	failed  [maxMirrorIndex]atomic.Uint64 // copies of marked packets not made, by session index
	made    atomic.Uint64                 // batches made
	pbuf    []byte                        // the segments' first bytes (Read's goroutine only)
}

// takeMark reads and clears the mark of a super-packet: the session index,
// and whether it was marked.
func takeMark(pkt []byte) (uint16, bool) {
	if len(pkt) < encap.InnerEthAt || pkt[encap.VXLANAt+1] != tunnelBatchMark {
		return 0, false
	}
	idx := binary.BigEndian.Uint16(pkt[encap.VXLANAt+2:])
	clearBatchMark(pkt)
	return idx, true
}

// make makes, into bufs at offset, the tunnel packets of the batch
// of copies of super-packet pkt (a VXLAN TCP GSO frame from the ENI
// program, cut at mss) for session idx, and returns how many. 0 when it
// cannot (no bufs: the segments themselves are lost): the copies are
// counted as failed.
func (tb *tunnelBatches) make(pkt []byte, mss int, idx uint16, mtu int, bufs [][]byte, sizes []int, offset int) int {
	n, segs := tb.build(pkt, mss, idx, mtu, bufs, sizes, offset)
	if n == 0 && int(idx) < len(tb.failed) {
		tb.failed[idx].Add(uint64(max(segs, 1)))
	}
	if n > 0 {
		tb.made.Add(1)
	}
	return n
}

func (tb *tunnelBatches) build(pkt []byte, mss int, idx uint16, mtu int, bufs [][]byte, sizes []int, offset int) (int, int) {
	tp := tb.targets.Load()
	if len(pkt) < encap.InnerL4At+20 || pkt[0] != 0x45 || mss <= 0 {
		return 0, 0
	}
	frame := pkt[encap.InnerEthAt:]
	ip := pkt[encap.InnerIPAt:]
	hdrLen := encap.EthLen + 20 + int(pkt[encap.InnerL4At+12]>>4)*4
	if ip[0] != 0x45 || ip[9] != encap.ProtoTCP || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 || hdrLen > len(frame) {
		return 0, 0
	}
	d := batchDesc{mss: mss, payload: len(frame) - hdrLen, hdrLen: hdrLen}
	d.segs = (d.payload + mss - 1) / mss
	d.cnt = d.segs
	if tp == nil {
		return 0, d.segs
	}
	mt, ok := (*tp)[idx]
	if !ok {
		return 0, d.segs
	}
	d.snap = mt.Snap
	if d.segs < 2 || d.segs > limits.MirrorBatchSegs || d.snap <= 0 || d.snap > limits.MirrorBatchSnap ||
		d.snap+encap.HeaderLen > mss || hdrLen < minHdrLen || hdrLen > maxHdrLen || d.payload > 0xffff {
		return 0, d.segs
	}
	// The batch's headers, as mirror_batch in bpf/lib/eni.h writes them.
	var head [compactAt + descLen + maxHdrLen]byte
	h := head[:compactAt+descLen]
	outer := encap.Outer{
		Src: netip.AddrFrom4([4]byte(pkt[12:16])), Dst: mt.TargetHost,
		SrcPort: encap.SourcePort(uint32(idx) * 0x9e3779b1), VNI: uint32(binary.BigEndian.Uint32(pkt[encap.VXLANAt+4:]) >> 8),
	}
	if !mt.TargetHost.Is4() || !mt.Source.Is4() || !mt.Target.Is4() || encap.PutOuter(h, outer, 0) != nil {
		return 0, d.segs
	}
	vx := h[encap.VXLANAt:]
	vx[1], vx[7] = compactMark, mirrorMark
	binary.BigEndian.PutUint16(vx[2:], uint16(encap.HeaderLen+d.snap))
	eth := h[encap.InnerEthAt:]
	copy(eth[0:6], mt.TargetMAC[:])
	copy(eth[6:12], frame[6:12])
	binary.BigEndian.PutUint16(eth[12:], encap.EtherTypeIPv4)
	cip := h[encap.InnerIPAt:]
	cip[0], cip[8], cip[9] = 0x45, 64, encap.ProtoUDP
	binary.BigEndian.PutUint16(cip[6:], 0x4000) // DF
	s4, t4 := mt.Source.As4(), mt.Target.As4()
	copy(cip[12:16], s4[:])
	copy(cip[16:20], t4[:])
	udp := h[encap.InnerL4At:]
	binary.BigEndian.PutUint16(udp[0:], encap.SourcePort(uint32(idx)*2654435761))
	binary.BigEndian.PutUint16(udp[2:], encap.VXLANPort)
	if encap.PutHeader(h[compactHdr:compactAt], mt.VNI) != nil {
		return 0, d.segs
	}
	d.put(h[compactAt:])
	// The frame's headers as the source ENI sent them: to the VPC router.
	tmpl := head[compactAt+descLen : compactAt+descLen+hdrLen]
	copy(tmpl, frame[:hdrLen])
	copy(tmpl[0:6], encap.GatewayMAC)
	tb.pbuf = tb.pbuf[:0]
	for i := 0; i < d.segs; i++ {
		at := hdrLen + i*mss
		tb.pbuf = append(tb.pbuf, frame[at:at+d.pfx(i)]...)
	}
	c := compact{d: d, unit: encap.HeaderLen + d.snap, tmpl: tmpl, prefixes: tb.pbuf, pkt: head[:]}
	n, err := splitCompact(c, mtu, bufs, sizes, offset)
	if err != nil {
		return 0, d.segs
	}
	return n, d.segs
}

// padToSegment pads every packet of a batch of copies but the last to seg
// bytes, the length of the segments they were made from, with zeros past
// the IPv4 length (the receiving wireguard-go cuts a packet to its IPv4
// length). wireguard-go sends a read's packets to a peer in UDP GSO sends
// of equal-sized messages, a smaller one ending a send: padded, the
// copies ride in the segments' send, instead of one send of their own per
// super-packet, and likewise through the peer's UDP GRO. It costs a few
// dozen bytes a packet; wireguard-go pads every message to 16 bytes
// anyway.
func padToSegment(bufs [][]byte, sizes []int, offset int, seg []byte, mtu int) {
	if len(seg) > mtu || len(seg) < 20 {
		return
	}
	for i := 0; i < len(bufs)-1; i++ {
		// Only messages to the segments' peer go in their send.
		if b := bufs[i][offset:]; sizes[i] < len(seg) && len(b) >= len(seg) && string(b[16:20]) == string(seg[16:20]) {
			clear(b[sizes[i]:len(seg)])
			sizes[i] = len(seg)
		}
	}
}

// MakesBatches reports whether the tunnel makes the copies of super-packets
// the ENI program marks (the offloading device; the plain one gets every
// packet cut by the kernel first).
func (t *Tunnel) MakesBatches() bool {
	_, ok := t.tun.(*vxlanTUN)
	return ok
}

// SetMirrorTargets gives the tunnel the targets of the sessions whose
// copies it makes, by session index.
func (t *Tunnel) SetMirrorTargets(m map[uint16]MirrorTarget) {
	if vt, ok := t.tun.(*vxlanTUN); ok {
		mt := mirrorTargets(m)
		vt.batches.targets.Store(&mt)
	}
}

// MirrorFailures returns how many copies of the marked super-packets of the
// session at index idx the tunnel could not make (the kernel counted them
// sent).
func (t *Tunnel) MirrorFailures(idx uint32) uint64 {
	vt, ok := t.tun.(*vxlanTUN)
	if !ok || idx >= maxMirrorIndex {
		return 0
	}
	return vt.batches.failed[idx].Load()
}
