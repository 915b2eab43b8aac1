package dataplane

import (
	"net/netip"
	"testing"
	"time"
)

// udpDatagram is a UDP datagram from src to dst on dport, as RefPacket.
func udpDatagram(src, dst netip.Addr, dport uint16) RefPacket {
	return RefPacket{Proto: 17, Src: src, Dst: dst, SrcPort: 40000, DstPort: dport}
}

// threeFragments splits a datagram into a first fragment of 24 bytes and
// two later ones of 16 and 8.
func threeFragments(id uint16) []RefFragment {
	return []RefFragment{
		{ID: id, Offset: 0, More: true, PayloadLen: 24},
		{ID: id, Offset: 3, More: true, PayloadLen: 16},
		{ID: id, Offset: 5, More: false, PayloadLen: 8},
	}
}

// TestFragmentsFlowLogsAndMirror checks that a fragmented datagram's later
// fragments are counted in flow logs under the first fragment's ports (one
// flow, not a second one with port 0) and that a mirror filter on the
// destination port copies every fragment of a matching datagram and none
// of another.
func TestFragmentsFlowLogsAndMirror(t *testing.T) {
	d := testDatapath(t)
	rd, err := d.NewMirrorReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	st := testState()
	for i := range st.ENIs {
		st.ENIs[i].FlowLog = true
	}
	any := netip.MustParsePrefix("0.0.0.0/0")
	st.Mirror = []MirrorSession{{Name: "m", SourceENI: "a", SessionNumber: 1, Snaplen: 64,
		Egress: []MirrorRule{{Accept: true, Protocol: 17, Source: any, Dest: any, SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{5001, 5001}}}}}
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	prog, _, _ := d.Programs()
	var rec MirrorRecord
	mirrored := func() int {
		n := 0
		for rd.Read(time.Now(), &rec) == nil {
			n++
		}
		return n
	}
	id := uint16(100)
	for _, dst := range []netip.Addr{ipB, ipR} {
		for _, port := range []uint16{5001, 6000} {
			p := udpDatagram(ipA, dst, port)
			id++
			for _, f := range threeFragments(id) {
				if got := verdict(t, d, prog, testENIIfindex, fragmentFrame(macA, p, f)); got != "" {
					t.Fatalf("fragment %+v of a datagram to %s:%d: dropped as %s", f, dst, port, got)
				}
			}
			want := 0
			if port == 5001 {
				want = 3
			}
			if n := mirrored(); n != want {
				t.Errorf("datagram to %s:%d: %d fragments mirrored by a filter on port 5001, want %d", dst, port, n, want)
			}
		}
	}
	dr, err := d.DrainFlows()
	if err != nil {
		t.Fatal(err)
	}
	flows := map[[2]uint16]uint64{}
	for _, s := range dr.Samples {
		if s.ENI == "a" && s.Direction == Egress && s.Protocol == 17 {
			flows[[2]uint16{s.SrcPort, s.DstPort}] += s.Packets
		}
	}
	for _, port := range []uint16{5001, 6000} {
		if n := flows[[2]uint16{40000, port}]; n != 6 {
			t.Errorf("flow 40000 -> %d at a: %d packets, want 6 (three fragments, two datagrams)", port, n)
		}
	}
	if n := flows[[2]uint16{0, 0}]; n != 0 {
		t.Errorf("%d fragments counted as a flow with ports 0", n)
	}
}

// TestTunnelFragments runs fragments from a remote ENI through the tunnel
// program: a datagram whose first fragment the target's groups deny loses
// its later fragments as `fragment`, orphans and fragments that overlap the
// transport header are dropped, and an allowed datagram arrives whole.
func TestTunnelFragments(t *testing.T) {
	d := testDatapath(t)
	st := testState()
	st.ENIs[0].SGIngress = []Rule{{Protocol: 17, PortLo: 5001, PortHi: 5001, CIDR: netip.MustParsePrefix("10.0.0.0/16"), Allow: true}}
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	_, tun, _ := d.Programs()
	inTUNNamespace(t, tun, func(write func([]byte)) {
		delivered := func() uint64 {
			c, _ := d.ENICounters("a")
			return c[Ingress].Packets
		}
		send := func(p RefPacket, f RefFragment) {
			write(vxlanOf(hostB, hostA, vniRed, fragmentFrame(macR, p, f)))
		}
		frags := threeFragments(7)
		before, fragDrops, sgDrops := delivered(), dropCount(t, d, "fragment"), dropCount(t, d, "sg_ingress")
		for _, f := range frags {
			send(udpDatagram(ipR, ipA, 5000), f)
		}
		if n := delivered() - before; n != 0 {
			t.Errorf("%d fragments of a denied datagram delivered", n)
		}
		if n := dropCount(t, d, "sg_ingress") - sgDrops; n != 1 {
			t.Errorf("%d sg_ingress drops, want 1 (the first fragment)", n)
		}
		if n := dropCount(t, d, "fragment") - fragDrops; n != 2 {
			t.Errorf("%d fragment drops, want 2 (the later fragments)", n)
		}

		before = delivered()
		allowed := threeFragments(8)
		for _, f := range allowed {
			send(udpDatagram(ipR, ipA, 5001), f)
		}
		if n := delivered() - before; n != 3 {
			t.Errorf("%d of 3 fragments of an allowed datagram delivered", n)
		}

		// An orphan (its first fragment never came), and a fragment at
		// offset 8 overlapping a TCP header, even after an allowed first.
		fragDrops = dropCount(t, d, "fragment")
		send(udpDatagram(ipR, ipA, 5001), RefFragment{ID: 9, Offset: 3, PayloadLen: 8})
		tcp := RefPacket{Proto: 6, Src: ipR, Dst: ipA, SrcPort: 40000, DstPort: 5001, TCPFlags: tcpSYN}
		send(tcp, RefFragment{ID: 10, Offset: 1, More: true, PayloadLen: 16})
		if n := dropCount(t, d, "fragment") - fragDrops; n != 2 {
			t.Errorf("%d fragment drops for an orphan and an overlapping fragment, want 2", n)
		}
	})
}
