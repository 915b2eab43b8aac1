package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	return ipv4Packet(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, src, dst, 17, false, udp)
}

func tcpPacket(src, dst netip.Addr, dport uint16) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = 0x02
	return ipv4Packet(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, src, dst, 6, false, tcp)
}

func ipv6ICMP(typ uint8) []byte {
	p := make([]byte, 14+40+8)
	binary.BigEndian.PutUint16(p[12:], 0x86dd)
	ip := p[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 8)
	ip[6] = 58
	ip[7] = 255
	p[54] = typ
	return p
}

// TestUnderlayFilter runs the same cases through both flavours of the
// underlay filter: XDP and tc.
func TestUnderlayFilter(t *testing.T) {
	d := testDatapath(t)
	_, _, xdp := d.Programs()
	tc := d.UnderlayTC()
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	unknown := netip.MustParseAddr("203.0.113.9")
	cases := []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"WireGuard from a peer to our port", udpPacket(hostB, hostA, 51820, 51820, make([]byte, 32)), true},
		{"WireGuard from an unknown host", udpPacket(unknown, hostA, 51820, 51820, make([]byte, 32)), false},
		{"UDP from a peer to another port", udpPacket(hostB, hostA, 51820, 53, make([]byte, 8)), false},
		{"VXLAN in the clear from a peer", udpPacket(hostB, hostA, 50000, 4789, make([]byte, 64)), false},
		{"SSH not in the allow-list", tcpPacket(hostB, hostA, 22), false},
		{"ARP", arp, true},
		{"IPv6 neighbour solicitation", ipv6ICMP(135), true},
		{"IPv6 echo request", ipv6ICMP(128), false},
		{"truncated TCP", tcpPacket(hostB, hostA, 22)[:40], false},
	}
	for _, c := range cases {
		out := make([]byte, len(c.pkt)+64)
		ret, err := xdp.Run(&ebpf.RunOptions{Data: c.pkt, DataOut: out})
		if err != nil {
			t.Fatalf("%s: xdp: %v", c.name, err)
		}
		if (ret == xdpPass) != c.pass {
			t.Errorf("%s: XDP verdict %d, want pass=%v", c.name, ret, c.pass)
		}
		tret, _ := runTC(t, tc, testENIIfindex, c.pkt)
		if (tret == 0) != c.pass { // TC_ACT_OK
			t.Errorf("%s: tc verdict %d, want pass=%v", c.name, tret, c.pass)
		}
	}
	if dropCount(t, d, "underlay_filter") == 0 {
		t.Error("underlay drops not counted")
	}
}

func TestUnderlayAllowList(t *testing.T) {
	d := testDatapath(t)
	_, _, xdp := d.Programs()
	st := &State{UnderlayIP: hostA, ListenPort: 51820, UnderlayMTU: 1500, Peers: []netip.Addr{hostB},
		UnderlayAllow: []AllowRule{{Protocol: 6, Port: 22}}}
	if err := d.Reconcile(st, func(string) (int, error) { return 0, nil }); err != nil {
		t.Fatal(err)
	}
	pkt := tcpPacket(netip.MustParseAddr("203.0.113.9"), hostA, 22)
	ret, err := xdp.Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+64)})
	if err != nil || ret != xdpPass {
		t.Fatalf("allowed SSH: verdict %d (%v), want pass", ret, err)
	}
	pkt = tcpPacket(netip.MustParseAddr("203.0.113.9"), hostA, 23)
	if ret, _ := xdp.Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+64)}); ret != xdpDrop {
		t.Fatalf("telnet: verdict %d, want drop", ret)
	}
}

// vxlanFrame builds what wireguard-go writes to the tunnel device: outer
// IPv4/UDP/VXLAN, inner Ethernet and an ICMP echo from src to dst.
func vxlanFrame(outerSrc, outerDst netip.Addr, vni uint32, src, dst netip.Addr) []byte {
	inner := ipv4Packet(macR, GatewayMAC, src, dst, 1, false, icmpEcho(8))
	b := make([]byte, 36+len(inner))
	ip := b[:20]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
	s, d := outerSrc.As4(), outerDst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	binary.BigEndian.PutUint16(b[20:], 50000)
	binary.BigEndian.PutUint16(b[22:], 4789)
	binary.BigEndian.PutUint16(b[24:], uint16(len(b)-20))
	b[28] = 0x08
	binary.BigEndian.PutUint32(b[32:], vni<<8)
	copy(b[36:], inner)
	return b
}

// freshNamespace locks the goroutine to its thread and moves the thread
// into a new network namespace; the returned function moves it back.
func freshNamespace(t testing.TB) (restore func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	return func() {
		netns.Set(orig)
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	}
}

// openTestTUN creates the TUN device tun-test in the thread's namespace
// and brings it up; it lasts until fd is closed.
func openTestTUN(t testing.TB) (fd int, l netlink.Link) {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq("tun-test")
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if l, err = netlink.LinkByName("tun-test"); err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return fd, l
}

// inTUNNamespace runs fn on a thread inside a fresh network namespace that
// holds one TUN device with prog attached at tcx ingress; fn writes frames
// into the device as wireguard-go would.
func inTUNNamespace(t *testing.T, prog *ebpf.Program, fn func(write func([]byte))) {
	t.Helper()
	defer freshNamespace(t)()
	fd, l := openTestTUN(t)
	defer unix.Close(fd)
	lk, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	fn(func(b []byte) {
		if _, err := unix.Write(fd, b); err != nil {
			t.Fatalf("write to TUN: %v", err)
		}
	})
}

func TestTunnelProgram(t *testing.T) {
	d := testDatapath(t)
	_, tun, _ := d.Programs()
	inTUNNamespace(t, tun, func(write func([]byte)) {
		before, _ := d.ENICounters("a")
		write(vxlanFrame(hostB, hostA, vniRed, ipR, ipA))
		after, _ := d.ENICounters("a")
		if after[Ingress].Packets != before[Ingress].Packets+1 {
			m, _ := d.Drops()
			t.Fatalf("VXLAN from the peer that has the source was not delivered to ENI a (drops %v)", m)
		}
		cases := []struct {
			name   string
			pkt    []byte
			reason string
		}{
			{"inner source spoofed (an ENI of this host)", vxlanFrame(hostB, hostA, vniRed, ipB, ipA), "source_check"},
			{"outer source not a peer", vxlanFrame(netip.MustParseAddr("203.0.113.9"), hostA, vniRed, ipR, ipA), "source_check"},
			{"another VPC's VNI", vxlanFrame(hostB, hostA, 4242, ipR, ipA), "source_check"},
			{"destination not on this host", vxlanFrame(hostB, hostA, vniRed, ipR, netip.MustParseAddr("10.0.9.9")), "no_route"},
			{"not VXLAN", udpPacket(hostB, hostA, 1, 2, make([]byte, 40))[14:], "malformed"},
		}
		for _, c := range cases {
			before := dropCount(t, d, c.reason)
			write(c.pkt)
			if got := dropCount(t, d, c.reason); got != before+1 {
				t.Errorf("%s: %s drops %d, want %d", c.name, c.reason, got, before+1)
			}
		}
		// Every truncation of a good frame, and one whose inner IPv4
		// header claims more than the frame holds: never delivered.
		good := vxlanFrame(hostB, hostA, vniRed, ipR, ipA)
		long := append([]byte(nil), good...)
		binary.BigEndian.PutUint16(long[50+2:], uint16(len(good)))
		frames := [][]byte{long}
		for n := 20; n < len(good); n++ {
			frames = append(frames, good[:n])
		}
		for _, f := range frames {
			before, _ := d.ENICounters("a")
			write(f)
			after, _ := d.ENICounters("a")
			if after[Ingress].Packets != before[Ingress].Packets {
				t.Errorf("a broken frame of %d bytes was delivered", len(f))
			}
		}
	})
}
