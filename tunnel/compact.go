package tunnel

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/bpf/limits"
	"github.com/vpcd/vpcd/encap"
)

// A compact batch of mirror copies: the ENI program's copies of every wire
// segment of one TCP super-packet (see struct mirror_batch_desc in
// bpf/lib/common.h). Every byte of a copy but its segment's own payload
// follows from the super-packet's headers and the segment's place in it,
// so the batch carries those headers once and then each segment's first
// bytes. The VPC VXLAN header carries compactMark and the size of one
// copy's unit in its reserved bytes 1..3. Layout after the copies' IPv4
// and UDP headers (encap.InnerL4At + UDPLen):
//
//	VXLAN header with the session's VNI      8 bytes
//	descriptor                               descLen bytes
//	the frame's Ethernet, IPv4, TCP headers  hdrLen bytes
//	segments first..first+count-1: each its first bytes after the headers
//
// The sending vpcd cuts it into tunnel packets of whole segments, each
// with its own headers and descriptor (splitCompact); the receiving vpcd
// rebuilds the copies, VXLAN units of the session, and writes them to its
// kernel as one UDP GSO packet (writeCompact), which the kernel cuts into
// the copies. The mark never leaves the host but inside WireGuard.
const compactMark = 0x43

const (
	descLen    = 12
	compactHdr = encap.InnerL4At + encap.UDPLen // the copies' IPv4 and UDP headers end here
	compactAt  = compactHdr + encap.HeaderLen   // the descriptor
	minHdrLen  = encap.EthLen + 20 + 20
	maxHdrLen  = limits.MirrorBatchHdrs
)

// batchDesc is struct mirror_batch_desc.
type batchDesc struct {
	mss, snap, payload       int
	hdrLen, segs, first, cnt int
}

func (d batchDesc) put(b []byte) {
	binary.BigEndian.PutUint16(b[0:], uint16(d.mss))
	binary.BigEndian.PutUint16(b[2:], uint16(d.snap))
	binary.BigEndian.PutUint16(b[4:], uint16(d.payload))
	b[6], b[7], b[8], b[9], b[10], b[11] = byte(d.hdrLen), byte(d.segs), byte(d.first), byte(d.cnt), 0, 0
}

// segLen is the payload of segment i.
func (d batchDesc) segLen(i int) int { return min(d.mss, d.payload-i*d.mss) }

// pfx is how many of a segment's payload bytes its copy holds.
func (d batchDesc) pfx(i int) int { return min(max(d.snap-d.hdrLen, 0), d.segLen(i)) }

// compact is a compact batch in a packet.
type compact struct {
	d        batchDesc
	unit     int    // a copy's VXLAN unit: 8 + snap
	tmpl     []byte // the frame's headers
	prefixes []byte // the segments' first bytes, first..first+cnt-1
	pkt      []byte // the whole batch, cut to its IPv4 length
}

// compactMarked reports whether pkt carries the marks of a compact batch
// (parseCompact checks the rest).
func compactMarked(pkt []byte) bool {
	return len(pkt) >= compactAt+descLen+minHdrLen && pkt[0] == 0x45 && pkt[9] == encap.ProtoUDP &&
		pkt[encap.VXLANAt+1] == compactMark && pkt[encap.VXLANAt+7] == mirrorMark &&
		pkt[encap.InnerIPAt] == 0x45 && pkt[encap.InnerIPAt+9] == encap.ProtoUDP
}

// parseCompact reports whether pkt is a compact batch of copies, and reads
// it. Bytes past the outer IPv4 length are left out; anything that does
// not add up is refused.
func parseCompact(pkt []byte) (c compact, ok bool) {
	if !compactMarked(pkt) {
		return c, false
	}
	if n := int(binary.BigEndian.Uint16(pkt[2:])); n < len(pkt) {
		pkt = pkt[:n]
	}
	b := pkt[compactAt:]
	if len(b) < descLen {
		return c, false
	}
	d := batchDesc{
		mss: int(binary.BigEndian.Uint16(b[0:])), snap: int(binary.BigEndian.Uint16(b[2:])),
		payload: int(binary.BigEndian.Uint16(b[4:])),
		hdrLen:  int(b[6]), segs: int(b[7]), first: int(b[8]), cnt: int(b[9]),
	}
	unit := int(binary.BigEndian.Uint16(pkt[encap.VXLANAt+2:]))
	if d.hdrLen < minHdrLen || d.hdrLen > maxHdrLen || d.snap > limits.MirrorBatchSnap || d.snap+encap.HeaderLen > d.mss ||
		d.segs < 1 || d.segs > limits.MirrorBatchSegs || d.cnt < 1 || d.first+d.cnt > d.segs ||
		d.payload <= (d.segs-1)*d.mss || d.payload > d.segs*d.mss || unit != encap.HeaderLen+d.snap ||
		len(b) < descLen+d.hdrLen {
		return c, false
	}
	want := 0
	for i := d.first; i < d.first+d.cnt; i++ {
		want += d.pfx(i)
	}
	tmpl := b[descLen : descLen+d.hdrLen]
	if len(b)-descLen-d.hdrLen != want || binary.BigEndian.Uint16(tmpl[12:]) != encap.EtherTypeIPv4 ||
		tmpl[14] != 0x45 || tmpl[23] != encap.ProtoTCP || 34+int(tmpl[46]>>4)*4 != d.hdrLen {
		return c, false
	}
	return compact{d: d, unit: unit, tmpl: tmpl, prefixes: b[descLen+d.hdrLen:], pkt: pkt}, true
}

// splitCompact cuts a compact batch into packets of whole segments of at
// most mtu bytes, each a compact batch itself, into bufs at offset.
func splitCompact(c compact, mtu int, bufs [][]byte, sizes []int, offset int) (int, error) {
	head := compactAt + descLen + c.d.hdrLen
	room := mtu - head
	if room < limits.MirrorBatchSnap {
		return 0, errMalformed
	}
	oID := binary.BigEndian.Uint16(c.pkt[4:])
	n, pos := 0, 0
	for i := c.d.first; i < c.d.first+c.d.cnt; n++ {
		if n >= len(bufs) {
			return n, errMalformed
		}
		d := c.d
		d.first, d.cnt = i, 0
		size := 0
		for ; i < c.d.first+c.d.cnt && size+c.d.pfx(i) <= room; i++ {
			size += c.d.pfx(i)
			d.cnt++
		}
		out := bufs[n][offset:]
		if len(out) < head+size {
			return n, errMalformed
		}
		out = out[:head+size]
		copy(out, c.pkt[:compactAt])
		d.put(out[compactAt:])
		copy(out[compactAt+descLen:], c.tmpl)
		copy(out[head:], c.prefixes[pos:pos+size])
		pos += size
		binary.BigEndian.PutUint16(out[4:], oID+uint16(n))
		setCopiesLengths(out)
		sizes[n] = len(out)
	}
	return n, nil
}

// setCopiesLengths fixes the lengths and header checksums of out, a
// tunnel packet of several copies, and clears both UDP checksums: the
// copies' own are the receiving kernel's to compute when it cuts them.
func setCopiesLengths(out []byte) {
	setGSOLengths(out, len(out))
	binary.BigEndian.PutUint16(out[encap.InnerL4At+4:], uint16(len(out)-encap.InnerL4At))
	out[encap.OuterUDPAt+6], out[encap.OuterUDPAt+7] = 0, 0
	out[encap.InnerL4At+6], out[encap.InnerL4At+7] = 0, 0
}

// expandCompact appends to out the copies a compact batch stands for:
// per segment the session's VXLAN header and the first snap bytes of the
// segment as it crossed the VPC's wire, as segmentation cut it: IPv4
// length, ID and checksum; TCP sequence number, flags (CWR on the first
// segment only, FIN and PSH on the last only) and the checksum field as
// an offloaded segment carries it (the pseudo-header sum, see split.go).
func expandCompact(c compact, out []byte) []byte {
	d := c.d
	var hdr [maxHdrLen]byte
	tmpl := c.tmpl
	ipBase := encap.IPv4BaseSum(tmpl[14:34])
	id := binary.BigEndian.Uint16(tmpl[18:])
	seq := binary.BigEndian.Uint32(tmpl[38:])
	pBase := encap.PseudoBase(tmpl[26:30], tmpl[30:34], encap.ProtoTCP)
	vx := c.pkt[compactHdr:compactAt]
	pos := 0
	for i := d.first; i < d.first+d.cnt; i++ {
		m := d.segLen(i)
		h := hdr[:d.hdrLen]
		copy(h, tmpl)
		ipLen := uint16(d.hdrLen - encap.EthLen + m)
		binary.BigEndian.PutUint16(h[16:], ipLen)
		binary.BigEndian.PutUint16(h[18:], id+uint16(i))
		binary.BigEndian.PutUint16(h[24:], encap.IPv4Checksum(ipBase, ipLen, id+uint16(i)))
		binary.BigEndian.PutUint32(h[38:], seq+uint32(i*d.mss))
		if i != 0 {
			h[47] &^= tcpFlagCWR
		}
		if i != d.segs-1 {
			h[47] &^= tcpFlagFIN | tcpFlagPSH
		}
		binary.BigEndian.PutUint16(h[50:], encap.PseudoPartial(pBase, d.hdrLen-34+m))
		keep := min(d.snap, d.hdrLen+m)
		out = append(out, vx...)
		out = append(out, h[:min(keep, d.hdrLen)]...)
		if k := keep - d.hdrLen; k > 0 {
			out = append(out, c.prefixes[pos:pos+k]...)
		}
		pos += d.pfx(i)
	}
	return out
}

// follows reports whether q continues c: the next segments of the same
// batch, for the same session and target.
func (c compact) follows(q compact) bool {
	return q.d.first == c.d.first+c.d.cnt && q.d.segs == c.d.segs && q.d.mss == c.d.mss &&
		q.d.snap == c.d.snap && q.d.payload == c.d.payload && q.d.hdrLen == c.d.hdrLen &&
		sameFlow(c.pkt, q.pkt) && string(q.pkt[compactHdr:compactAt]) == string(c.pkt[compactHdr:compactAt]) &&
		string(q.tmpl) == string(c.tmpl)
}

// writeCompact hands the copies of a compact batch, and of the packets in
// next that carry the rest of the same batch, to the kernel: one UDP GSO
// packet of the session's VXLAN units from the source ENI to the target,
// cut into the copies where it is delivered; one packet for a single
// copy, or one at a time where the kernel refuses UDP GSO. It returns how
// many packets it consumed.
func (t *vxlanTUN) writeCompact(c compact, next [][]byte, offset int) (int, error) {
	t.cbuf = append(t.cbuf[:0], c.pkt[:compactHdr]...)
	clearBatchMark(t.cbuf)
	t.cbuf = expandCompact(c, t.cbuf)
	n, copies := 1, c.d.cnt
	for _, b := range next {
		q, ok := parseCompact(b[offset:])
		if !ok || !c.follows(q) {
			break
		}
		t.cbuf = expandCompact(q, t.cbuf)
		c, copies = q, copies+q.d.cnt
		n++
	}
	pkt := t.cbuf
	ip := setGSOLengths(pkt, len(pkt))
	udp := pkt[encap.InnerL4At:]
	binary.BigEndian.PutUint16(udp[4:], uint16(len(pkt)-encap.InnerL4At))
	udp[6], udp[7] = 0, 0
	if copies == 1 {
		return n, t.writeOne(pkt) // no checksum, as IPv4 allows
	}
	if !t.tunnelGSO || t.groOff.Load() {
		return n, t.writeCompactAlone(pkt, c.unit)
	}
	// CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the
	// kernel sums each copy when it cuts the batch.
	binary.BigEndian.PutUint16(udp[6:], encap.PseudoPartial(encap.PseudoBase(ip[12:16], ip[16:20], encap.ProtoUDP), len(pkt)-encap.InnerL4At))
	hdr := t.gsoHdr[:vnetHdrLen]
	clear(hdr)
	putGSOVnet(hdr, vnetGSOUDPL4, compactHdr, c.unit, 6)
	t.iov = append(t.iov[:0], hdr, pkt)
	err := t.writev(t.iov)
	if errors.Is(err, unix.EINVAL) {
		t.refuseGSO("a batch of mirror copies", err)
		udp[6], udp[7] = 0, 0
		return n, t.writeCompactAlone(pkt, c.unit)
	}
	return n, err
}

// writeCompactAlone writes rebuilt copies of unit bytes each one at a
// time, for a kernel that refuses UDP GSO writes: marked as a peer's batch
// of that size, which writeBatchAlone cuts.
func (t *vxlanTUN) writeCompactAlone(pkt []byte, unit int) error {
	pkt[encap.VXLANAt+1] = batchMark
	binary.BigEndian.PutUint16(pkt[encap.VXLANAt+2:], uint16(unit))
	return t.writeBatchAlone(pkt, unit)
}
