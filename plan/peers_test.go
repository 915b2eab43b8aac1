package plan

import (
	"net/netip"
	"testing"

	"github.com/vpcd/vpcd/topology"
)

// TestDesiredStatePeerPorts: the datapath learns each peer's own WireGuard
// port (the underlay filter believes only ICMP errors that quote our
// datagrams to it), not ours.
func TestDesiredStatePeerPorts(t *testing.T) {
	h1, h2, h3 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	top := &topology.Topology{Hosts: []topology.Host{
		{Name: "h1", UnderlayIP: h1, ListenPort: 51820, MTU: 1500},
		{Name: "h2", UnderlayIP: h2, ListenPort: 40002, MTU: 1500},
		{Name: "h3", UnderlayIP: h3, ListenPort: 51820, MTU: 1500},
	}}
	s, err := Datapath(top, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if s.ListenPort != 51820 {
		t.Errorf("listen port %d, want 51820", s.ListenPort)
	}
	want := map[netip.Addr]uint16{h2: 40002, h3: 51820}
	if len(s.PeerPorts) != len(want) {
		t.Errorf("peer ports %v, want %v", s.PeerPorts, want)
	}
	for a, p := range want {
		if s.PeerPorts[a] != p {
			t.Errorf("peer %v: port %d, want %d", a, s.PeerPorts[a], p)
		}
	}
}
