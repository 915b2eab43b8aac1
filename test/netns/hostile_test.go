package netns

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// udpListener receives datagrams inside an ENI's namespace; got returns
// the sizes that arrived on each port.
type udpListener struct {
	conns map[int]*net.UDPConn
	got   chan [2]int // port, size
}

func listenUDP(t *testing.T, l *lab.Lab, eni string, ports ...int) *udpListener {
	t.Helper()
	u := &udpListener{conns: map[int]*net.UDPConn{}, got: make(chan [2]int, 64)}
	for _, port := range ports {
		var c *net.UDPConn
		if err := l.Do(lab.ENI, eni, func() error {
			var err error
			c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			return err
		}); err != nil {
			t.Fatalf("listen udp %d in %s: %v", port, eni, err)
		}
		t.Cleanup(func() { c.Close() })
		u.conns[port] = c
		go func(port int) {
			buf := make([]byte, 65536)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				u.got <- [2]int{port, n}
			}
		}(port)
	}
	return u
}

// sendUDP sends one datagram of size bytes from inside an ENI's namespace.
func sendUDP(t *testing.T, l *lab.Lab, eni, dst string, size int) {
	t.Helper()
	if err := l.Do(lab.ENI, eni, func() error {
		c, err := net.Dial("udp4", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(bytes.Repeat([]byte{0x5a}, size))
		return err
	}); err != nil {
		t.Fatalf("send %d bytes from %s to %s: %v", size, eni, dst, err)
	}
}

// TestFragmentsFollowFirst sends real 3,000-byte UDP datagrams, which the
// sender's kernel fragments at MTU 1500, to a subnet whose network ACL
// denies UDP port 5000: on one host and across hosts, the datagrams to 5000
// never arrive (the first fragment meets the rule with its real port, the
// later ones follow it and are counted as `fragment`), while the same
// datagrams to port 5001 do.
func TestFragmentsFollowFirst(t *testing.T) {
	l := upLab(t, "frag", "fragments.yaml")
	for _, tc := range []struct{ host, eni, ip string }{{"fa", "f-a2", "10.4.2.10"}, {"fb", "f-b2", "10.4.2.20"}} {
		t.Run(tc.eni, func(t *testing.T) {
			u := listenUDP(t, l, tc.eni, 5000, 5001)
			before := drops(t, l, tc.host)
			// Denied first, then allowed: once an allowed datagram is in,
			// the denied ones sent before it had their chance.
			const tries = 3
			for i := 0; i < tries; i++ {
				sendUDP(t, l, "f-a1", tc.ip+":5000", 3000)
			}
			allowed := 0
			deadline := time.After(20 * time.Second)
			for allowed == 0 {
				sendUDP(t, l, "f-a1", tc.ip+":5001", 3000)
				select {
				case g := <-u.got:
					if g[0] == 5000 {
						t.Fatalf("a %d-byte datagram to the denied port 5000 reached %s", g[1], tc.eni)
					}
					if g[1] != 3000 {
						t.Fatalf("datagram to 5001 arrived with %d bytes, want 3000", g[1])
					}
					allowed++
				case <-time.After(time.Second):
				case <-deadline:
					t.Fatalf("no fragmented datagram to the allowed port 5001 reached %s", tc.eni)
				}
			}
			select {
			case g := <-u.got:
				if g[0] == 5000 {
					t.Fatalf("a %d-byte datagram to the denied port 5000 reached %s", g[1], tc.eni)
				}
			default:
			}
			after := drops(t, l, tc.host)
			if n := after["nacl_ingress"] - before["nacl_ingress"]; n < tries {
				t.Errorf("host %s counted %d nacl_ingress drops, want >= %d (one per first fragment)", tc.host, n, tries)
			}
			if n := after["fragment"] - before["fragment"]; n < tries {
				t.Errorf("host %s counted %d fragment drops, want >= %d (the later fragments)", tc.host, n, tries)
			}
		})
	}
}

// taggedFrame is a UDP datagram from src to dst:port in an Ethernet frame
// with an 802.1Q tag of vid.
func taggedFrame(srcMAC, dstMAC net.HardwareAddr, vid uint16, src, dst netip.Addr, port uint16) []byte {
	f := make([]byte, 18+20+8+32)
	copy(f[0:], dstMAC)
	copy(f[6:], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x8100)
	binary.BigEndian.PutUint16(f[14:], vid)
	binary.BigEndian.PutUint16(f[16:], 0x0800)
	ip := f[18:38]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-18))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(f[38:], 40000)
	binary.BigEndian.PutUint16(f[40:], port)
	binary.BigEndian.PutUint16(f[42:], uint16(len(f)-38))
	return f
}

// rxPackets reads the packets an interface of an ENI's namespace received.
func rxPackets(t *testing.T, l *lab.Lab, eni, iface string) uint64 {
	t.Helper()
	var n uint64
	if err := l.Do(lab.ENI, eni, func() error {
		ln, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		n = ln.Attrs().Statistics.RxPackets
		return nil
	}); err != nil {
		t.Fatalf("statistics of %s in %s: %v", iface, eni, err)
	}
	return n
}

// TestVLANTaggedDropped sends 802.1Q-tagged frames from a workload through
// a packet socket on its eth0 (this kernel has no VLAN device type): the
// host's stack moves the tag into the skb's metadata before the ENI program
// runs, which must drop the frame as `unsupported` rather than forward it.
func TestVLANTaggedDropped(t *testing.T) {
	l := upLab(t, "vlan", "fragments.yaml")
	srcMAC := net.HardwareAddr{0x02, 0x00, 10, 4, 1, 10} // the topology's default MAC of f-a1
	frame := taggedFrame(srcMAC, dataplane.GatewayMAC, 7, netip.MustParseAddr("10.4.1.10"), netip.MustParseAddr("10.4.2.10"), 5007)
	before := drops(t, l, "fa")["unsupported"]
	rxBefore := rxPackets(t, l, "f-a2", "eth0")
	const n = 5
	sendFrames(t, l, "f-a1", 0x0081, frame, n) // ETH_P_8021Q, network order
	if !testkit.Eventually(10*time.Second, func() bool { return drops(t, l, "fa")["unsupported"]-before >= n }) {
		t.Errorf("host fa counted %d unsupported drops for %d tagged frames", drops(t, l, "fa")["unsupported"]-before, n)
	}
	if got := rxPackets(t, l, "f-a2", "eth0") - rxBefore; got >= n {
		t.Errorf("f-a2 received %d packets while %d tagged frames were sent to it", got, n)
	}
	// Untagged, the same datagram is delivered: the drop was the tag's.
	u := listenUDP(t, l, "f-a2", 5007)
	sendUDP(t, l, "f-a1", "10.4.2.10:5007", 100)
	select {
	case <-u.got:
	case <-time.After(10 * time.Second):
		t.Fatal("untagged datagram to f-a2 did not arrive")
	}
}
