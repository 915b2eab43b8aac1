package tunnel

import (
	"encoding/binary"
	"math/rand"
	"testing"
)

// refChecksum is RFC 1071 written the plain way.
func refChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		r.Read(b)
		if got, want := checksum(b), refChecksum(b); got != want {
			t.Fatalf("len %d: checksum %#04x, want %#04x", n, got, want)
		}
	}
	ones := make([]byte, 65535)
	for i := range ones {
		ones[i] = 0xff
	}
	if got, want := checksum(ones), refChecksum(ones); got != want {
		t.Fatalf("all ones: %#04x, want %#04x", got, want)
	}
}

func BenchmarkChecksum1400(b *testing.B) {
	buf := make([]byte, 1400)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		checksum(buf)
	}
}

// The per-segment IPv4 checksum from a shared base equals a full one.
func TestIPv4ChecksumFromBase(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	for i := 0; i < 10000; i++ {
		h := make([]byte, 20+4*rng.Intn(11))
		for j := range h {
			h[j] = byte(rng.Intn(256))
		}
		h[0] = 0x40 | byte(len(h)/4)
		h[10], h[11] = 0, 0
		want := checksum(h)
		totLen := binary.BigEndian.Uint16(h[2:])
		id := binary.BigEndian.Uint16(h[4:])
		base := ipv4BaseSum(h)
		if got := ipv4Checksum(base, totLen, id); got != want {
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
		if got, want := pseudoPartial(pseudoBase(a, b, proto), n), ^csumFold(pseudoHeaderSum(a, b, proto, n)); got != want {
			t.Fatalf("%x %x %d %d: %#04x, want %#04x", a, b, proto, n, got, want)
		}
	}
}
