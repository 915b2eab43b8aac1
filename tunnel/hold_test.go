package tunnel

import (
	"bytes"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/encap"
)

// singleCopy is a frame from the kernel holding one mirror copy of unit
// bytes (VXLAN header and copied frame), its last byte k.
func singleCopy(unit int, k byte) []byte {
	f := copyBatchFrame(1, unit, vnetGSONone)
	f[len(f)-1] = k
	return f
}

// readAll reads from vt until it has returned want packets.
func readAll(t *testing.T, vt *vxlanTUN, want int) [][]byte {
	t.Helper()
	bufs, sizes := readBufs()
	var out [][]byte
	for len(out) < want {
		n, err := vt.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("Read returned an empty batch")
		}
		for i := 0; i < n; i++ {
			out = append(out, append([]byte(nil), bufs[i][16:16+sizes[i]]...))
		}
	}
	if len(out) != want {
		t.Fatalf("read %d packets, want %d", len(out), want)
	}
	return out
}

// written is what vt writes to the kernel for pkts, given in one Write.
func written(t *testing.T, pkts [][]byte) []byte {
	t.Helper()
	vt, r := pipeTUN(t)
	var bufs [][]byte
	for _, p := range pkts {
		bufs = append(bufs, append(make([]byte, 16), p...))
	}
	if n, err := vt.Write(bufs, 16); err != nil || n != len(pkts) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w := vt.stats.Writes.Load(); w != 1 {
		t.Fatalf("%d writes, want 1", w)
	}
	frame := make([]byte, 65536)
	n, err := r.Read(frame)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return frame[:n]
}

// TestReadHoldsSingleCopies: single mirror copies read from the kernel are
// held and leave as few packets: the copies of one session and size
// together, as a batch the receiving vpcd writes to its kernel exactly as
// it would have written the copies sent one by one. Traffic is never
// held, and a copy of another size does not end a run.
func TestReadHoldsSingleCopies(t *testing.T) {
	const mtu, a, b, c = 1440, 74, 90, 110
	frames := [][]byte{
		singleCopy(a, 1), singleCopy(b, 1), singleCopy(a, 2),
		append(make([]byte, vnetHdrLen), vxlanTCP(nil, 7, tcpFlagACK, false)...),
		singleCopy(a, 3), singleCopy(b, 2), singleCopy(a, 4), singleCopy(a, 5),
		singleCopy(c, 1),
	}
	send := func(kernel int) {
		for _, f := range frames {
			if _, err := unix.Write(kernel, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The same frames read by a device that holds nothing (no MTU).
	plain, pk := seqpacketTUN(t, 0)
	send(pk)
	singles := readAll(t, plain, len(frames))
	if h := plain.stats.CopiesHeld.Load(); h != 0 {
		t.Fatalf("a device with no MTU held %d copies", h)
	}

	vt, kernel := seqpacketTUN(t, mtu)
	send(kernel)
	got := readAll(t, vt, 4)
	if !bytes.Equal(got[0], singles[3]) {
		t.Fatal("the first packet read is not the traffic, unchanged")
	}
	if h := vt.stats.CopiesHeld.Load(); h != 8 {
		t.Fatalf("%d copies held, want 8", h)
	}
	runs := map[int][][]byte{a: {singles[0], singles[2], singles[4], singles[6], singles[7]}, b: {singles[1], singles[5]}}
	lone := false
	for _, p := range got[1:] {
		if bytes.Equal(p, singles[8]) {
			lone = true // a copy alone leaves as it came
			continue
		}
		payload, g, ok := mirrorUnit(p)
		if !ok || g == 0 {
			t.Fatalf("a held run left as %d bytes, not as a batch of copies", len(p))
		}
		want, found := runs[g]
		if !found || payload != len(want)*g {
			t.Fatalf("a batch of %d bytes of %d-byte copies; want %d copies", payload, g, len(want))
		}
		delete(runs, g)
		if len(p) > mtu {
			t.Fatalf("a batch of %d bytes exceeds the MTU", len(p))
		}
		if !bytes.Equal(written(t, [][]byte{p}), written(t, want)) {
			t.Fatalf("the batch of %d-byte copies is written unlike the copies themselves", g)
		}
	}
	if !lone || len(runs) != 0 {
		t.Fatalf("the lone copy left unchanged: %v; runs never read: %d", lone, len(runs))
	}
	if vt.copies.held() {
		t.Fatal("runs still held")
	}
	// A copy too long for another of its size to share its packet is not
	// held.
	if _, ok := holdable(singleCopy(700, 0)[vnetHdrLen:], mtu); ok {
		t.Fatal("a 700-byte copy is held at MTU 1440")
	}
}

// TestHoldFillsToMTU: a run leaves as soon as no further copy fits the MTU,
// and a copy that fits no run takes the oldest run's place.
func TestHoldFillsToMTU(t *testing.T) {
	const mtu, unit = 600, 100
	var c copyHolds
	bufs := [][]byte{make([]byte, 2000), make([]byte, 2000)}
	sizes := make([]int, 2)
	pkt := singleCopy(unit, 0)[vnetHdrLen:]
	head := encap.InnerL4At + encap.UDPLen
	per := (mtu - head) / unit
	var now testClock
	for i := 1; i < per; i++ {
		if n := c.add(pkt, unit, mtu, now.tick(), bufs, sizes, 0); n != 0 {
			t.Fatalf("copy %d: %d packets out before the run is full", i, n)
		}
	}
	if n := c.add(pkt, unit, mtu, now.tick(), bufs, sizes, 0); n != 1 || sizes[0] != head+per*unit {
		t.Fatalf("the copy that fills the run: %d packets out (%d bytes), want 1 of %d", n, sizes[0], head+per*unit)
	}
	// Runs of holdSlots other sizes, then one more: the oldest leaves.
	for i := 0; i < holdSlots; i++ {
		p := singleCopy(unit+1+i, 0)[vnetHdrLen:]
		if n := c.add(p, unit+1+i, mtu, now.tick(), bufs, sizes, 0); n != 0 {
			t.Fatalf("run %d: %d packets out", i, n)
		}
	}
	p := singleCopy(unit+9, 0)[vnetHdrLen:]
	if n := c.add(p, unit+9, mtu, now.tick(), bufs, sizes, 0); n != 1 || sizes[0] != head+unit+1 {
		t.Fatalf("a fifth size: %d packets out (%d bytes), want the oldest run's one copy of %d", n, sizes[0], unit+1)
	}
	if n := heldRuns(&c); n != holdSlots {
		t.Fatalf("%d runs held, want %d", n, holdSlots)
	}
	if n := c.flushDue(now.tick().Add(holdFor), bufs, sizes, 0); n != 2 {
		t.Fatalf("%d runs due written into room for 2", n)
	}
}

// testClock is a clock that moves a microsecond at each look.
type testClock struct{ t time.Time }

func (c *testClock) tick() time.Time {
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

// TestWriteTrafficBeforeCopies: copies received between a flow's segments
// do not cut the flow's run: its segments still go to the kernel as one
// super-packet, and the copies after it.
func TestWriteTrafficBeforeCopies(t *testing.T) {
	vt, r := pipeTUN(t)
	var bufs [][]byte
	var payload []byte
	for i := 0; i < 4; i++ {
		pl := bytes.Repeat([]byte{byte(i + 1)}, testMSS)
		payload = append(payload, pl...)
		bufs = append(bufs, append(make([]byte, 16), vxlanTCP(pl, uint32(9000+i*testMSS), tcpFlagACK, false)...))
		if i == 1 {
			bufs = append(bufs, append(make([]byte, 16), singleCopy(74, 9)[vnetHdrLen:]...))
		}
	}
	if n, err := vt.Write(bufs, 16); err != nil || n != 5 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w := vt.stats.Writes.Load(); w != 2 {
		t.Fatalf("%d writes for 4 segments of one flow and a copy between them, want 2", w)
	}
	frame := make([]byte, vnetHdrLen+encap.InnerL4At+32+len(payload))
	if _, err := io.ReadFull(r, frame); err != nil {
		t.Fatal(err)
	}
	var h vnetHdr
	h.decode(frame)
	if h.gsoType != vnetGSOTCPv4 || !bytes.Equal(frame[vnetHdrLen+encap.InnerL4At+32:], payload) {
		t.Fatalf("the first write is not the 4 segments as one super-packet (%+v)", h)
	}
	cp := bufs[2][16:]
	frame = make([]byte, vnetHdrLen+len(cp))
	if _, err := io.ReadFull(r, frame); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(frame[vnetHdrLen+encap.InnerL4At+encap.UDPLen:], cp[encap.InnerL4At+encap.UDPLen:]) {
		t.Fatal("the second write is not the copy")
	}
}

// heldRuns counts the runs holding copies.
func heldRuns(c *copyHolds) int {
	n := 0
	for i := range c.runs {
		if c.runs[i].n > 0 {
			n++
		}
	}
	return n
}
