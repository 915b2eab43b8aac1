package tunnel

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// A packet longer than the MTU comes out of Read in a batch of its own, in
// its place in the queue, so wireguard-go never puts it into one UDP GSO
// send with others (the kernel would refuse the whole send).
func TestReadOversizeAlone(t *testing.T) {
	const mtu = 1440
	vt, kernel := seqpacketTUN(t, mtu)
	small := func(i int) []byte { return vxlanTCP(make([]byte, 100), uint32(i), tcpFlagACK, false) }
	big := func(i int) []byte { return vxlanTCP(make([]byte, 1500), uint32(i), tcpFlagACK, false) }
	if n := len(big(0)); n <= mtu {
		t.Fatalf("test packet of %d bytes fits the MTU", n)
	}
	queue := [][]byte{small(0), small(1), big(2), small(3), big(4), big(5)}
	for _, pkt := range queue {
		if _, err := unix.Write(kernel, append(make([]byte, vnetHdrLen), pkt...)); err != nil {
			t.Fatal(err)
		}
	}
	wantBatches := [][][]byte{{queue[0], queue[1]}, {queue[2]}, {queue[3]}, {queue[4]}, {queue[5]}}
	bufs, sizes := readBufs()
	for b, want := range wantBatches {
		n, err := vt.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(want) {
			t.Fatalf("read %d returned %d packets, want %d", b, n, len(want))
		}
		for i := range want {
			if !bytes.Equal(bufs[i][16:16+sizes[i]], want[i]) {
				t.Fatalf("read %d: packet %d differs", b, i)
			}
		}
	}
}
