package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/encap"
	"github.com/vpcd/vpcd/internal/testkit"
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

	// protocol: all (the plan's protocol 0, port 0) lets every protocol
	// and port in.
	st.UnderlayAllow = []AllowRule{{Protocol: 0, Port: 0}}
	if err := d.Reconcile(st, func(string) (int, error) { return 0, nil }); err != nil {
		t.Fatal(err)
	}
	for name, pkt := range map[string][]byte{
		"telnet":    tcpPacket(netip.MustParseAddr("203.0.113.9"), hostA, 23),
		"ICMP echo": ipv4Packet(macR, GatewayMAC, netip.MustParseAddr("203.0.113.9"), hostA, 1, false, icmpEcho(8)),
	} {
		if ret, err := xdp.Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+64)}); err != nil || ret != xdpPass {
			t.Errorf("%s with protocol all allowed: verdict %d (%v), want pass", name, ret, err)
		}
	}
}

// vxlanFrame builds what wireguard-go writes to the tunnel device: outer
// IPv4/UDP/VXLAN, inner Ethernet and an ICMP echo from src to dst.
func vxlanFrame(outerSrc, outerDst netip.Addr, vni uint32, src, dst netip.Addr) []byte {
	return vxlanOf(outerSrc, outerDst, vni, ipv4Packet(macR, GatewayMAC, src, dst, 1, false, icmpEcho(8)))
}

// vxlanOf wraps an inner Ethernet frame as wireguard-go writes it to the
// tunnel device: outer IPv4/UDP/VXLAN from host src to host dst (no outer
// Ethernet).
func vxlanOf(src, dst netip.Addr, vni uint32, inner []byte) []byte {
	b := make([]byte, encap.OuterLen+len(inner))
	if err := encap.PutOuter(b, encap.Outer{Src: src, Dst: dst, SrcPort: 50000, VNI: vni}, len(inner)); err != nil {
		panic(err)
	}
	copy(b[encap.OuterLen:], inner)
	return b
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
	defer testkit.FreshNamespace(t)()
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

// TestTunnelUncheckedFrom: a peer host with an ENI of the VPC whose
// source/destination check is off may send that VPC's packets from any
// source (a NAT or router instance forwarding others' packets); without
// such an ENI, or for another VPC, the inner source must be the host's.
func TestTunnelUncheckedFrom(t *testing.T) {
	d := testDatapath(t)
	_, tun, _ := d.Programs()
	foreign := netip.MustParseAddr("10.0.7.7") // no ENI has it
	inTUNNamespace(t, tun, func(write func([]byte)) {
		delivered := func(pkt []byte) bool {
			before, _ := d.ENICounters("a")
			write(pkt)
			after, _ := d.ENICounters("a")
			return after[Ingress].Packets == before[Ingress].Packets+1
		}
		if delivered(vxlanFrame(hostB, hostA, vniRed, foreign, ipA)) {
			t.Fatal("a foreign inner source was delivered from a host without an unchecked ENI")
		}
		st := testState()
		st.UncheckedFrom = []HostVNI{{VNI: vniRed, Host: hostB}}
		if err := d.Reconcile(st, testIfindex); err != nil {
			t.Fatal(err)
		}
		if !delivered(vxlanFrame(hostB, hostA, vniRed, foreign, ipA)) {
			m, _ := d.Drops()
			t.Errorf("a foreign inner source from the host with an unchecked ENI was not delivered (drops %v)", m)
		}
		// The same host, another VPC (its unchecked ENI is in red only).
		before := dropCount(t, d, "source_check")
		write(vxlanFrame(hostB, hostA, 4242, foreign, ipA))
		if dropCount(t, d, "source_check") != before+1 {
			t.Error("a foreign inner source of another VPC from the host with an unchecked ENI was not dropped as source_check")
		}
		if err := d.Reconcile(testState(), testIfindex); err != nil {
			t.Fatal(err)
		}
		if delivered(vxlanFrame(hostB, hostA, vniRed, foreign, ipA)) {
			t.Error("a foreign inner source was delivered after the unchecked ENI went")
		}
	})
}

// icmpError builds an ICMPv4 error from src to dst whose body quotes
// quote (an IPv4 packet, or a part of one).
func icmpError(src, dst netip.Addr, typ, code uint8, quote []byte) []byte {
	b := make([]byte, 8+len(quote))
	b[0], b[1] = typ, code
	copy(b[8:], quote)
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return ipv4Packet(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, src, dst, 1, false, b)
}

// sentWireGuard is the IPv4 packet of a WireGuard datagram as this host
// would send it (without Ethernet): a handshake initiation's first bytes.
func sentWireGuard(src, dst netip.Addr, sport, dport uint16) []byte {
	payload := make([]byte, 32)
	payload[0] = 1
	return udpPacket(src, dst, sport, dport, payload)[14:]
}

// underlayRunner runs one flavour of the underlay filter on a frame and
// reports whether it passed.
type underlayRunner func(t testing.TB, pkt []byte) bool

func underlayFlavours(d *Datapath) map[string]underlayRunner {
	_, _, xdp := d.Programs()
	tc := d.UnderlayTC()
	return map[string]underlayRunner{
		"xdp": func(t testing.TB, pkt []byte) bool {
			t.Helper()
			ret, err := xdp.Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+64)})
			if err != nil {
				t.Fatalf("xdp: %v", err)
			}
			return ret == xdpPass
		},
		"tc": func(t testing.TB, pkt []byte) bool {
			t.Helper()
			ret, _ := runTC(t, tc, testENIIfindex, pkt)
			return ret == 0 // TC_ACT_OK
		},
	}
}

// peerMarked reports whether the underlay filter has marked the peer at
// addr unreachable.
func peerMarked(t testing.TB, d *Datapath, addr netip.Addr) bool {
	t.Helper()
	var p bpf.EniPeerInfo
	if err := d.eni.Peers.Lookup(be32(addr), &p); err != nil {
		t.Fatalf("peer %v: %v", addr, err)
	}
	return p.Unreachable != 0
}

// configGen is the host-wide generation of the fast path.
func configGen(t testing.TB, d *Datapath) uint32 {
	t.Helper()
	var cfg bpf.EniVpcdConfig
	if err := d.eni.Config.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Gen
}

// TestUnderlaySpoofedPortUnreachable: an ICMP "port unreachable" from a
// peer's address marks the peer down only when it quotes a WireGuard
// datagram this host sent to that peer (our address and port, the peer's
// address and port). Anything else neither marks it nor passes.
func TestUnderlaySpoofedPortUnreachable(t *testing.T) {
	other := netip.MustParseAddr("198.18.0.99")
	genuine := sentWireGuard(hostA, hostB, 51820, 51820)
	withOptions := func() []byte { // a 24-byte IPv4 header: IHL 6
		q := make([]byte, len(genuine)+4)
		copy(q, genuine[:20])
		copy(q[24:], genuine[20:])
		q[0] = 0x46
		binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
		return q
	}
	laterFragment := func() []byte {
		q := append([]byte(nil), genuine...)
		binary.BigEndian.PutUint16(q[6:], 3) // offset 24 bytes
		return q
	}
	asTCP := func() []byte {
		q := append([]byte(nil), genuine...)
		q[9] = 6
		return q
	}
	spoofs := []struct {
		name string
		pkt  []byte
	}{
		{"quotes nothing", icmpError(hostB, hostA, 3, 3, nil)},
		{"quotes a truncated IPv4 header", icmpError(hostB, hostA, 3, 3, genuine[:12])},
		{"quotes the IPv4 header only", icmpError(hostB, hostA, 3, 3, genuine[:20])},
		{"quotes half a UDP header", icmpError(hostB, hostA, 3, 3, genuine[:24])},
		{"quotes UDP from another source port", icmpError(hostB, hostA, 3, 3, sentWireGuard(hostA, hostB, 40000, 51820))},
		{"quotes UDP to another port of the peer", icmpError(hostB, hostA, 3, 3, sentWireGuard(hostA, hostB, 51820, 53))},
		{"quotes UDP from another address", icmpError(hostB, hostA, 3, 3, sentWireGuard(other, hostB, 51820, 51820))},
		{"quotes UDP to another address", icmpError(hostB, hostA, 3, 3, sentWireGuard(hostA, other, 51820, 51820))},
		{"quotes the peer's datagram to us", icmpError(hostB, hostA, 3, 3, sentWireGuard(hostB, hostA, 51820, 51820))},
		{"quotes TCP with WireGuard's ports", icmpError(hostB, hostA, 3, 3, asTCP())},
		{"quotes a later fragment", icmpError(hostB, hostA, 3, 3, laterFragment())},
		{"addressed to another host", icmpError(hostB, other, 3, 3, genuine)},
	}
	for _, name := range []string{"xdp", "tc"} {
		t.Run(name, func(t *testing.T) {
			d := testDatapath(t)
			run := underlayFlavours(d)[name]
			gen := configGen(t, d)
			drops := dropCount(t, d, "underlay_filter")
			for _, s := range spoofs {
				if run(t, s.pkt) {
					t.Errorf("%s: passed", s.name)
				}
				if peerMarked(t, d, hostB) {
					t.Fatalf("%s: marked the peer down", s.name)
				}
			}
			if got := configGen(t, d); got != gen {
				t.Errorf("spoofed errors moved the generation %d -> %d", gen, got)
			}
			if got := dropCount(t, d, "underlay_filter"); got != drops+uint64(len(spoofs)) {
				t.Errorf("underlay_filter drops %d -> %d, want +%d", drops, got, len(spoofs))
			}
			// Errors that quote our datagram pass; only "port
			// unreachable" marks the peer.
			for _, c := range []struct {
				name string
				pkt  []byte
			}{
				{"time exceeded", icmpError(hostB, hostA, 11, 0, genuine)},
				{"fragmentation needed", icmpError(hostB, hostA, 3, 4, genuine)},
			} {
				if !run(t, c.pkt) {
					t.Errorf("%s quoting our WireGuard: dropped", c.name)
				}
				if peerMarked(t, d, hostB) {
					t.Fatalf("%s quoting our WireGuard: marked the peer down", c.name)
				}
			}
			for _, q := range [][]byte{genuine, genuine[:28], withOptions()} {
				t.Run(fmt.Sprintf("genuine quote of %d bytes", len(q)), func(t *testing.T) {
					d := testDatapath(t)
					run := underlayFlavours(d)[name]
					gen := configGen(t, d)
					if !run(t, icmpError(hostB, hostA, 3, 3, q)) {
						t.Error("genuine port unreachable: dropped")
					}
					if !peerMarked(t, d, hostB) {
						t.Error("genuine port unreachable: peer not marked down")
					}
					if got := configGen(t, d); got != gen+1 {
						t.Errorf("genuine port unreachable: generation %d -> %d, want +1", gen, got)
					}
				})
			}
		})
	}
}

// TestUnderlaySpoofRateBound: whoever can send "port unreachable" and
// WireGuard-shaped datagrams with a peer's address and ports (they are no
// secret) can mark and unmark the peer, but cannot make the host
// invalidate its fast path (the generation) more than once a second.
func TestUnderlaySpoofRateBound(t *testing.T) {
	d := testDatapath(t)
	hostC := netip.MustParseAddr("198.18.0.13")
	st := testState()
	st.Peers = append(st.Peers, hostC)
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	run := underlayFlavours(d)["xdp"]
	unreach := func(peer netip.Addr) []byte {
		return icmpError(peer, hostA, 3, 3, sentWireGuard(hostA, peer, 51820, 51820))
	}
	wg := func(peer netip.Addr, sport uint16) []byte {
		return udpPacket(peer, hostA, sport, 51820, make([]byte, 32))
	}

	gen := configGen(t, d)
	start := time.Now()
	run(t, unreach(hostB))
	if !peerMarked(t, d, hostB) || configGen(t, d) != gen+1 {
		t.Fatalf("the first port unreachable: marked %v, generation %d -> %d", peerMarked(t, d, hostB), gen, configGen(t, d))
	}
	// Repeated errors while it is down change nothing host-wide.
	for range 50 {
		run(t, unreach(hostB))
	}
	// WireGuard from the peer's address but another port does not
	// unmark it; from its address and port it does.
	run(t, wg(hostB, 40000))
	if !peerMarked(t, d, hostB) {
		t.Error("WireGuard from another source port unmarked the peer")
	}
	// Alternating errors and datagrams, and marks of other peers, within
	// the second: the peer follows, the generation does not move again.
	for range 50 {
		if !run(t, wg(hostB, 51820)) || peerMarked(t, d, hostB) {
			t.Fatal("WireGuard from the peer: dropped, or the peer stays marked")
		}
		if run(t, unreach(hostB)); !peerMarked(t, d, hostB) {
			t.Fatal("port unreachable quoting our WireGuard did not mark the peer")
		}
		run(t, unreach(hostC))
		run(t, wg(hostC, 51820))
	}
	// One invalidation a second at most (the coarse clock may round the
	// first second down: one more).
	elapsed := time.Since(start)
	if got, most := configGen(t, d)-gen, 2+uint32(elapsed/time.Second); got > most {
		t.Fatalf("generation +%d in %v of spoofed marks, want at most +%d", got, elapsed, most)
	}
	// After the interval a new mark invalidates again.
	testkit.WaitFor(t, 3*time.Second, "an invalidation by a new mark after the last", func() bool {
		if configGen(t, d) != gen+1 {
			return true
		}
		run(t, wg(hostB, 51820))
		run(t, unreach(hostB))
		return false
	})
}

// TestUnderlayRouterAdvertAndRedirect: router advertisements and
// redirects (ICMPv6 134 and 137, ICMPv4 5) never reach the host, even
// when the allow-list lets ICMP in; neighbour discovery and MLD do.
func TestUnderlayRouterAdvertAndRedirect(t *testing.T) {
	d := testDatapath(t)
	st := testState()
	st.UnderlayAllow = []AllowRule{{Protocol: 1}}
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	redirect := func(src netip.Addr) []byte {
		return icmpError(src, hostA, 5, 1, sentWireGuard(hostA, hostB, 51820, 51820))
	}
	cases := []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"router advertisement", ipv6ICMP(134), false},
		{"ICMPv6 redirect", ipv6ICMP(137), false},
		{"ICMP redirect from a peer", redirect(hostB), false},
		{"ICMP redirect from another host", redirect(netip.MustParseAddr("203.0.113.9")), false},
		{"router solicitation", ipv6ICMP(133), true},
		{"neighbour solicitation", ipv6ICMP(135), true},
		{"neighbour advertisement", ipv6ICMP(136), true},
		{"MLD query", ipv6ICMP(130), true},
		{"MLDv2 report", ipv6ICMP(143), true},
		{"ICMP echo (allowed)", ipv4Packet(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, hostB, hostA, 1, false, icmpEcho(8)), true},
	}
	for name, run := range underlayFlavours(d) {
		for _, c := range cases {
			before := dropCount(t, d, "underlay_filter")
			if got := run(t, c.pkt); got != c.pass {
				t.Errorf("%s: %s passed=%v, want %v", name, c.name, got, c.pass)
			}
			want := before
			if !c.pass {
				want++
			}
			if got := dropCount(t, d, "underlay_filter"); got != want {
				t.Errorf("%s: %s: underlay_filter drops %d -> %d, want %d", name, c.name, before, got, want)
			}
		}
	}
}

// TestUnderlayPeerPort: a peer that listens on another port than ours is
// marked only by an error quoting a datagram to its own port.
func TestUnderlayPeerPort(t *testing.T) {
	d := testDatapath(t)
	st := testState()
	st.PeerPorts = map[netip.Addr]uint16{hostB: 40002}
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	run := underlayFlavours(d)["tc"]
	if run(t, icmpError(hostB, hostA, 3, 3, sentWireGuard(hostA, hostB, 51820, 51820))) || peerMarked(t, d, hostB) {
		t.Fatal("an error quoting a datagram to our port, not the peer's, passed or marked the peer")
	}
	if !run(t, icmpError(hostB, hostA, 3, 3, sentWireGuard(hostA, hostB, 51820, 40002))) || !peerMarked(t, d, hostB) {
		t.Fatal("an error quoting a datagram to the peer's port did not mark it")
	}
	// WireGuard from the peer comes from its port: only that unmarks it.
	run(t, udpPacket(hostB, hostA, 51820, 51820, make([]byte, 32)))
	if !peerMarked(t, d, hostB) {
		t.Fatal("WireGuard from our port number unmarked the peer")
	}
	run(t, udpPacket(hostB, hostA, 40002, 51820, make([]byte, 32)))
	if peerMarked(t, d, hostB) {
		t.Fatal("WireGuard from the peer's port did not unmark it")
	}
}
