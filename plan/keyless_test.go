package plan

import (
	"net/netip"
	"slices"
	"testing"
)

// TestSkipKeyless: with SkipKeyless a peer without a public key (etcd: not
// registered) is left out of the tunnel and the datapath's peers, while
// routes to its ENIs stay (the ENI program drops them as no_tunnel).
func TestSkipKeyless(t *testing.T) {
	top := load(t)
	h3 := top.HostByName("h3")
	h3.PublicKey = ""
	p, err := ForHostWith(top, "h1", Options{SkipKeyless: true})
	if err != nil {
		t.Fatalf("a keyless peer failed the plan: %v", err)
	}
	for _, peer := range p.Tunnel.Peers {
		if peer.Name == "h3" {
			t.Error("the keyless h3 is a tunnel peer")
		}
	}
	if slices.Contains(p.Datapath.Peers, h3.UnderlayIP) {
		t.Error("the keyless h3 is in the datapath's peers")
	}
	if _, ok := p.Datapath.PeerPorts[h3.UnderlayIP]; ok {
		t.Error("the keyless h3 has a peer port")
	}
	routed := false
	for _, r := range p.Datapath.Routes {
		routed = routed || r.Remote == h3.UnderlayIP
	}
	if !routed {
		t.Error("routes to h3's ENIs are gone: they must stay (no_tunnel, not no_route)")
	}
	if len(p.Tunnel.Peers) == 0 || !slices.ContainsFunc(p.Datapath.Peers, func(a netip.Addr) bool { return a != h3.UnderlayIP }) {
		t.Error("the other peers went too")
	}
	if _, err := ForHost(top, "h1"); err == nil {
		t.Error("without the option a keyless peer must fail the plan")
	}
}
