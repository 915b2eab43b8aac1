package plan

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vpcd/vpcd/dataplane"
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

// TestUncheckedFrom: a host learns which other hosts have, per VPC, an ENI
// without the source/destination check (once each), and never its own.
func TestUncheckedFrom(t *testing.T) {
	doc := `version: 1
hosts:
  - {name: h1, underlay_ip: 198.18.0.1}
  - {name: h2, underlay_ip: 198.18.0.2}
  - {name: h3, underlay_ip: 198.18.0.3}
vpcs:
  - {name: v, vni: 10, cidr: 10.0.0.0/16, subnets: [{name: s, cidr: 10.0.1.0/24}]}
  - {name: w, vni: 20, cidr: 10.1.0.0/16, subnets: [{name: sw, cidr: 10.1.1.0/24}]}
enis:
  - {name: a, host: h1, subnet: s, ip: 10.0.1.10, source_dest_check: false}
  - {name: b, host: h2, subnet: s, ip: 10.0.1.11, source_dest_check: false}
  - {name: c, host: h2, subnet: s, ip: 10.0.1.12, source_dest_check: false}
  - {name: d, host: h2, subnet: sw, ip: 10.1.1.10}
  - {name: e, host: h3, subnet: s, ip: 10.0.1.13}
`
	top, err := topology.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Datapath(top, "h1")
	if err != nil {
		t.Fatal(err)
	}
	want := []dataplane.HostVNI{{VNI: 10, Host: netip.MustParseAddr("198.18.0.2")}}
	if !slices.Equal(s.UncheckedFrom, want) {
		t.Errorf("h1's unchecked sources %v, want %v", s.UncheckedFrom, want)
	}
	if s, _ := Datapath(top, "h2"); !slices.Equal(s.UncheckedFrom, []dataplane.HostVNI{{VNI: 10, Host: netip.MustParseAddr("198.18.0.1")}}) {
		t.Errorf("h2's unchecked sources %v", s.UncheckedFrom)
	}
}
