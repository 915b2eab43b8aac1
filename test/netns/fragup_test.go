package netns

import (
	"testing"
	"time"
)

// TestFragmentedRightAfterUp sends 3,000-byte UDP datagrams across hosts
// right after `lab up`. The sender's kernel cuts each into IP fragments at
// MTU 1500 without DF, larger than the tunnel's MTU, so every fragment's
// WireGuard datagram is fragmented on the underlay. They once never
// arrived: wireguard-go sent the fragments, read from the tunnel device
// together, as one UDP GSO send, which the kernel refuses whole (EMSGSIZE)
// when the segments exceed the path MTU.
func TestFragmentedRightAfterUp(t *testing.T) {
	l := upLab(t, "h1-fragup", "two-hosts.yaml")
	for _, dir := range []struct{ from, to, dst string }{
		{"g-a1", "g-b1", "10.3.1.20:7000"},
		{"g-b1", "g-a1", "10.3.1.10:7000"},
	} {
		u := listenUDP(t, l, dir.to, 7000)
		const tries = 3
		for i := 0; i < tries; i++ {
			sendUDP(t, l, dir.from, dir.dst, 3000)
			select {
			case g := <-u.got:
				if n := g[1]; n != 3000 {
					t.Fatalf("%s -> %s: datagram %d arrived with %d bytes, want 3000", dir.from, dir.to, i, n)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s -> %s: 3,000-byte datagram %d of %d did not arrive in 5 s (drops: a %v, b %v)",
					dir.from, dir.to, i+1, tries, drops(t, l, "a"), drops(t, l, "b"))
			}
		}
	}
}
