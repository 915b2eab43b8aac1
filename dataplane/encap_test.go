package dataplane

import (
	"encoding/binary"
	"testing"

	"github.com/vpcd/vpcd/encap"
)

// The ENI program's outer headers are what encap computes in Go: the
// VXLAN source port from encap.FlowHash and encap.SourcePort (one port for
// a flow's first packet, which takes the slow path, and the packets after,
// which take the fast path), the layout and the VNI.
func TestENISourcePortIsEncaps(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) {
			for i, ports := range [][2]uint16{{40000, 5201}, {5201, 40000}, {1, 65535}, {53, 53}} {
				// A fresh flow per hook and port pair, so the first
				// packet takes the slow path.
				sport, dport := ports[0]+uint16(len(h.name)), ports[1]
				pkt := eniUDP(macA, ipA, ipR, sport, dport)
				port := encap.SourcePort(encap.FlowHash(ipA, ipR, encap.ProtoUDP, encap.Ports(sport, dport)))
				want := []uint16{port, port} // one source port for the whole flow
				for n, path := range []string{"slow", "fast"} {
					ret, out := h.run(t, append([]byte(nil), pkt...))
					if ret != "redirect" {
						t.Fatalf("pair %d, %s path: verdict %s, want redirect to the tunnel", i, path, ret)
					}
					outer := out[h.encapAt:]
					if vni, err := encap.ParseHeader(outer[encap.VXLANAt:]); err != nil || vni != vniRed {
						t.Fatalf("pair %d, %s path: VNI %d, %v", i, path, vni, err)
					}
					if string(outer[encap.InnerIPAt:encap.InnerIPAt+len(pkt)-encap.EthLen]) != string(pkt[encap.EthLen:]) {
						t.Fatalf("pair %d, %s path: inner packet not at encap.InnerIPAt", i, path)
					}
					got := binary.BigEndian.Uint16(outer[encap.OuterUDPAt:])
					if got != want[n] {
						t.Errorf("pair %d (%d -> %d), %s path: source port %d, encap says %d (the other path's: %d)",
							i, sport, dport, path, got, want[n], want[1-n])
					}
				}
			}
		})
	}
}
