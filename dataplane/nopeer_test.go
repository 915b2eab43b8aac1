package dataplane

import "testing"

// TestENINoPeer: a route to a host that is no tunnel peer (etcd mode: its
// daemon is not registered, so it has no key) is dropped as no_tunnel at
// both hooks, never sent into the tunnel; once the host is a peer again
// the same packet goes to the tunnel.
func TestENINoPeer(t *testing.T) {
	d := testDatapath(t)
	st := testState()
	st.Peers = nil
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) {
			before := dropCount(t, d, "no_tunnel")
			pkt := ipv4Packet(macA, GatewayMAC, ipA, ipR, 1, false, icmpEcho(8))
			if ret, _ := h.run(t, pkt); ret != "drop" {
				t.Fatalf("to a host that is no peer: verdict %s, want drop", ret)
			}
			if got := dropCount(t, d, "no_tunnel"); got != before+1 {
				t.Errorf("no_tunnel drops %d, want %d", got, before+1)
			}
		})
	}
	if err := d.Reconcile(testState(), testIfindex); err != nil {
		t.Fatal(err)
	}
	for _, h := range eniHooks(d) {
		pkt := ipv4Packet(macA, GatewayMAC, ipA, ipR, 1, false, icmpEcho(8))
		if ret, _ := h.run(t, pkt); ret == "drop" {
			t.Errorf("%s: to a peer again: dropped", h.name)
		}
	}
}
