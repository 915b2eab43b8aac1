package dataplane

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/internal/testkit"
)

var (
	ipB2    = netip.MustParseAddr("10.0.2.11")
	macB2   = net.HardwareAddr{0x02, 0, 10, 0, 2, 11}
	subnetB = netip.MustParsePrefix("10.0.2.0/24")
	remotes = []netip.Addr{netip.MustParseAddr("10.0.3.10"), netip.MustParseAddr("10.0.3.200"), netip.MustParseAddr("10.0.4.5")}
)

// policyLab loads the datapath inside a fresh network namespace with two
// veths standing for ENIs a (10.0.1.10) and b (10.0.2.11, another subnet),
// and remote ENIs on host B. fn runs on the namespace's thread; apply
// programs a's rules (failing the test on an error) and flushes conntrack.
func policyLab(t *testing.T, fn func(d *Datapath, ifA, ifB uint32, apply func(a ENI))) {
	t.Helper()
	reloadLab(t, func(d *Datapath, ifA, ifB uint32, reconcile func(a ENI) error) {
		fn(d, ifA, ifB, func(a ENI) {
			if err := reconcile(a); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			d.FlushConntrack()
		})
	})
}

// reloadLab is policyLab with the reconcile left to the test: reconcile
// programs the datapath with a's rules and returns its error.
func reloadLab(t *testing.T, fn func(d *Datapath, ifA, ifB uint32, reconcile func(a ENI) error)) {
	t.Helper()
	testkit.NeedRoot(t, "loads eBPF programs")
	defer testkit.FreshNamespace(t)()
	idx := map[string]int{}
	for _, n := range []string{"d-a", "d-b"} {
		la := netlink.NewLinkAttrs()
		la.Name = n
		// veth: this kernel has no dummy driver.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: n + "-p"}); err != nil {
			t.Fatal(err)
		}
		l, _ := netlink.LinkByName(n)
		netlink.LinkSetUp(l)
		idx[n] = l.Attrs().Index
	}
	dir := fmt.Sprintf("/sys/fs/bpf/vpcd-test-%d-%s", os.Getpid(), sanitize(t.Name()))
	t.Cleanup(func() { Teardown(dir) })
	d, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	defer d.Close()
	vpc := netip.MustParsePrefix("10.0.0.0/16")
	b := ENI{Name: "b", Interface: "d-b", VNI: vniRed, IP: ipB2, Gateway: netip.MustParseAddr("10.0.2.1"), VPC: vpc,
		Subnet: subnetB, MAC: macB2, SourceDestCheck: true, SGIngress: allowAll, SGEgress: allowAll}
	reconcile := func(a ENI) error {
		a.Name, a.Interface, a.VNI, a.IP, a.Gateway, a.VPC, a.Subnet, a.MAC, a.SourceDestCheck =
			"a", "d-a", vniRed, ipA, netip.MustParseAddr("10.0.1.1"), vpc, subnetA, macA, true
		st := &State{UnderlayIP: hostA, ListenPort: 51820, UnderlayMTU: 1500, TunnelIfindex: 4242,
			ENIs:   []ENI{a, b},
			Routes: []Route{{VNI: vniRed, IP: ipA, MAC: macA, ENI: "a"}, {VNI: vniRed, IP: ipB2, MAC: macB2, ENI: "b"}},
			Peers:  []netip.Addr{hostB}}
		for _, r := range remotes {
			st.Routes = append(st.Routes, Route{VNI: vniRed, IP: r, MAC: macR, Remote: hostB})
		}
		return d.Reconcile(st, func(n string) (int, error) { return idx[n], nil })
	}
	fn(d, uint32(idx["d-a"]), uint32(idx["d-b"]), reconcile)
}

// l4Packet builds a frame for p from the given MAC.
func l4Packet(mac net.HardwareAddr, p RefPacket) []byte {
	var l4 []byte
	switch p.Proto {
	case 6:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		l4[12] = 5 << 4
		l4[13] = p.TCPFlags
	case 17:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		binary.BigEndian.PutUint16(l4[4:], 8)
	case 1:
		l4 = make([]byte, 8)
		l4[0], l4[1] = p.ICMPType, p.ICMPCode
		if icmpQuery(p.ICMPType) {
			binary.BigEndian.PutUint16(l4[4:], p.SrcPort)
		}
	default:
		l4 = make([]byte, 4)
	}
	return ipv4Packet(mac, GatewayMAC, p.Src, p.Dst, p.Proto, false, l4)
}

// verdict runs a frame through the ENI program on ifindex and names what
// happened: "" (forwarded) or the drop reason.
func verdict(t testing.TB, d *Datapath, prog *ebpf.Program, ifindex uint32, pkt []byte) string {
	t.Helper()
	before, err := d.Drops()
	if err != nil {
		t.Fatal(err)
	}
	ret, _ := runTC(t, prog, ifindex, pkt)
	if ret == tcActRedirect {
		return ""
	}
	after, _ := d.Drops()
	for r, c := range after {
		if c[0]+c[1] != before[r][0]+before[r][1] {
			return r
		}
	}
	return fmt.Sprintf("verdict %d without a counted reason", ret)
}

var ruleCIDRs = []string{"0.0.0.0/0", "10.0.0.0/16", "10.0.2.0/24", "10.0.2.11/32", "10.0.3.0/24", "10.0.3.128/25",
	"10.0.3.10/32", "192.168.0.0/16", "10.0.1.0/24", "10.0.4.0/30"}
var interestingPorts = []uint16{0, 22, 53, 80, 443, 1024, 5000, 8080, 40000, 65535}

func randomRule(r *rand.Rand) Rule {
	rule := Rule{CIDR: netip.MustParsePrefix(ruleCIDRs[r.Intn(len(ruleCIDRs))]), Allow: r.Intn(3) > 0}
	switch r.Intn(5) {
	case 0, 1:
		rule.Protocol = []int{6, 17}[r.Intn(2)]
		rule.PortLo = interestingPorts[r.Intn(len(interestingPorts))]
		span := []uint16{0, 0, 10, 1000, 65535}[r.Intn(5)]
		rule.PortHi = rule.PortLo + min(span, 65535-rule.PortLo)
	case 2:
		rule.Protocol = 1
		switch r.Intn(3) {
		case 0:
			rule.PortLo, rule.PortHi = 0, 0xffff
		case 1:
			ty := []uint16{0, 3, 8, 13, 14, 11}[r.Intn(6)]
			rule.PortLo, rule.PortHi = ty<<8, ty<<8|0xff
		default:
			v := []uint16{0, 3<<8 | 4, 8 << 8}[r.Intn(3)]
			rule.PortLo, rule.PortHi = v, v
		}
	case 3:
		rule.Protocol, rule.PortLo, rule.PortHi = 47, 0, 0xffff
	default:
		rule.Protocol = ProtoAll
	}
	return rule
}

func randomRules(r *rand.Rand, max int, allow bool) []Rule {
	rules := make([]Rule, r.Intn(max+1))
	for i := range rules {
		rules[i] = randomRule(r)
		if allow {
			rules[i].Allow = true
		}
	}
	return rules
}

func randomPacket(r *rand.Rand, src, dst netip.Addr) RefPacket {
	p := RefPacket{Src: src, Dst: dst, Proto: []uint8{6, 6, 17, 1, 47}[r.Intn(5)]}
	ports := []uint16{22, 53, 80, 443, 1024, 5000, 8080, 40000}
	p.SrcPort, p.DstPort = ports[r.Intn(len(ports))], ports[r.Intn(len(ports))]
	switch p.Proto {
	case 6:
		p.TCPFlags = []uint8{tcpSYN, tcpSYN, tcpSYN | tcpACK, tcpACK, tcpACK | 0x08, tcpFIN | tcpACK, tcpRST, tcpRST | tcpACK}[r.Intn(8)]
	case 1:
		p.ICMPType = []uint8{8, 8, 0, 0, 13, 14, 3, 11, 5}[r.Intn(9)]
		p.ICMPCode = []uint8{0, 4}[r.Intn(2)]
		p.SrcPort, p.DstPort = uint16(1+r.Intn(2)), 0
		if !icmpQuery(p.ICMPType) {
			p.SrcPort = 0
		}
	case 47:
		p.SrcPort, p.DstPort = 0, 0
	}
	return p
}

// fragmentFrame builds the frame of one IPv4 fragment of p: a first
// fragment carries p's transport header (cut to f.PayloadLen), a later one
// filler.
func fragmentFrame(mac net.HardwareAddr, p RefPacket, f RefFragment) []byte {
	payload := make([]byte, f.PayloadLen)
	for i := range payload {
		payload[i] = byte(0xa5 ^ i)
	}
	if f.Offset == 0 {
		l4 := l4Packet(mac, p)[34:]
		copy(payload, l4)
	}
	pkt := ipv4Packet(mac, GatewayMAC, p.Src, p.Dst, p.Proto, false, payload)
	ip := pkt[14:34]
	binary.BigEndian.PutUint16(ip[4:], f.ID)
	fo := f.Offset
	if f.More {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], fo)
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return pkt
}

// randomDatagram splits a datagram of p into fragments as a sender (or an
// attacker) might: in order, out of order, with the first one lost, with a
// tiny first fragment, or with a fragment that overlaps the transport
// header.
func randomDatagram(r *rand.Rand, id uint16) []RefFragment {
	n := 2 + r.Intn(3)
	frags := make([]RefFragment, n)
	off := uint16(0)
	for i := range frags {
		words := uint16(1 + r.Intn(6))
		if i == 0 {
			words = uint16(3 + r.Intn(4)) // room for any transport header
		}
		frags[i] = RefFragment{ID: id, Offset: off, More: i < n-1, PayloadLen: int(words) * 8}
		off += words
	}
	switch r.Intn(8) {
	case 0: // out of order
		r.Shuffle(n, func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
	case 1: // the first fragment lost: orphans
		frags = frags[1:]
	case 2: // a tiny first fragment (RFC 1858)
		frags[0].PayloadLen = 4
	case 3: // a fragment overlapping the transport header, after the first
		over := RefFragment{ID: id, Offset: uint16(1 + r.Intn(2)), More: true, PayloadLen: 16}
		frags = append(frags[:1], append([]RefFragment{over}, frags[1:]...)...)
	case 4: // the last fragment first
		frags[0], frags[n-1] = frags[n-1], frags[0]
	}
	return frags
}

// TestPolicyDifferential runs 100,000 random packets (random 5-tuples,
// flags and directions, ICMP types, fragmented datagrams in order, out of
// order, orphaned and overlapping, under random rule sets) through the
// eBPF ENI program with BPF_PROG_TEST_RUN and through the Go reference
// evaluator, and requires the same verdict, drop reason included, for every
// one.
func TestPolicyDifferential(t *testing.T) {
	const ruleSets, perSet = 50, 2000
	policyLab(t, func(d *Datapath, ifA, ifB uint32, apply func(ENI)) {
		prog, _, _ := d.Programs()
		r := rand.New(rand.NewSource(7))
		mismatches, fragments := 0, 0
		refFrags := RefFragments{}
		nextID := uint16(1)
		for set := 0; set < ruleSets; set++ {
			a := ENI{SGIngress: randomRules(r, 6, true)}
			if r.Intn(4) == 0 {
				a.SGEgress = allowAll
			} else {
				a.SGEgress = randomRules(r, 6, true)
			}
			if r.Intn(2) == 0 {
				a.HasNACL = true
				a.NACLIngress = randomRules(r, 5, false)
				a.NACLEgress = randomRules(r, 5, false)
			}
			apply(a)
			refA := NewRefENI(a)
			refA.ENI.Subnet = subnetA
			refB := NewRefENI(ENI{Subnet: subnetB, SGIngress: allowAll, SGEgress: allowAll})
			aOut := func(p RefPacket) string { return refA.Check(p, Egress) }
			aIn := func(p RefPacket) string { return refA.Check(p, Ingress) }
			bOut := func(p RefPacket) string { return refB.Check(p, Egress) }
			bIn := func(p RefPacket) string { return refB.Check(p, Ingress) }
			for i := 0; i < perSet; {
				var p RefPacket
				var steps []func(RefPacket) string
				var mac net.HardwareAddr
				var ifindex uint32
				switch r.Intn(3) {
				case 0: // a to a remote ENI
					p = randomPacket(r, ipA, remotes[r.Intn(len(remotes))])
					steps, mac, ifindex = []func(RefPacket) string{aOut}, macA, ifA
				case 1: // a to b on this host: a's egress, then b's ingress
					p = randomPacket(r, ipA, ipB2)
					steps, mac, ifindex = []func(RefPacket) string{aOut, bIn}, macA, ifA
				default: // b to a: b's egress, then a's ingress
					p = randomPacket(r, ipB2, ipA)
					steps, mac, ifindex = []func(RefPacket) string{bOut, aIn}, macB2, ifB
				}
				frags := []RefFragment{{}}
				if r.Intn(4) == 0 {
					frags = randomDatagram(r, nextID)
					nextID++
				}
				for _, f := range frags {
					var want, got string
					if f == (RefFragment{}) {
						want, _ = refFrags.Forward(vniRed, p, f, steps...)
						got = verdict(t, d, prog, ifindex, l4Packet(mac, p))
					} else {
						fragments++
						want, _ = refFrags.Forward(vniRed, p, f, steps...)
						got = verdict(t, d, prog, ifindex, fragmentFrame(mac, p, f))
					}
					if got != want {
						mismatches++
						if mismatches <= 10 {
							t.Errorf("rule set %d packet %d %+v %+v: datapath %q, reference %q\nENI a: %+v", set, i, p, f, got, want, a)
						}
					}
					i++
				}
			}
		}
		if mismatches > 0 {
			t.Fatalf("%d of %d verdicts differ", mismatches, ruleSets*perSet)
		}
		t.Logf("%d packets, %d of them fragments: all verdicts agree", ruleSets*perSet, fragments)
	})
}
