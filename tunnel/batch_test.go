package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/encap"
)

const (
	batchMSS  = 1448
	batchSnap = 128
	batchVNI  = 4242
)

// batchSuper is a TCP super-packet of segs segments, the last one short,
// with CWR and PSH|FIN set as a sender's super-packet may have them.
func batchSuper(segs int) []byte {
	payload := make([]byte, (segs-1)*batchMSS+700)
	for i := range payload {
		payload[i] = byte(i*7 + i/batchMSS)
	}
	return vxlanTCP(payload, 1_000_000, tcpFlagACK|tcpFlagPSH|tcpFlagFIN|tcpFlagCWR, true)
}

// compactOf lays out, from a VXLAN TCP super-packet, the compact batch the
// ENI program makes of it (struct mirror_batch_desc in bpf/lib/common.h),
// as the tunnel device hands it over.
func compactOf(super []byte, snap int) []byte {
	frame := super[encap.InnerEthAt:]
	hdrLen := encap.EthLen + 20 + int(frame[46]>>4)*4
	d := batchDesc{mss: batchMSS, snap: snap, payload: len(frame) - hdrLen, hdrLen: hdrLen}
	d.segs = (d.payload + batchMSS - 1) / batchMSS
	d.cnt = d.segs
	pkt := make([]byte, compactAt+descLen)
	ip := pkt[:20]
	ip[0], ip[8], ip[9] = 0x45, 64, encap.ProtoUDP
	copy(ip[12:], []byte{198, 18, 0, 11, 198, 18, 0, 12})
	binary.BigEndian.PutUint16(pkt[22:], encap.VXLANPort)
	vx := pkt[encap.VXLANAt:]
	vx[0], vx[1], vx[6], vx[7] = encap.FlagVNI, compactMark, 77, mirrorMark
	binary.BigEndian.PutUint16(vx[2:], uint16(encap.HeaderLen+snap))
	copy(pkt[encap.InnerEthAt:], []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	in := pkt[encap.InnerIPAt:]
	in[0], in[6], in[8], in[9] = 0x45, 0x40, 64, encap.ProtoUDP
	copy(in[12:], []byte{10, 0, 1, 10, 10, 0, 1, 13})
	binary.BigEndian.PutUint16(pkt[encap.InnerL4At:], 50000)
	binary.BigEndian.PutUint16(pkt[encap.InnerL4At+2:], encap.VXLANPort)
	if err := encap.PutHeader(pkt[compactHdr:compactAt], batchVNI); err != nil {
		panic(err)
	}
	d.put(pkt[compactAt:])
	pkt = append(pkt, frame[:hdrLen]...)
	for i := 0; i < d.segs; i++ {
		at := hdrLen + i*batchMSS
		pkt = append(pkt, frame[at:at+d.pfx(i)]...)
	}
	setGSOLengths(pkt, len(pkt))
	binary.BigEndian.PutUint16(pkt[encap.InnerL4At+4:], uint16(len(pkt)-encap.InnerL4At))
	return pkt
}

// copiesOf is what the session's copies of a super-packet must be: its
// segments as the tunnel's own segmentation (splitVXLAN, checked against
// the kernel's elsewhere) cuts them, each cut to snap bytes of frame
// behind the session's VXLAN header.
func copiesOf(t *testing.T, super []byte, snap int) []byte {
	t.Helper()
	bufs := make([][]byte, maxCopies)
	for i := range bufs {
		bufs[i] = make([]byte, 2000)
	}
	sizes := make([]int, len(bufs))
	n, err := splitVXLAN(super, vnetHdr{gsoType: vnetGSOTunnelV4 | vnetGSOTCPv4, gsoSize: batchMSS}, bufs, sizes, 0, csumPartial)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	vx := make([]byte, encap.HeaderLen)
	if err := encap.PutHeader(vx, batchVNI); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		frame := bufs[i][encap.InnerEthAt:sizes[i]]
		want = append(want, vx...)
		want = append(want, frame[:min(snap, len(frame))]...)
	}
	return want
}

// TestCompactBatchRoundTrip: a compact batch the kernel made of a
// super-packet leaves the sending daemon as tunnel packets of whole
// segments, each at most the MTU, whatever offload state the kernel
// reports and whatever bytes it hands over past the batch; the receiving
// daemon rebuilds from them exactly the copies of the segments that
// segmentation makes, every one once, in order.
func TestCompactBatchRoundTrip(t *testing.T) {
	const mtu = 1440
	for _, tc := range []struct {
		name       string
		segs, snap int
	}{
		{"45 segments cut at 128 bytes", 45, batchSnap},
		{"44 segments cut at 256 bytes", 44, 256},
		{"copies cut inside the TCP header", 30, 60},
		{"two segments", 2, batchSnap},
	} {
		for _, tail := range []int{0, 3000} {
			super := batchSuper(tc.segs)
			want := copiesOf(t, super, tc.snap)
			vt, kernel := seqpacketTUN(t, mtu)
			frame := make([]byte, vnetHdrLen)
			// The cloned super-packet's offload state.
			frame[0], frame[1] = vnetFlagNeedsCsum, vnetGSOTunnelV4|vnetGSOTCPv4
			binary.LittleEndian.PutUint16(frame[4:], batchMSS)
			binary.LittleEndian.PutUint16(frame[6:], 34)
			binary.LittleEndian.PutUint16(frame[8:], 16)
			frame = append(frame, compactOf(super, tc.snap)...)
			frame = append(frame, make([]byte, tail)...)
			if _, err := unix.Write(kernel, frame); err != nil {
				t.Fatal(err)
			}
			bufs, sizes := readBufs()
			n, err := vt.Read(bufs, sizes, 16)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for i := 0; i < n; i++ {
				p := bufs[i][16 : 16+sizes[i]]
				if len(p) > mtu {
					t.Errorf("%s: packet %d of %d bytes, over the MTU %d", tc.name, i, len(p), mtu)
				}
				c, ok := parseCompact(p)
				if !ok {
					t.Fatalf("%s: packet %d is not a compact batch", tc.name, i)
				}
				if encap.Checksum(p[:20]) != 0 || encap.Checksum(p[encap.InnerIPAt:encap.InnerL4At]) != 0 {
					t.Errorf("%s: packet %d: an IPv4 header checksum is wrong", tc.name, i)
				}
				got = expandCompact(c, got)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s, %d bytes past the batch: %d packets rebuilt %d bytes of copies; want the %d bytes segmentation makes",
					tc.name, tail, n, len(got), len(want))
			}
		}
	}
}

// TestWriteCompact: the receiving daemon writes the copies of a batch that
// crossed the tunnel in several packets to its kernel as one UDP GSO
// packet of the session's units, which the kernel cuts into the copies.
func TestWriteCompact(t *testing.T) {
	super := batchSuper(45)
	c, ok := parseCompact(compactOf(super, batchSnap))
	if !ok {
		t.Fatal("not a compact batch")
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2000)
	}
	sizes := make([]int, len(bufs))
	n, err := splitCompact(c, 1440, bufs, sizes, 16)
	if err != nil || n < 2 {
		t.Fatalf("splitCompact = %d, %v", n, err)
	}
	for i := range n {
		bufs[i] = bufs[i][:16+sizes[i]]
	}
	want := copiesOf(t, super, batchSnap)
	vt, r := pipeTUN(t)
	if m, err := vt.Write(bufs[:n], 16); err != nil || m != n {
		t.Fatalf("Write = %d, %v", m, err)
	}
	if w := vt.stats.Writes.Load(); w != 1 {
		t.Fatalf("%d writes for one batch's %d packets, want 1", w, n)
	}
	frame := make([]byte, vnetHdrLen+compactHdr+len(want))
	if _, err := io.ReadFull(r, frame); err != nil {
		t.Fatal(err)
	}
	var h vnetHdr
	h.decode(frame)
	unit := encap.HeaderLen + batchSnap
	if h.gsoType != vnetGSOUDPL4 || int(h.gsoSize) != unit || h.csumStart != encap.InnerL4At || h.csumOffset != 6 ||
		h.flags != vnetFlagNeedsCsum || int(h.hdrLen) != compactHdr {
		t.Fatalf("virtio-net header %+v", h)
	}
	out := frame[vnetHdrLen:]
	if out[encap.VXLANAt+1] != 0 || out[encap.VXLANAt+2] != 0 || out[encap.VXLANAt+3] != 0 {
		t.Error("the batch mark reached the kernel")
	}
	if encap.Checksum(out[:20]) != 0 || int(binary.BigEndian.Uint16(out[2:])) != len(out) ||
		encap.Checksum(out[encap.InnerIPAt:encap.InnerL4At]) != 0 ||
		int(binary.BigEndian.Uint16(out[encap.InnerL4At+4:])) != len(out)-encap.InnerL4At {
		t.Error("lengths or IPv4 checksums of the written batch wrong")
	}
	if !bytes.Equal(out[compactHdr:], want) {
		t.Fatal("written copies differ from the segments' copies")
	}
}

// copyBatchFrame is a batch of n mirror copies of unit bytes each (the
// session's VXLAN header and a cut frame) as the tunnel device hands over
// what GRO merged on the mirror device: one VXLAN-wrapped UDP GSO packet
// from the source ENI to the target, reported with GSO type gsoType.
func copyBatchFrame(n, unit int, gsoType uint8) []byte {
	total := encap.InnerL4At + encap.UDPLen + n*unit
	p := make([]byte, total)
	outer := encap.Outer{Src: netip.MustParseAddr("198.18.0.11"), Dst: netip.MustParseAddr("198.18.0.12"), ID: 9, SrcPort: 50001, VNI: 77}
	if err := encap.PutOuter(p, outer, total-encap.OuterLen); err != nil {
		panic(err)
	}
	p[encap.VXLANAt+7] = mirrorMark
	copy(p[encap.InnerEthAt:], []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	ip := p[encap.InnerIPAt:]
	ip[0], ip[8], ip[9] = 0x45, 64, encap.ProtoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(total-encap.InnerIPAt))
	copy(ip[12:], []byte{10, 0, 1, 10, 10, 0, 1, 13})
	binary.BigEndian.PutUint16(ip[10:], encap.Checksum(ip[:20]))
	udp := p[encap.InnerL4At:]
	binary.BigEndian.PutUint16(udp[0:], 50000)
	binary.BigEndian.PutUint16(udp[2:], encap.VXLANPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(total-encap.InnerL4At))
	for i := 0; i < n; i++ {
		u := udp[encap.UDPLen+i*unit : encap.UDPLen+(i+1)*unit]
		if err := encap.PutHeader(u, batchVNI); err != nil {
			panic(err)
		}
		for j := encap.HeaderLen; j < unit; j++ {
			u[j] = byte(i*31 + j)
		}
	}
	hdr := make([]byte, vnetHdrLen)
	hdr[0], hdr[1] = vnetFlagNeedsCsum, gsoType
	binary.LittleEndian.PutUint16(hdr[4:], uint16(unit))
	binary.LittleEndian.PutUint16(hdr[6:], encap.InnerL4At)
	binary.LittleEndian.PutUint16(hdr[8:], 6)
	return append(hdr, p...)
}

// TestReadCopyBatchReportedAsTCP: a batch of copies of TCP packets reaches
// the daemon with the TCP type bit set beside UDP's (each copy keeps its
// original's bits and GRO adds UDP's), which the kernel reports as TCP. It
// is read by what it holds: the same packets as the batch reported as UDP,
// not a malformed frame lost.
func TestReadCopyBatchReportedAsTCP(t *testing.T) {
	const mtu, n, unit = 1440, 2, 74
	read := func(gsoType uint8) [][]byte {
		vt, kernel := seqpacketTUN(t, mtu)
		if _, err := unix.Write(kernel, copyBatchFrame(n, unit, gsoType)); err != nil {
			t.Fatal(err)
		}
		bufs, sizes := readBufs()
		got, err := vt.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatalf("GSO type %#x: %v", gsoType, err)
		}
		var out [][]byte
		for i := 0; i < got; i++ {
			out = append(out, bufs[i][16:16+sizes[i]])
		}
		return out
	}
	want := read(vnetGSOTunnelV4 | vnetGSOUDPL4)
	if len(want) != 1 {
		t.Fatalf("a batch of %d copies of %d bytes became %d packets, want 1", n, unit, len(want))
	}
	if _, g, ok := mirrorUnit(want[0]); !ok || g != unit {
		t.Fatalf("the packet is not a batch of %d-byte copies (%v, %d)", unit, ok, g)
	}
	got := read(vnetGSOTunnelV4 | vnetGSOTCPv4)
	if len(got) != len(want) || !bytes.Equal(got[0], want[0]) {
		t.Fatalf("reported as TCP, the batch read as %d packets, not the %d it holds", len(got), len(want))
	}
}

// TestTunnelMakesMarkedBatch: a super-packet the ENI program marked for a
// session reads as its segments, unmarked, followed by the compact batch
// of their copies made from the segments in hand: addressed to the
// target's host and from the source ENI to the target, each packet at
// most the MTU, and rebuilding exactly the copies segmentation makes of
// the frame as the source ENI sent it (to the VPC router's MAC). A
// session the tunnel has no target for gets no copies, and they are
// counted.
func TestTunnelMakesMarkedBatch(t *testing.T) {
	const mtu, idx, segs = 1440, 3, 45
	payload := make([]byte, (segs-1)*batchMSS+700)
	for i := range payload {
		payload[i] = byte(i*13 + i/batchMSS)
	}
	// The inner Ethernet header goes to the destination ENI; the source
	// ENI sent the frame to the VPC router, and copies show that.
	super := vxlanTCP(payload, 5_000, tcpFlagACK|tcpFlagPSH, true)
	sent := append([]byte(nil), super...)
	copy(sent[encap.InnerEthAt:], encap.GatewayMAC)
	want := copiesOf(t, sent, batchSnap)
	marked := append([]byte(nil), super...)
	marked[encap.VXLANAt+1] = tunnelBatchMark
	binary.BigEndian.PutUint16(marked[encap.VXLANAt+2:], idx)
	hdr := make([]byte, vnetHdrLen)
	hdr[0], hdr[1] = vnetFlagNeedsCsum, vnetGSOTunnelV4|vnetGSOTCPv4
	binary.LittleEndian.PutUint16(hdr[4:], batchMSS)
	binary.LittleEndian.PutUint16(hdr[6:], encap.InnerL4At)
	binary.LittleEndian.PutUint16(hdr[8:], 16)
	target := MirrorTarget{VNI: batchVNI, Snap: batchSnap, Source: netip.MustParseAddr("10.0.1.10"),
		Target: netip.MustParseAddr("10.0.1.13"), TargetMAC: [6]byte{2, 0, 10, 0, 1, 13}, TargetHost: netip.MustParseAddr("198.18.0.13")}

	read := func(targets mirrorTargets, mtu int) (*vxlanTUN, [][]byte) {
		vt, kernel := seqpacketTUN(t, mtu)
		vt.batches.targets.Store(&targets)
		if _, err := unix.Write(kernel, append(append([]byte(nil), hdr...), marked...)); err != nil {
			t.Fatal(err)
		}
		bufs, sizes := readBufs()
		n, err := vt.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for i := 0; i < n; i++ {
			out = append(out, bufs[i][16:16+sizes[i]])
		}
		return vt, out
	}
	plain := make([][]byte, segs)
	for i := range plain {
		plain[i] = make([]byte, 2000)
	}
	sizes := make([]int, segs)
	if _, err := splitVXLAN(super, vnetHdr{gsoType: vnetGSOTunnelV4 | vnetGSOTCPv4, gsoSize: batchMSS}, plain, sizes, 0, csumPartial); err != nil {
		t.Fatal(err)
	}

	_, got := read(mirrorTargets{idx: target}, mtu)
	if len(got) <= segs {
		t.Fatalf("%d packets read: the %d segments and no copies", len(got), segs)
	}
	for i := 0; i < segs; i++ {
		if !bytes.Equal(got[i], plain[i][:sizes[i]]) {
			t.Fatalf("segment %d differs from the unmarked super-packet's (the mark must not cross)", i)
		}
	}
	var copies []byte
	for i, p := range got[segs:] {
		c, ok := parseCompact(p)
		if !ok {
			t.Fatalf("packet %d after the segments is not a compact batch", i)
		}
		if len(p) > mtu || encap.Checksum(p[:20]) != 0 || encap.Checksum(p[encap.InnerIPAt:encap.InnerL4At]) != 0 {
			t.Fatalf("batch packet %d: %d bytes, or a bad IPv4 checksum", i, len(p))
		}
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatalf("batch packet %d to another host than the segments' is padded", i)
		}
		if netip.AddrFrom4([4]byte(p[16:20])) != target.TargetHost || netip.AddrFrom4([4]byte(p[encap.InnerIPAt+12:encap.InnerIPAt+16])) != target.Source ||
			netip.AddrFrom4([4]byte(p[encap.InnerIPAt+16:encap.InnerIPAt+20])) != target.Target || !bytes.Equal(p[encap.InnerEthAt:encap.InnerEthAt+6], target.TargetMAC[:]) {
			t.Fatalf("batch packet %d is not addressed to the target", i)
		}
		copies = expandCompact(c, copies)
	}
	if !bytes.Equal(copies, want) {
		t.Fatalf("the batch rebuilds %d bytes of copies; want the %d bytes segmentation makes", len(copies), len(want))
	}

	// With segments that fit the MTU, every batch packet but the last is
	// padded to a segment's length, zeros past its IPv4 length, and reads
	// the same.
	same := target
	same.TargetHost = netip.AddrFrom4([4]byte(super[16:20]))
	_, got = read(mirrorTargets{idx: same}, sizes[0])
	var padded []byte
	for i, p := range got[segs:] {
		n := int(binary.BigEndian.Uint16(p[2:]))
		if last := i == len(got)-segs-1; !last && (len(p) != sizes[0] || !bytes.Equal(p[n:], make([]byte, len(p)-n))) {
			t.Fatalf("batch packet %d: %d bytes (IPv4 %d), want %d with zeros after", i, len(p), n, sizes[0])
		}
		c, ok := parseCompact(p)
		if !ok {
			t.Fatalf("padded packet %d is not a compact batch", i)
		}
		padded = expandCompact(c, padded)
	}
	if !bytes.Equal(padded, want) {
		t.Fatal("padded, the batch rebuilds other copies")
	}

	vt, got := read(mirrorTargets{}, mtu)
	if len(got) != segs {
		t.Fatalf("without the session's target: %d packets, want the %d segments alone", len(got), segs)
	}
	if f := vt.batches.failed[idx].Load(); f != segs {
		t.Fatalf("%d copies counted as not made, want %d", f, segs)
	}
}
