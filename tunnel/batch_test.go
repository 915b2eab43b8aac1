package tunnel

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/encap"
)

// kernelBatchPacket lays out a batch of mirror copies as the ENI program
// hands it to the tunnel device (struct mirror_batch in bpf/lib/common.h):
// the VPC's VXLAN headers with the mirror and batch marks, the copies'
// IPv4 and UDP header, then the units, all of size g but the last.
func kernelBatchPacket(units []byte, g int) []byte {
	pkt := make([]byte, encap.InnerL4At+encap.UDPLen+len(units))
	ip := pkt[:20]
	ip[0], ip[8], ip[9] = 0x45, 64, encap.ProtoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(pkt)))
	copy(ip[12:], []byte{198, 18, 0, 11, 198, 18, 0, 12})
	binary.BigEndian.PutUint16(pkt[22:], 4789)
	binary.BigEndian.PutUint16(pkt[24:], uint16(len(pkt)-20))
	vx := pkt[encap.VXLANAt:]
	vx[0], vx[1] = encap.FlagVNI, batchMark
	binary.BigEndian.PutUint16(vx[2:], uint16(g))
	vx[4], vx[5], vx[6], vx[7] = 0, 0, 77, mirrorMark
	eth := pkt[encap.VXLANAt+8:]
	copy(eth, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	in := pkt[encap.InnerIPAt:]
	in[0], in[6], in[8], in[9] = 0x45, 0x40, 64, encap.ProtoUDP
	binary.BigEndian.PutUint16(in[2:], uint16(len(pkt)-encap.InnerIPAt))
	copy(in[12:], []byte{10, 0, 1, 10, 10, 0, 1, 13})
	udp := pkt[encap.InnerL4At:]
	binary.BigEndian.PutUint16(udp[0:], 50000)
	binary.BigEndian.PutUint16(udp[2:], 4789)
	binary.BigEndian.PutUint16(udp[4:], uint16(encap.UDPLen+len(units)))
	copy(pkt[encap.InnerL4At+encap.UDPLen:], units)
	return pkt
}

// TestReadKernelBatch: a batch of copies the kernel made of a super-packet
// leaves the daemon as tunnel packets of whole copies, each at most the
// MTU and marked with the copy size when it holds several: every copy
// once, in order, whatever offload state the kernel reports for it and
// whatever it hands over after the batch's IPv4 length.
func TestReadKernelBatch(t *testing.T) {
	const mtu, g, copies = 1440, 136, 45
	units := make([]byte, g*(copies-1)+70) // the last copy is shorter
	for i := range units {
		units[i] = byte(i * 7)
	}
	for _, tail := range []int{0, 3000} {
		vt, kernel := seqpacketTUN(t, mtu)
		frame := make([]byte, vnetHdrLen)
		// The cloned super-packet's offload state: TCP GSO in a UDP
		// tunnel, checksum partial at a place that is not the copies'.
		frame[0], frame[1] = vnetFlagNeedsCsum, vnetGSOTunnelV4|vnetGSOTCPv4
		binary.LittleEndian.PutUint16(frame[4:], 1448)
		binary.LittleEndian.PutUint16(frame[6:], 34)
		binary.LittleEndian.PutUint16(frame[8:], 16)
		frame = append(frame, kernelBatchPacket(units, g)...)
		frame = append(frame, make([]byte, tail)...)
		if _, err := unix.Write(kernel, frame); err != nil {
			t.Fatal(err)
		}
		bufs := make([][]byte, 128)
		for i := range bufs {
			bufs[i] = make([]byte, 2000)
		}
		sizes := make([]int, len(bufs))
		n, err := vt.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for i := 0; i < n; i++ {
			p := bufs[i][16 : 16+sizes[i]]
			if len(p) > mtu {
				t.Errorf("tail %d: packet %d of %d bytes, over the MTU %d", tail, i, len(p), mtu)
			}
			payload, pg, ok := mirrorUnit(p)
			if !ok {
				t.Fatalf("tail %d: packet %d is not a copy or batch of copies: % x", tail, i, p[:encap.InnerL4At+encap.UDPLen])
			}
			if payload > g && pg != g {
				t.Errorf("tail %d: packet %d holds %d bytes of copies, marked with copy size %d", tail, i, payload, pg)
			}
			got = append(got, p[encap.InnerL4At+encap.UDPLen:]...)
		}
		if n < 2 || !bytes.Equal(got, units) {
			t.Fatalf("tail %d: %d packets carried %d bytes of copies; want all %d, in order", tail, n, len(got), len(units))
		}
	}
}
