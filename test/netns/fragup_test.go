package netns

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/vpcd/vpcd/lab"
)

// fragListen opens a UDP socket on port inside an ENI's namespace; the sizes
// of the datagrams that arrive come out of the returned channel.
func fragListen(t *testing.T, l *lab.Lab, eni string, port int) <-chan int {
	t.Helper()
	var c *net.UDPConn
	if err := l.Do(lab.ENI, eni, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	}); err != nil {
		t.Fatalf("listen udp %d in %s: %v", port, eni, err)
	}
	got := make(chan int, 16)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			got <- n
		}
	}()
	t.Cleanup(func() { c.Close() })
	return got
}

// fragSend sends one datagram of size bytes from inside an ENI's namespace.
func fragSend(t *testing.T, l *lab.Lab, eni, dst string, size int) {
	t.Helper()
	if err := l.Do(lab.ENI, eni, func() error {
		c, err := net.Dial("udp4", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(bytes.Repeat([]byte{0xa5}, size))
		return err
	}); err != nil {
		t.Fatalf("send %d bytes from %s to %s: %v", size, eni, dst, err)
	}
}

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
		got := fragListen(t, l, dir.to, 7000)
		const tries = 3
		for i := 0; i < tries; i++ {
			fragSend(t, l, dir.from, dir.dst, 3000)
			select {
			case n := <-got:
				if n != 3000 {
					t.Fatalf("%s -> %s: datagram %d arrived with %d bytes, want 3000", dir.from, dir.to, i, n)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s -> %s: 3,000-byte datagram %d of %d did not arrive in 5 s (drops: a %v, b %v)",
					dir.from, dir.to, i+1, tries, drops(t, l, "a"), drops(t, l, "b"))
			}
		}
	}
}
