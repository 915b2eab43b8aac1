package encap

import (
	"encoding/binary"
	"math/rand"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// gopacketUDP serializes IPv4 + UDP + payload with gopacket computing every
// checksum: the independent reference for ours.
func gopacketUDP(t *testing.T, src, dst net.IP, id uint16, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: id, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5201}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The tuned sum gives gopacket's UDP checksum (pseudo header, header,
// payload of every length and alignment) and its IPv4 header checksum.
func TestChecksumMatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	src, dst := net.IP{198, 18, 0, 11}, net.IP{198, 18, 0, 12}
	ones := make([]byte, 65535-IPv4Len-UDPLen)
	for i := range ones {
		ones[i] = 0xff
	}
	payloads := [][]byte{ones}
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		r.Read(b)
		payloads = append(payloads, b)
	}
	for i, payload := range payloads {
		id := uint16(r.Intn(65536))
		pkt := gopacketUDP(t, src, dst, id, payload)
		ip, udp := append([]byte(nil), pkt[:IPv4Len]...), append([]byte(nil), pkt[IPv4Len:]...)
		wantIP := binary.BigEndian.Uint16(ip[10:])
		ip[10], ip[11] = 0, 0
		if got := Checksum(ip); got != wantIP {
			t.Fatalf("payload %d: IPv4 checksum %#04x, gopacket %#04x", i, got, wantIP)
		}
		base := IPv4BaseSum(ip)
		if got := IPv4Checksum(base, binary.BigEndian.Uint16(ip[2:]), id); got != wantIP {
			t.Fatalf("payload %d: IPv4 checksum from base %#04x, gopacket %#04x", i, got, wantIP)
		}
		wantUDP := binary.BigEndian.Uint16(udp[6:])
		udp[6], udp[7] = 0, 0
		got := Fold(Sum(PseudoHeaderSum(src, dst, ProtoUDP, len(udp)), udp))
		if got != wantUDP {
			t.Fatalf("payload %d (%d bytes): UDP checksum %#04x, gopacket %#04x", i, len(payload), got, wantUDP)
		}
		// The partial form the kernel keeps in a CHECKSUM_PARTIAL
		// packet, completed, gives the same.
		binary.BigEndian.PutUint16(udp[6:], PseudoPartial(PseudoBase(src, dst, ProtoUDP), len(udp)))
		if !CompletePartial(udp, 0, 6) || binary.BigEndian.Uint16(udp[6:]) != wantUDP {
			t.Fatalf("payload %d: completed partial checksum %#04x, gopacket %#04x", i, binary.BigEndian.Uint16(udp[6:]), wantUDP)
		}
	}
}

func TestCompletePartialBounds(t *testing.T) {
	for _, c := range []struct{ n, start, off int }{{10, 10, 0}, {10, 4, 5}, {10, -1, 2}, {10, 2, -3}} {
		if CompletePartial(make([]byte, c.n), c.start, c.off) {
			t.Errorf("len %d start %d offset %d accepted", c.n, c.start, c.off)
		}
	}
}

func BenchmarkChecksum1400(b *testing.B) {
	buf := make([]byte, 1400)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		Checksum(buf)
	}
}

// The per-segment IPv4 checksum from a shared base equals a full one, with
// options too.
func TestIPv4ChecksumFromBase(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	for i := 0; i < 10000; i++ {
		h := make([]byte, 20+4*rng.Intn(11))
		for j := range h {
			h[j] = byte(rng.Intn(256))
		}
		h[0] = 0x40 | byte(len(h)/4)
		h[10], h[11] = 0, 0
		want := Checksum(h)
		totLen := binary.BigEndian.Uint16(h[2:])
		id := binary.BigEndian.Uint16(h[4:])
		base := IPv4BaseSum(h)
		if got := IPv4Checksum(base, totLen, id); got != want {
			t.Fatalf("header %x: %#04x from base, %#04x in full", h, got, want)
		}
	}
}

func TestPseudoPartial(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 10000; i++ {
		a, b := make([]byte, 4), make([]byte, 4)
		rng.Read(a)
		rng.Read(b)
		proto := uint8(rng.Intn(256))
		n := rng.Intn(65536)
		if got, want := PseudoPartial(PseudoBase(a, b, proto), n), ^Fold(PseudoHeaderSum(a, b, proto, n)); got != want {
			t.Fatalf("%x %x %d %d: %#04x, want %#04x", a, b, proto, n, got, want)
		}
	}
}
