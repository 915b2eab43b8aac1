package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/encap"
	"github.com/vpcd/vpcd/internal/testkit"
)

// Verdicts of tc programs (linux/pkt_cls.h).
const (
	tcActShot     = 2
	tcActRedirect = 7
	xdpDrop       = 1
	xdpPass       = 2
	xdpTx         = 3
	xdpRedirect   = 4
)

const testENIIfindex = 1 // loopback: BPF_PROG_TEST_RUN needs a real device

var (
	macA   = net.HardwareAddr{0x02, 0, 10, 0, 1, 10}
	macB   = net.HardwareAddr{0x02, 0, 10, 0, 1, 11}
	macR   = net.HardwareAddr{0x02, 0, 10, 0, 2, 10}
	ipA    = netip.MustParseAddr("10.0.1.10")
	ipB    = netip.MustParseAddr("10.0.1.11")
	ipR    = netip.MustParseAddr("10.0.2.10")
	hostA  = netip.MustParseAddr("198.18.0.11")
	hostB  = netip.MustParseAddr("198.18.0.12")
	vniRed = uint32(1001)

	subnetA  = netip.MustParsePrefix("10.0.1.0/24")
	allowAll = []Rule{{Protocol: ProtoAll, CIDR: netip.MustParsePrefix("0.0.0.0/0"), Allow: true}}
)

// testDatapath loads the real programs into a private bpffs directory with a
// small topology: ENI a (on loopback's ifindex) and b on this host, r on
// host B.
func testDatapath(t testing.TB) *Datapath {
	t.Helper()
	testkit.NeedRoot(t, "loads eBPF programs")
	dir := fmt.Sprintf("/sys/fs/bpf/vpcd-test-%d-%s", os.Getpid(), sanitize(t.Name()))
	t.Cleanup(func() { Teardown(dir) })
	d, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	err = d.Reconcile(testState(), testIfindex)
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return d
}

// testState is testDatapath's topology.
func testState() *State {
	vpc := netip.MustParsePrefix("10.0.0.0/16")
	st := &State{
		UnderlayIP:    hostA,
		ListenPort:    51820,
		UnderlayMTU:   1500,
		TunnelIfindex: 4242,
		ENIs: []ENI{
			{Name: "a", Interface: "if-a", VNI: vniRed, IP: ipA, Gateway: netip.MustParseAddr("10.0.1.1"), VPC: vpc, Subnet: subnetA, MAC: macA, SourceDestCheck: true, SGIngress: allowAll, SGEgress: allowAll},
			{Name: "b", Interface: "if-b", VNI: vniRed, IP: ipB, Gateway: netip.MustParseAddr("10.0.1.1"), VPC: vpc, Subnet: subnetA, MAC: macB, SourceDestCheck: true, SGIngress: allowAll, SGEgress: allowAll},
		},
		Routes: []Route{
			{VNI: vniRed, IP: ipA, MAC: macA, ENI: "a"},
			{VNI: vniRed, IP: ipB, MAC: macB, ENI: "b"},
			{VNI: vniRed, IP: ipR, MAC: macR, Remote: hostB},
		},
		Peers:     []netip.Addr{hostB},
		Substrate: []netip.Prefix{netip.PrefixFrom(hostA, 32), netip.PrefixFrom(hostB, 32), netip.MustParsePrefix("169.254.0.0/16")},
	}
	return st
}

// testIfindex resolves testState's interfaces: a on loopback.
func testIfindex(n string) (int, error) {
	return map[string]int{"if-a": testENIIfindex, "if-b": 777}[n], nil
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// skbCtx is the head of struct __sk_buff up to ifindex, the part
// BPF_PROG_TEST_RUN lets a caller set.
func skbCtx(ifindex uint32) []byte {
	b := make([]byte, 44)
	binary.NativeEndian.PutUint32(b[40:], ifindex)
	return b
}

func runTC(t testing.TB, prog *ebpf.Program, ifindex uint32, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt)+256)
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbCtx(ifindex)})
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, out
}

// eniHook runs the ENI program of one hook on a frame from ENI a.
type eniHook struct {
	name string
	// run returns the verdict ("drop", "pass", "back" = out of the
	// interface it came in on, "redirect") and the frame after the program.
	run func(t testing.TB, pkt []byte) (string, []byte)
	// encapAt is where the outer IPv4 header starts in an encapsulated
	// frame: tc keeps an Ethernet header that the redirect strips.
	encapAt int
}

func eniHooks(d *Datapath) []eniHook {
	tc, _, _ := d.Programs()
	xdp := d.ENIXDP()
	return []eniHook{
		{name: "tc", encapAt: 14, run: func(t testing.TB, pkt []byte) (string, []byte) {
			ret, out := runTC(t, tc, testENIIfindex, pkt)
			switch ret {
			case tcActShot:
				return "drop", out
			case tcActRedirect:
				// tc redirects back with bpf_redirect to the same
				// interface: the return code alone cannot tell.
				return "redirect", out
			}
			return "pass", out
		}},
		{name: "xdp", encapAt: 0, run: func(t testing.TB, pkt []byte) (string, []byte) {
			t.Helper()
			out := make([]byte, len(pkt)+256)
			ctx := make([]byte, 24) // struct xdp_md
			binary.NativeEndian.PutUint32(ctx[4:], uint32(len(pkt)))
			binary.NativeEndian.PutUint32(ctx[12:], testENIIfindex)
			opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: ctx}
			ret, err := xdp.Run(opts)
			if err != nil {
				t.Fatalf("xdp test run: %v", err)
			}
			out = out[:len(opts.DataOut)]
			switch ret {
			case xdpDrop:
				return "drop", out
			case xdpTx:
				return "back", out
			case xdpRedirect:
				return "redirect", out
			}
			return "pass", out
		}},
	}
}

// verdictIs compares a verdict with the XDP-precise expectation.
func verdictIs(h eniHook, got, want string) bool {
	if h.name == "tc" && want == "back" {
		want = "redirect"
	}
	return got == want
}

// checksum is the Internet checksum (encap's, checked against gopacket).
func checksum(b []byte) uint16 { return encap.Checksum(b) }

// ipv4Packet builds Ethernet + IPv4 + payload (proto, with DF when df).
func ipv4Packet(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, df bool, payload []byte) []byte {
	p := make([]byte, 14+20+len(payload))
	copy(p[0:6], dstMAC)
	copy(p[6:12], srcMAC)
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(payload)))
	if df {
		binary.BigEndian.PutUint16(ip[6:], 0x4000)
	}
	ip[8] = 64
	ip[9] = proto
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	copy(p[34:], payload)
	return p
}

func icmpEcho(n int) []byte {
	b := make([]byte, 8+n)
	b[0] = 8
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

func dropCount(t testing.TB, d *Datapath, reason string) uint64 {
	t.Helper()
	m, err := d.Drops()
	if err != nil {
		t.Fatal(err)
	}
	c := m[reason]
	return c[0] + c[1]
}

func TestENIProxyARP(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) { testProxyARP(t, d, h) })
	}
}

func testProxyARP(t *testing.T, d *Datapath, h eniHook) {
	pkt := make([]byte, 42)
	copy(pkt[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(pkt[6:12], macA)
	binary.BigEndian.PutUint16(pkt[12:], 0x0806)
	arp := pkt[14:]
	binary.BigEndian.PutUint16(arp[0:], 1)
	binary.BigEndian.PutUint16(arp[2:], 0x0800)
	arp[4], arp[5] = 6, 4
	binary.BigEndian.PutUint16(arp[6:], 1)
	copy(arp[8:14], macA)
	a := ipA.As4()
	copy(arp[14:18], a[:])
	gw := netip.MustParseAddr("10.0.1.1").As4()
	copy(arp[24:28], gw[:])

	ret, out := h.run(t, append([]byte(nil), pkt...))
	if !verdictIs(h, ret, "back") {
		t.Fatalf("verdict %s, want back to the workload", ret)
	}
	if got := net.HardwareAddr(out[6:12]); got.String() != GatewayMAC.String() {
		t.Errorf("reply from %v, want gateway MAC %v", got, GatewayMAC)
	}
	if op := binary.BigEndian.Uint16(out[20:22]); op != 2 {
		t.Errorf("ARP op %d, want reply", op)
	}
	if got := net.HardwareAddr(out[22:28]); got.String() != GatewayMAC.String() {
		t.Errorf("sender hardware address %v, want %v", got, GatewayMAC)
	}
	if got := netip.AddrFrom4([4]byte(out[28:32])); got != netip.MustParseAddr("10.0.1.1") {
		t.Errorf("sender protocol address %v, want 10.0.1.1", got)
	}

	// A request for an address outside the VPC is not answered.
	outside := netip.MustParseAddr("192.0.2.1").As4()
	copy(arp[24:28], outside[:])
	before := dropCount(t, d, "arp")
	if ret, _ := h.run(t, pkt); ret != "drop" {
		t.Fatalf("verdict %s for ARP outside the VPC, want drop", ret)
	}
	if dropCount(t, d, "arp") != before+1 {
		t.Error("ARP drop not counted")
	}
}

func TestENISourceCheck(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) { testSourceCheck(t, d, h) })
	}
}

func testSourceCheck(t *testing.T, d *Datapath, h eniHook) {
	cases := []struct {
		name string
		mac  net.HardwareAddr
		src  netip.Addr
	}{
		{"spoofed IP", macA, netip.MustParseAddr("10.0.1.99")},
		{"spoofed MAC", net.HardwareAddr{2, 0, 0, 0, 0, 99}, ipA},
	}
	for _, c := range cases {
		before := dropCount(t, d, "source_check")
		pkt := ipv4Packet(c.mac, GatewayMAC, c.src, ipB, 1, false, icmpEcho(8))
		if ret, _ := h.run(t, pkt); ret != "drop" {
			t.Errorf("%s: verdict %s, want drop", c.name, ret)
		}
		if got := dropCount(t, d, "source_check"); got != before+1 {
			t.Errorf("%s: source_check drops %d, want %d", c.name, got, before+1)
		}
	}
}

func TestENILocalDelivery(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) { testLocalDelivery(t, d, h) })
	}
}

func testLocalDelivery(t *testing.T, d *Datapath, h eniHook) {
	before, _ := d.ENICounters("b")
	pkt := ipv4Packet(macA, GatewayMAC, ipA, ipB, 1, false, icmpEcho(8))
	ret, out := h.run(t, pkt)
	if ret != "redirect" {
		t.Fatalf("verdict %s, want redirect", ret)
	}
	if got := net.HardwareAddr(out[0:6]); got.String() != macB.String() {
		t.Errorf("destination MAC %v, want %v", got, macB)
	}
	if got := net.HardwareAddr(out[6:12]); got.String() != GatewayMAC.String() {
		t.Errorf("source MAC %v, want gateway %v", got, GatewayMAC)
	}
	c, err := d.ENICounters("b")
	if err != nil {
		t.Fatal(err)
	}
	c[Ingress].Packets -= before[Ingress].Packets
	c[Ingress].Bytes -= before[Ingress].Bytes
	if c[Ingress].Packets != 1 || c[Ingress].Bytes != uint64(len(pkt)-14) {
		t.Errorf("ENI b ingress counters %+v, want 1 packet of %d bytes", c[Ingress], len(pkt)-14)
	}
}

func TestENIRemoteEncapsulates(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) { testRemoteEncapsulates(t, h) })
	}
}

func testRemoteEncapsulates(t *testing.T, h eniHook) {
	pkt := ipv4Packet(macA, GatewayMAC, ipA, ipR, 1, false, icmpEcho(8))
	ret, out := h.run(t, append([]byte(nil), pkt...))
	if ret != "redirect" {
		t.Fatalf("verdict %s, want redirect to the tunnel", ret)
	}
	out = out[h.encapAt : h.encapAt+len(pkt)+36]
	outer := out[0:20]
	if outer[0] != 0x45 || outer[9] != 17 {
		t.Fatalf("outer header %x is not IPv4/UDP", outer)
	}
	if got := netip.AddrFrom4([4]byte(outer[12:16])); got != hostA {
		t.Errorf("outer source %v, want %v", got, hostA)
	}
	if got := netip.AddrFrom4([4]byte(outer[16:20])); got != hostB {
		t.Errorf("outer destination %v, want %v", got, hostB)
	}
	if checksum(outer) != 0 {
		t.Error("outer IPv4 checksum is wrong")
	}
	if tl := binary.BigEndian.Uint16(outer[2:]); int(tl) != len(out) {
		t.Errorf("outer total length %d, want %d", tl, len(out))
	}
	udp := out[20:28]
	if port := binary.BigEndian.Uint16(udp[2:]); port != 4789 {
		t.Errorf("UDP destination port %d, want 4789", port)
	}
	vx := out[28:36]
	if vx[0] != 0x08 {
		t.Errorf("VXLAN flags %#x, want I flag", vx[0])
	}
	if vni := binary.BigEndian.Uint32(vx[4:]) >> 8; vni != vniRed {
		t.Errorf("VNI %d, want %d", vni, vniRed)
	}
	if got := net.HardwareAddr(out[36:42]); got.String() != macR.String() {
		t.Errorf("inner destination MAC %v, want %v", got, macR)
	}
	if string(out[50:]) != string(pkt[14:]) {
		t.Error("inner IP packet changed by encapsulation")
	}
}

func TestENIFragNeeded(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) { testFragNeeded(t, d, h) })
	}
}

func testFragNeeded(t *testing.T, d *Datapath, h eniHook) {
	pkt := ipv4Packet(macA, GatewayMAC, ipA, ipR, 1, true, icmpEcho(1400))
	before := dropCount(t, d, "frag_needed")
	ret, out := h.run(t, pkt)
	if !verdictIs(h, ret, "back") {
		t.Fatalf("verdict %s, want the ICMP sent back", ret)
	}
	ip := out[14:34]
	if ip[9] != 1 {
		t.Fatalf("reply protocol %d, want ICMP", ip[9])
	}
	if got := netip.AddrFrom4([4]byte(ip[16:20])); got != ipA {
		t.Errorf("ICMP to %v, want %v", got, ipA)
	}
	icmp := out[34:70]
	if icmp[0] != 3 || icmp[1] != 4 {
		t.Errorf("ICMP type/code %d/%d, want 3/4", icmp[0], icmp[1])
	}
	if mtu := binary.BigEndian.Uint16(icmp[6:]); int(mtu) != InnerMTU(1500) {
		t.Errorf("MTU %d, want %d", mtu, InnerMTU(1500))
	}
	if checksum(icmp) != 0 || checksum(ip) != 0 {
		t.Error("bad checksum in ICMP reply")
	}
	if dropCount(t, d, "frag_needed") != before+1 {
		t.Error("frag_needed not counted")
	}
	// Without DF the packet goes into the tunnel.
	pkt = ipv4Packet(macA, GatewayMAC, ipA, ipR, 1, false, icmpEcho(1400))
	if ret, _ := h.run(t, pkt); ret != "redirect" {
		t.Fatalf("verdict %s for a big non-DF packet, want redirect", ret)
	}
}

func TestENIDropsByReason(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) { testDropsByReason(t, d, h) })
	}
}

func testDropsByReason(t *testing.T, d *Datapath, h eniHook) {
	cases := []struct {
		dst    string
		reason string
	}{
		{"198.18.0.11", "substrate"}, // own host's underlay
		{"198.18.0.12", "substrate"}, // another host
		{"169.254.169.254", "substrate"},
		{"10.0.1.1", "substrate"}, // the router itself
		{"10.0.9.9", "no_route"},  // in the VPC, no ENI
		{"8.8.8.8", "no_route"},
	}
	for _, c := range cases {
		before := dropCount(t, d, c.reason)
		pkt := ipv4Packet(macA, GatewayMAC, ipA, netip.MustParseAddr(c.dst), 1, false, icmpEcho(8))
		if ret, _ := h.run(t, pkt); ret != "drop" {
			t.Errorf("to %s: verdict %s, want drop", c.dst, ret)
		}
		if got := dropCount(t, d, c.reason); got != before+1 {
			t.Errorf("to %s: %s drops %d, want %d", c.dst, c.reason, got, before+1)
		}
	}
}

func TestDropReasonsAllNamed(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range DropReasonNames() {
		if n == "unknown" {
			t.Errorf("a drop reason has no name: %v", DropReasonNames())
		}
		if seen[n] {
			t.Errorf("drop reason name %q used twice", n)
		}
		seen[n] = true
	}
	for _, must := range []string{"source_check", "no_route", "substrate", "sg_ingress", "sg_egress", "nacl_ingress", "nacl_egress", "ct_invalid", "no_tunnel", "underlay_filter", "frag_needed", "malformed"} {
		if !seen[must] {
			t.Errorf("SPEC §8 reason %q missing", must)
		}
	}
}

func TestENIClampsMSS(t *testing.T) {
	d := testDatapath(t)
	for _, h := range eniHooks(d) {
		t.Run(h.name, func(t *testing.T) {
			tcp := make([]byte, 24)
			binary.BigEndian.PutUint16(tcp[0:], 40000)
			binary.BigEndian.PutUint16(tcp[2:], 80)
			tcp[12] = 6 << 4
			tcp[13] = 0x02 // SYN
			tcp[20], tcp[21] = 2, 4
			binary.BigEndian.PutUint16(tcp[22:], 1460)
			pkt := ipv4Packet(macA, GatewayMAC, ipA, ipR, 6, true, tcp)
			// TCP checksum over the pseudo header.
			ph := append(append(append([]byte{}, pkt[26:34]...), 0, 6, 0, 24), tcp...)
			binary.BigEndian.PutUint16(pkt[34+16:], checksum(ph))
			ret, out := h.run(t, pkt)
			if ret != "redirect" {
				t.Fatalf("verdict %s, want redirect to the tunnel", ret)
			}
			inner := out[h.encapAt+50:]
			got := inner[20 : 20+24]
			if mss := binary.BigEndian.Uint16(got[22:]); int(mss) != InnerMTU(1500)-40 {
				t.Fatalf("MSS %d, want %d", mss, InnerMTU(1500)-40)
			}
			ph = append(append(append([]byte{}, inner[12:20]...), 0, 6, 0, 24), got...)
			if checksum(ph) != 0 {
				t.Fatal("TCP checksum wrong after the MSS was clamped")
			}
		})
	}
}
