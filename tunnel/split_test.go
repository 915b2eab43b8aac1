package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/encap"
)

const testMSS = 1338

// vxlanTCP builds a VXLAN packet (outer IPv4/UDP/VXLAN, inner Ethernet,
// IPv4, TCP with 12 bytes of options) carrying payload at seq, with valid
// checksums (or, when partial, the inner TCP field holding the pseudo
// header sum, as the kernel hands CHECKSUM_PARTIAL packets over).
func vxlanTCP(payload []byte, seq uint32, flags uint8, partial bool) []byte {
	const tcpLen = 32
	total := encap.InnerL4At + tcpLen + len(payload)
	p := make([]byte, total)
	outer := encap.Outer{Src: netip.MustParseAddr("198.18.0.11"), Dst: netip.MustParseAddr("198.18.0.12"), ID: 100, SrcPort: 50000, VNI: 1001}
	if err := encap.PutOuter(p, outer, total-encap.OuterLen); err != nil {
		panic(err)
	}
	copy(p[encap.InnerEthAt:], []byte{2, 0, 10, 0, 1, 12, 2, 0, 10, 0, 1, 10})
	binary.BigEndian.PutUint16(p[encap.InnerEthAt+12:], encap.EtherTypeIPv4)
	ip := p[encap.InnerIPAt:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(total-encap.InnerIPAt))
	binary.BigEndian.PutUint16(ip[4:], 7)
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	copy(ip[12:], []byte{10, 0, 1, 10, 10, 0, 1, 12})
	binary.BigEndian.PutUint16(ip[10:], encap.Checksum(ip[:20]))
	tcp := p[encap.InnerL4At:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 77)
	tcp[12] = (tcpLen / 4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 500)
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(tcp[tcpLen:], payload)
	ps := encap.PseudoHeaderSum(ip[12:16], ip[16:20], 6, total-encap.InnerL4At)
	if partial {
		binary.BigEndian.PutUint16(tcp[16:], ^encap.Fold(ps))
	} else {
		binary.BigEndian.PutUint16(tcp[16:], encap.Fold(encap.Sum(ps, tcp)))
	}
	return p
}

// checkTCPSegment verifies every checksum and length of a VXLAN TCP packet.
func checkTCPSegment(t *testing.T, p []byte) (seq uint32, flags uint8, payload []byte) {
	t.Helper()
	if encap.Checksum(p[:20]) != 0 {
		t.Fatal("outer IPv4 checksum wrong")
	}
	if int(binary.BigEndian.Uint16(p[2:])) != len(p) || int(binary.BigEndian.Uint16(p[24:])) != len(p)-20 {
		t.Fatal("outer lengths wrong")
	}
	ip := p[encap.InnerIPAt:]
	if encap.Checksum(ip[:20]) != 0 || int(binary.BigEndian.Uint16(ip[2:])) != len(p)-encap.InnerIPAt {
		t.Fatal("inner IPv4 header wrong")
	}
	tcp := p[encap.InnerL4At:]
	var ph [12]byte
	copy(ph[:8], ip[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
	if encap.Checksum(append(ph[:], tcp...)) != 0 {
		t.Fatal("inner TCP checksum wrong")
	}
	return binary.BigEndian.Uint32(tcp[4:]), tcp[13], tcp[int(tcp[12]>>4)*4:]
}

func TestSplitVXLAN(t *testing.T) {
	payload := make([]byte, 5000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	super := vxlanTCP(payload, 1000, tcpFlagACK|tcpFlagPSH|tcpFlagFIN, true)
	h := vnetHdr{flags: vnetFlagNeedsCsum, gsoType: vnetGSOTunnelV4 | vnetGSOTCPv4, gsoSize: testMSS,
		hdrLen: encap.InnerL4At + 32, csumStart: encap.InnerL4At, csumOffset: 16}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 16+2000)
	}
	sizes := make([]int, len(bufs))
	n, err := splitVXLAN(super, h, bufs, sizes, 16, csumFull)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("%d segments, want 4", n)
	}
	var got []byte
	ids := map[uint16]bool{}
	for i := 0; i < n; i++ {
		seg := bufs[i][16 : 16+sizes[i]]
		seq, flags, pl := checkTCPSegment(t, seg)
		if want := uint32(1000 + i*testMSS); seq != want {
			t.Errorf("segment %d: seq %d, want %d", i, seq, want)
		}
		last := i == n-1
		if (flags&(tcpFlagFIN|tcpFlagPSH) != 0) != last {
			t.Errorf("segment %d: flags %#x (FIN/PSH only on the last)", i, flags)
		}
		ids[binary.BigEndian.Uint16(seg[4:])] = true
		got = append(got, pl...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload not preserved across segments")
	}
	if len(ids) != n {
		t.Error("outer IPv4 IDs repeat across segments")
	}
	// Not a tunnel GSO type: refused, not mangled.
	h.gsoType = vnetGSOTCPv4
	if _, err := splitVXLAN(super, h, bufs, sizes, 16, csumFull); err == nil {
		t.Fatal("plain TCP GSO accepted as VXLAN")
	}
}

// pipeTUN is a vxlanTUN whose writes go into a pipe the test reads.
func pipeTUN(t *testing.T) (*vxlanTUN, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	sc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return &vxlanTUN{raw: sc, tunnelGSO: true, gsoHdr: make([]byte, vnetHdrLen+encap.InnerL4At+60)}, r
}

func TestWriteCoalescesOneFlow(t *testing.T) {
	vt, r := pipeTUN(t)
	var bufs [][]byte
	var payload []byte
	for i := 0; i < 5; i++ {
		pl := bytes.Repeat([]byte{byte(i + 1)}, testMSS)
		flags := uint8(tcpFlagACK)
		if i == 4 {
			pl = pl[:100]
			flags |= tcpFlagPSH
		}
		payload = append(payload, pl...)
		pkt := vxlanTCP(pl, uint32(5000+i*testMSS), flags, false)
		bufs = append(bufs, append(make([]byte, 16), pkt...))
	}
	if n, err := vt.Write(bufs, 16); err != nil || n != 5 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	w := vt.stats.Writes.Load()
	if w != 1 {
		t.Fatalf("%d writes for one flow's 5 segments, want 1", w)
	}
	want := vnetHdrLen + encap.InnerL4At + 32 + len(payload)
	frame := make([]byte, want)
	if _, err := io.ReadFull(r, frame); err != nil {
		t.Fatal(err)
	}
	var h vnetHdr
	h.decode(frame)
	if h.gsoType != vnetGSOTCPv4 || h.gsoSize != testMSS || h.csumStart != encap.InnerL4At || h.csumOffset != 16 ||
		h.flags != vnetFlagNeedsCsum || int(h.hdrLen) != encap.InnerL4At+32 {
		t.Fatalf("virtio-net header %+v", h)
	}
	pkt := frame[vnetHdrLen:]
	if encap.Checksum(pkt[:20]) != 0 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
		t.Fatal("outer header of the coalesced packet wrong")
	}
	ip := pkt[encap.InnerIPAt:]
	if encap.Checksum(ip[:20]) != 0 || int(binary.BigEndian.Uint16(ip[2:])) != len(pkt)-encap.InnerIPAt {
		t.Fatal("inner IPv4 header of the coalesced packet wrong")
	}
	tcp := pkt[encap.InnerL4At:]
	if tcp[13]&tcpFlagPSH == 0 {
		t.Error("PSH of the last segment lost")
	}
	// CHECKSUM_PARTIAL: completing the sum over the segment gives a valid
	// checksum.
	if !encap.CompletePartial(pkt, encap.InnerL4At, 16) {
		t.Fatal("checksum field outside the packet")
	}
	checkTCPSegment(t, pkt)
	if !bytes.Equal(tcp[32:], payload) {
		t.Fatal("coalesced payload differs")
	}
}

func TestWriteDoesNotCoalesceAcrossGaps(t *testing.T) {
	vt, r := pipeTUN(t)
	pl := bytes.Repeat([]byte{9}, testMSS)
	a := vxlanTCP(pl, 1, tcpFlagACK, false)
	b := vxlanTCP(pl, 1+2*testMSS, tcpFlagACK, false) // a segment is missing
	c := vxlanTCP(nil, 1, tcpFlagACK, false)          // pure ACK
	bufs := [][]byte{a, b, c}
	if n, err := vt.Write(bufs, 0); err != nil || n != 3 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w := vt.stats.Writes.Load(); w != 3 {
		t.Fatalf("%d writes, want 3 (nothing may be merged)", w)
	}
	for _, p := range bufs {
		frame := make([]byte, vnetHdrLen+len(p))
		if _, err := io.ReadFull(r, frame); err != nil {
			t.Fatal(err)
		}
		if frame[1] != vnetGSONone || !bytes.Equal(frame[vnetHdrLen:], p) {
			t.Fatal("a packet was changed on its way through")
		}
	}
}

// readBufs is room for a Read: wireguard-go's 128 buffers, each at offset
// 16, and their sizes.
func readBufs() ([][]byte, []int) {
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, 2000)
	}
	return bufs, make([]int, len(bufs))
}

// seqpacketTUN is a draining vxlanTUN with the given MTU that reads its
// frames (virtio-net header first) from a socket pair, as from a TUN's
// queue; kernel is the other end, for the test to write frames to.
func seqpacketTUN(t *testing.T, mtu int) (vt *vxlanTUN, kernel int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	unix.SetNonblock(fds[0], true)
	f := os.NewFile(uintptr(fds[0]), "seqpacket")
	t.Cleanup(func() { f.Close() })
	sc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return &vxlanTUN{file: f, raw: sc, rawRead: sc, draining: true, mtu: mtu, rbuf: make([]byte, vnetHdrLen+65536),
		canHold: f.SetReadDeadline(time.Time{}) == nil}, fds[1]
}

// TestReadDrainsQueuedFrames: one Read returns every frame already queued
// (ACKs arrive one frame each), not one frame per call.
func TestReadDrainsQueuedFrames(t *testing.T) {
	vt, kernel := seqpacketTUN(t, 0)
	var want [][]byte
	for i := 0; i < 3; i++ {
		pkt := vxlanTCP(nil, uint32(i), tcpFlagACK, false)
		want = append(want, pkt)
		if _, err := unix.Write(kernel, append(make([]byte, vnetHdrLen), pkt...)); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes := readBufs()
	n, err := vt.Read(bufs, sizes, 16)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("Read returned %d packets, want the 3 queued", n)
	}
	for i := range want {
		if !bytes.Equal(bufs[i][16:16+sizes[i]], want[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
}

// FuzzSplitVXLAN: any frame the kernel could hand over, with any GSO
// header, splits into well-formed segments or is refused; never a panic,
// never a segment past its buffer.
func FuzzSplitVXLAN(f *testing.F) {
	f.Add(vxlanTCP(make([]byte, 3000), 1, tcpFlagACK, true), uint16(testMSS), uint8(vnetGSOTunnelV4|vnetGSOTCPv4))
	f.Add(vxlanTCP(nil, 1, tcpFlagACK, true), uint16(1), uint8(vnetGSOTunnelV4|vnetGSOUDPL4))
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16, gso uint8) {
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 16+1600)
		}
		sizes := make([]int, len(bufs))
		n, err := splitVXLAN(pkt, vnetHdr{gsoType: gso, gsoSize: mss}, bufs, sizes, 16, csumFull)
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			if sizes[i] <= 0 || 16+sizes[i] > len(bufs[i]) {
				t.Fatalf("segment %d has size %d", i, sizes[i])
			}
		}
	})
}

// FuzzParseGRO: the receive path's parser takes any decrypted packet;
// whatever it accepts is consistent with the packet.
func FuzzParseGRO(f *testing.F) {
	f.Add(vxlanTCP([]byte("payload"), 7, tcpFlagACK, false))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		g, ok := parseGRO(pkt)
		if !ok {
			return
		}
		if g.payload <= 0 || encap.InnerL4At+g.tcpLen+g.payload != len(pkt) {
			t.Fatalf("accepted %d bytes as %d+%d+%d", len(pkt), encap.InnerL4At, g.tcpLen, g.payload)
		}
	})
}

// With fullCsum false the inner TCP checksums are left partial: completing
// them as the receiving kernel would gives exactly the full split.
func TestSplitVXLANPartialChecksum(t *testing.T) {
	payload := make([]byte, 4321)
	for i := range payload {
		payload[i] = byte(i*13 + 1)
	}
	super := vxlanTCP(payload, 77, tcpFlagACK|tcpFlagPSH, false)
	h := vnetHdr{flags: vnetFlagNeedsCsum, gsoType: vnetGSOTunnelV4 | vnetGSOTCPv4, gsoSize: testMSS,
		hdrLen: encap.InnerL4At + 32, csumStart: encap.InnerL4At, csumOffset: 16}
	mk := func() ([][]byte, []int) {
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, 2000)
		}
		return bufs, make([]int, 8)
	}
	full, fsizes := mk()
	part, psizes := mk()
	n, err := splitVXLAN(super, h, full, fsizes, 0, csumFull)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := splitVXLAN(super, h, part, psizes, 0, csumPartial); err != nil || m != n {
		t.Fatalf("partial split: %d segments, %v; want %d", m, err, n)
	}
	for i := 0; i < n; i++ {
		f, p := full[i][:fsizes[i]], part[i][:psizes[i]]
		at, ok := innerTCP(p)
		if !ok {
			t.Fatalf("segment %d: not a VXLAN TCP packet", i)
		}
		if bytes.Equal(f, p) {
			t.Fatalf("segment %d: partial split summed the payload", i)
		}
		if !encap.CompletePartial(p, at, 16) {
			t.Fatal("checksum field outside the packet")
		}
		if !bytes.Equal(f, p) {
			t.Fatalf("segment %d: completed partial checksum differs from the full one", i)
		}
	}
}

// TestReadSurvivesMalformedFrame: a frame the daemon cannot read is lost
// and counted, and Read returns no error for it (wireguard-go closes the
// whole device on one) but reads on: the next frame reads as usual.
func TestReadSurvivesMalformedFrame(t *testing.T) {
	vt, kernel := seqpacketTUN(t, 1440)
	bad := make([]byte, vnetHdrLen)
	bad[1] = vnetGSOTunnelV4 | vnetGSOTCPv4 // and a segment size of 0
	bad = append(bad, vxlanTCP(make([]byte, 3000), 1, tcpFlagACK, true)...)
	good := vxlanTCP(nil, 2, tcpFlagACK, false)
	if _, err := unix.Write(kernel, bad); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := readBufs()
	go func() {
		// After Read has taken the bad frame: it must wait for this one.
		for end := time.Now().Add(10 * time.Second); vt.stats.ReadErrors.Load() == 0 && time.Now().Before(end); {
			runtime.Gosched()
		}
		unix.Write(kernel, append(make([]byte, vnetHdrLen), good...))
	}()
	n, err := vt.Read(bufs, sizes, 16)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][16:16+sizes[0]], good) {
		t.Fatalf("Read after a malformed frame: %d packets, %v; want the good frame and no error", n, err)
	}
	if e := vt.stats.ReadErrors.Load(); e != 1 {
		t.Fatalf("%d read errors counted, want 1", e)
	}
}
