package tunnel

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/encap"
)

// TestDeviceCallsDoNotAllocate: the device's reads and writes make no
// garbage per call. A receiving daemon makes tens of thousands of writes a
// second; a closure or an iovec slice per call was most of its garbage,
// and the collections it caused made the heap fault in fresh pages.
func TestDeviceCallsDoNotAllocate(t *testing.T) {
	vt, kernel := seqpacketTUN(t, 0)
	vt.tunnelGSO, vt.gsoHdr = true, make([]byte, vnetHdrLen+encap.InnerL4At+60)
	if err := unix.SetNonblock(kernel, true); err != nil {
		t.Fatal(err)
	}
	// One flow's 12 segments (one coalesced write, more iovecs than a
	// small slice on the stack holds), an ACK (a write of
	// its own).
	var segs [][]byte
	for i := 0; i < 12; i++ {
		pkt := vxlanTCP(bytes.Repeat([]byte{byte(i)}, testMSS), uint32(5000+i*testMSS), tcpFlagACK, false)
		segs = append(segs, append(make([]byte, 16), pkt...))
	}
	ack := append(make([]byte, 16), vxlanTCP(nil, 1, tcpFlagACK, false)...)
	orig := make([][]byte, 0, 13)
	for _, b := range append(segs, ack) {
		orig = append(orig, bytes.Clone(b))
	}
	bufs := append(segs, ack)
	one := [][]byte{ack}
	frame := make([]byte, 65536)
	writes := testing.AllocsPerRun(50, func() {
		for i := range bufs {
			copy(bufs[i], orig[i])
		}
		if n, err := vt.Write(bufs, 16); err != nil || n != len(bufs) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if _, err := vt.Write(one, 16); err != nil {
			t.Fatal(err)
		}
		frames := 0
		for ; ; frames++ { // what the writes queued
			if _, err := unix.Read(kernel, frame); err != nil {
				break
			}
		}
		if frames < 2 || frames > 3 {
			t.Fatalf("%d frames written, want the coalesced one and the ACK's", frames)
		}
	})
	if writes != 0 {
		t.Errorf("%.1f allocations per round of writes, want 0", writes)
	}

	rbufs, sizes := readBufs()
	in := append(make([]byte, vnetHdrLen), vxlanTCP(nil, 7, tcpFlagACK, false)...)
	reads := testing.AllocsPerRun(50, func() {
		if _, err := unix.Write(kernel, in); err != nil {
			t.Fatal(err)
		}
		if n, err := vt.Read(rbufs, sizes, 16); err != nil || n != 1 {
			t.Fatalf("Read = %d, %v", n, err)
		}
	})
	if reads != 0 {
		t.Errorf("%.1f allocations per read, want 0", reads)
	}
}
