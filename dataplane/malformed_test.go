package dataplane

import (
	"encoding/binary"
	"testing"
)

// TestENIMalformedPackets feeds the ENI program (both hooks) broken and odd
// frames: every truncation of valid frames, bad header lengths, VLAN tags,
// IPv6 with extension headers. A broken frame must never be forwarded; an
// odd but valid one (IP options, a fragment, zero-length UDP) must go
// exactly where its intact twin goes.
func TestENIMalformedPackets(t *testing.T) {
	d := testDatapath(t)
	udp0 := make([]byte, 8)
	binary.BigEndian.PutUint16(udp0[0:], 5000)
	binary.BigEndian.PutUint16(udp0[2:], 53)
	binary.BigEndian.PutUint16(udp0[4:], 8)
	valid := map[string][]byte{
		"icmp to a local ENI": ipv4Packet(macA, GatewayMAC, ipA, ipB, 1, false, icmpEcho(32)),
		"tcp SYN to a remote": tcpSegment(ipA, ipR, 40000, 443, 0x02),
		"udp to a remote":     ipv4Packet(macA, GatewayMAC, ipA, ipR, 17, false, udp0),
	}
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) {
			for name, pkt := range valid {
				want, _ := h.run(t, append([]byte(nil), pkt...))
				if want != "redirect" {
					t.Fatalf("%s: intact frame not forwarded (%s)", name, want)
				}
				// BPF_PROG_TEST_RUN gives tc no IPv4 frame shorter than an
				// IPv4 header; XDP gets every length from an Ethernet header.
				first := 14
				if h.name == "tc" {
					first = 34
				}
				for n := first; n < len(pkt); n++ {
					if got, _ := h.run(t, append([]byte(nil), pkt[:n]...)); got != "drop" {
						t.Errorf("%s truncated to %d of %d bytes: %s, want drop", name, n, len(pkt), got)
					}
				}
			}
			base := valid["icmp to a local ENI"]
			mutate := func(f func(p []byte) []byte) []byte { return f(append([]byte(nil), base...)) }
			broken := map[string][]byte{
				"IHL 4":                           mutate(func(p []byte) []byte { p[14] = 0x44; return p }),
				"IHL 15 beyond the packet":        mutate(func(p []byte) []byte { p[14] = 0x4f; return p }),
				"IPv4 version 6 in an IPv4 frame": mutate(func(p []byte) []byte { p[14] = 0x65; return p }),
				"total length beyond the frame": mutate(func(p []byte) []byte {
					binary.BigEndian.PutUint16(p[16:], uint16(len(p)))
					return p
				}),
				"VLAN tag": mutate(func(p []byte) []byte {
					return append(append(p[:12:12], 0x81, 0x00, 0x00, 0x07), base[12:]...)
				}),
				"IPv6 with a hop-by-hop header": func() []byte {
					p := make([]byte, 14+40+8+8)
					copy(p[0:6], GatewayMAC)
					copy(p[6:12], macA)
					binary.BigEndian.PutUint16(p[12:], 0x86dd)
					p[14], p[20] = 0x60, 0 // next header: hop-by-hop
					return p
				}(),
			}
			for name, pkt := range broken {
				if got, _ := h.run(t, pkt); got != "drop" {
					t.Errorf("%s: %s, want drop", name, got)
				}
			}
			// Odd but valid: forwarded exactly like the intact frame.
			withOptions := func() []byte {
				p := append([]byte(nil), base[:34]...)
				p[14] = 0x46                // IHL 6: 4 bytes of options
				p = append(p, 1, 1, 1, 0)   // NOP, NOP, NOP, EOL
				p = append(p, base[34:]...) // the ICMP message
				binary.BigEndian.PutUint16(p[16:], uint16(len(p)-14))
				p[24], p[25] = 0, 0
				binary.BigEndian.PutUint16(p[24:], checksum(p[14:38]))
				return p
			}()
			fragment := mutate(func(p []byte) []byte {
				binary.BigEndian.PutUint16(p[20:], 0x2000) // MF
				p[24], p[25] = 0, 0
				binary.BigEndian.PutUint16(p[24:], checksum(p[14:34]))
				return p
			})
			zeroUDP := func() []byte {
				u := make([]byte, 8)
				binary.BigEndian.PutUint16(u[0:], 5000)
				binary.BigEndian.PutUint16(u[2:], 53) // length field 0
				return ipv4Packet(macA, GatewayMAC, ipA, ipB, 17, false, u)
			}()
			for name, pkt := range map[string][]byte{"IP options": withOptions, "a first fragment": fragment, "zero-length UDP": zeroUDP} {
				got, out := h.run(t, pkt)
				if got != "redirect" || string(out[0:6]) != string(macB) {
					t.Errorf("%s: %s to %x, want redirect to ENI b", name, got, out[0:6])
				}
			}
		})
	}
}
