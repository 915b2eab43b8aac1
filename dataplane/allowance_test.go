package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/topology"
)

var (
	vniBlue = uint32(2002)
	macC    = net.HardwareAddr{0x02, 0, 10, 0, 1, 20}
	macRC   = net.HardwareAddr{0x02, 0, 10, 0, 2, 20}
	ipC     = netip.MustParseAddr("10.0.1.20")
	ipRC    = netip.MustParseAddr("10.0.2.20")
)

// eniUDP is a UDP datagram an ENI (mac, src) sends through the VPC router.
func eniUDP(mac net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) []byte {
	udp := make([]byte, 8+4)
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	return ipv4Packet(mac, GatewayMAC, src, dst, 17, false, udp)
}

// allowanceState has two ENIs in two VPCs on this host, each with a peer
// on host B: a (red, on loopback) and c (blue, on ifC). Both may open
// anything and accept nothing unsolicited, so a reply passes only while
// its connection is tracked; a flow log covers both.
func allowanceState(ifC int) (*State, func(string) (int, error)) {
	vpc := netip.MustParsePrefix("10.0.0.0/16")
	gw := netip.MustParseAddr("10.0.1.1")
	st := &State{
		UnderlayIP: hostA, ListenPort: 51820, UnderlayMTU: 1500, TunnelIfindex: 4242,
		ENIs: []ENI{
			{Name: "a", Interface: "if-a", VNI: vniRed, IP: ipA, Gateway: gw, VPC: vpc, Subnet: subnetA, MAC: macA,
				SourceDestCheck: true, SGEgress: allowAll, FlowLog: true},
			{Name: "c", Interface: "if-c", VNI: vniBlue, IP: ipC, Gateway: gw, VPC: vpc, Subnet: subnetA, MAC: macC,
				SourceDestCheck: true, SGEgress: allowAll, FlowLog: true},
		},
		Routes: []Route{
			{VNI: vniRed, IP: ipA, MAC: macA, ENI: "a"},
			{VNI: vniRed, IP: ipR, MAC: macR, Remote: hostB},
			{VNI: vniBlue, IP: ipC, MAC: macC, ENI: "c"},
			{VNI: vniBlue, IP: ipRC, MAC: macRC, Remote: hostB},
		},
		Peers:     []netip.Addr{hostB},
		Substrate: []netip.Prefix{netip.PrefixFrom(hostA, 32), netip.PrefixFrom(hostB, 32)},
	}
	return st, func(n string) (int, error) {
		return map[string]int{"if-a": testENIIfindex, "if-c": ifC}[n], nil
	}
}

// TestConntrackAllowance floods new connections from ENI a, more than the
// whole conntrack table holds: a stops at its share (conntrack_allowance
// drops, counted per ENI), its connection from before the flood carries
// on, and an idle connection of ENI c in another VPC survives: its reply
// still passes. Flow entries likewise: a loses its own flows beyond its
// share of the flow table, c's flow is counted.
func TestConntrackAllowance(t *testing.T) {
	d := testDatapath(t)
	tc, tun, _ := d.Programs()
	ctSize := int(d.eni.Conntrack.MaxEntries())
	inTUNNamespace(t, tun, func(write func([]byte)) {
		// ENI c's interface: BPF_PROG_TEST_RUN wants a real device.
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eni-c"}, PeerName: "eni-c-peer"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		lc, err := netlink.LinkByName("eni-c")
		if err != nil {
			t.Fatal(err)
		}
		ifC := lc.Attrs().Index
		st, ifindexOf := allowanceState(ifC)
		if err := d.Reconcile(st, ifindexOf); err != nil {
			t.Fatal(err)
		}
		limit := DefaultMaxConnections(ctSize, 2)

		send := func(ifindex int, pkt []byte) bool {
			ret, _ := runTC(t, tc, uint32(ifindex), pkt)
			return ret != tcActShot
		}
		delivered := func(eni string, frame []byte) bool {
			before, _ := d.ENICounters(eni)
			write(frame)
			after, _ := d.ENICounters(eni)
			return after[Ingress].Packets == before[Ingress].Packets+1
		}
		replyC := vxlanOf(hostB, hostA, vniBlue, eniUDP(macRC, ipRC, ipC, 53, 5000))
		replyA := vxlanOf(hostB, hostA, vniRed, eniUDP(macR, ipR, ipA, 53, 6000))

		// Only conntrack lets a datagram in: one nobody asked for is
		// dropped.
		if delivered("c", vxlanOf(hostB, hostA, vniBlue, eniUDP(macRC, ipRC, ipC, 53, 5001))) {
			t.Fatal("an unsolicited datagram reached c: the test proves nothing")
		}
		// c asks its peer something whose answer takes a while, and so
		// does a: both connections wait, idle, through the flood.
		if !send(ifC, eniUDP(macC, ipC, ipRC, 5000, 53)) {
			t.Fatal("ENI c could not open a connection")
		}
		if !send(testENIIfindex, eniUDP(macA, ipA, ipR, 6000, 53)) {
			t.Fatal("ENI a could not open a connection")
		}
		d.DrainFlows() // start the flow table empty

		// The flood: more new connections than the whole table holds.
		flood := ctSize + ctSize/8
		passed, refused := 0, 0
		pkt := eniUDP(macA, ipA, ipR, 0, 0)
		udp := pkt[14+20:]
		for i := 0; i < flood; i++ {
			binary.BigEndian.PutUint16(udp[0:], uint16(10000+i/50000))
			binary.BigEndian.PutUint16(udp[2:], uint16(1+i%50000))
			if send(testENIIfindex, pkt) {
				passed++
			} else {
				refused++
			}
		}
		t.Logf("flood of %d: %d passed, %d refused; a's limit %d", flood, passed, refused, limit)
		if got := dropCount(t, d, "conntrack_allowance"); got != uint64(refused) || refused == 0 {
			t.Errorf("conntrack_allowance drops %d, refused %d: want the same, not 0", got, refused)
		}
		u, err := d.ENIUsage("a")
		if err != nil {
			t.Fatal(err)
		}
		if u.MaxConnections != limit || u.Connections != uint64(limit) || u.Refused != uint64(refused) {
			t.Errorf("a's usage %+v, want %d connections of %d and %d refused", u, limit, limit, refused)
		}

		if !delivered("c", replyC) {
			t.Error("c's idle connection did not survive a's flood: its reply was dropped")
		}
		if !delivered("a", replyA) || !send(testENIIfindex, eniUDP(macA, ipA, ipR, 6000, 53)) {
			t.Error("a's connection from before the flood stopped")
		}
		if !send(ifC, eniUDP(macC, ipC, ipRC, 5002, 53)) {
			t.Error("c could not open a new connection after a's flood")
		}

		// Flow entries: a lost what did not fit its share; c's flows
		// were counted.
		drain, err := d.DrainFlows()
		if err != nil {
			t.Fatal(err)
		}
		var cFlows int
		for _, s := range drain.Samples {
			if s.ENI == "c" {
				cFlows++
			}
		}
		if drain.Lost["c"] != 0 || cFlows == 0 {
			t.Errorf("c's flows: %d lost, %d counted; want none lost", drain.Lost["c"], cFlows)
		}
		if drain.Lost["a"] == 0 {
			t.Errorf("a's flows beyond its share were not counted as lost")
		}
	})
}

// TestConntrackSweep shows that the daemon's sweep frees a connection the
// datapath no longer honours (closed or expired) from its ENI's count, and
// that the count heals after entries vanish behind its back.
func TestConntrackSweep(t *testing.T) {
	d := testDatapath(t)
	tc, _, _ := d.Programs()
	st := testState()
	st.ENIs[0].MaxConnections = 3
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SweepConntrack(); err != nil { // as the daemon does at its start
		t.Fatal(err)
	}
	open := func(port uint16) bool {
		ret, _ := runTC(t, tc, testENIIfindex, eniUDP(macA, ipA, ipR, port, 53))
		return ret != tcActShot
	}
	for p := uint16(1); p <= 3; p++ {
		if !open(p) {
			t.Fatalf("connection %d of 3 refused", p)
		}
	}
	if open(4) {
		t.Fatal("a fourth connection passed a limit of 3")
	}
	if got := dropCount(t, d, "conntrack_allowance"); got != 1 {
		t.Fatalf("conntrack_allowance drops %d, want 1", got)
	}
	// Age one entry past its timeout, remove another as the LRU would.
	var k bpf.EniCtKey
	var v bpf.EniCtEntry
	var keys []bpf.EniCtKey
	it := d.eni.Conntrack.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if len(keys) != 3 {
		t.Fatalf("%d entries in the table, want 3", len(keys))
	}
	d.eni.Conntrack.Lookup(keys[0], &v)
	v.LastSeen -= 31 * nsec
	if err := d.eni.Conntrack.Put(keys[0], v); err != nil {
		t.Fatal(err)
	}
	d.eni.Conntrack.Delete(keys[1])
	if open(5) {
		t.Fatal("a connection passed before the sweep freed room")
	}
	sw, err := d.SweepConntrack()
	if err != nil {
		t.Fatal(err)
	}
	if sw.Deleted != 1 || sw.Entries != 1 || sw.Evicted != 1 {
		t.Errorf("sweep %+v, want 1 deleted, 1 left and 1 evicted", sw)
	}
	if u, _ := d.ENIUsage("a"); u.Connections != 1 || u.MaxConnections != 3 || u.Refused != 2 {
		t.Errorf("a's usage after the sweep %+v, want 1 connection of 3, 2 refused", u)
	}
	// An entry the datapath never counted (one an older version made):
	// the next sweep counts it all the same.
	id, _ := d.ENIID("a")
	v.LastSeen = monotonicNow()
	if err := d.eni.Conntrack.Put(bpf.EniCtKey{EniId: id, RemoteIp: 99, LocalPort: 99, RemotePort: 53, Proto: 17}, v); err != nil {
		t.Fatal(err)
	}
	if sw, err = d.SweepConntrack(); err != nil {
		t.Fatal(err)
	}
	if sw.Evicted != 1 {
		t.Errorf("evictions %d after an uncounted entry appeared, want still 1", sw.Evicted)
	}
	if u, _ := d.ENIUsage("a"); u.Connections != 2 {
		t.Errorf("a's connections after an uncounted entry appeared: %d, want 2", u.Connections)
	}
	if !open(5) {
		t.Error("the sweep's room was not given to a new connection")
	}
	if open(6) {
		t.Error("a fourth connection passed after the sweep")
	}
}

// TestConntrackSizeAgrees keeps topology's idea of the table's size and
// default share in step with the datapath's.
func TestConntrackSizeAgrees(t *testing.T) {
	d := testDatapath(t)
	if int(d.eni.Conntrack.MaxEntries()) != topology.ConntrackTableSize {
		t.Errorf("conntrack table %d entries, topology.ConntrackTableSize %d", d.eni.Conntrack.MaxEntries(), topology.ConntrackTableSize)
	}
	if MinDefaultConnections != topology.MinDefaultConnections {
		t.Errorf("MinDefaultConnections %d, topology's %d", MinDefaultConnections, topology.MinDefaultConnections)
	}
}

// TestConntrackSweepDuringFlood runs the daemon's sweep over and over while
// ENI a opens new connections past its limit, as a loaded host does when a
// sweep pass overlaps a flood: a still stops at its limit (not below, not
// more than one entry per CPU above), its count agrees with the table once
// a pass runs alone, and no connection is taken for an LRU eviction (the
// table never fills).
func TestConntrackSweepDuringFlood(t *testing.T) {
	d := testDatapath(t)
	tc, _, _ := d.Programs()
	const limit = 30000
	st := testState()
	st.ENIs[0].MaxConnections = limit
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	id, _ := d.ENIID("a")
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SweepConntrack(); err != nil { // before any traffic
		t.Fatal(err)
	}

	// Two senders (one per core here) open limit + 1/3 new connections.
	const senders, each = 2, limit * 2 / 3
	var passed, refused atomic.Int64
	var flooding sync.WaitGroup
	errc := make(chan error, senders)
	for s := 0; s < senders; s++ {
		flooding.Add(1)
		go func() {
			defer flooding.Done()
			pkt := eniUDP(macA, ipA, ipR, 0, 0)
			udp := pkt[14+20:]
			out := make([]byte, len(pkt)+256)
			for i := 0; i < each; i++ {
				binary.BigEndian.PutUint16(udp[0:], uint16(10000+s))
				binary.BigEndian.PutUint16(udp[2:], uint16(1+i))
				ret, err := tc.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbCtx(testENIIfindex)})
				if err != nil {
					errc <- err
					return
				}
				if ret == tcActShot {
					refused.Add(1)
				} else {
					passed.Add(1)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { flooding.Wait(); close(done) }()
	sweeps := 0
	var evicted, overcharged uint64
sweeping:
	for {
		select {
		case <-done:
			break sweeping
		default:
		}
		sw, err := d.SweepConntrack()
		if err != nil {
			t.Fatal(err)
		}
		sweeps++
		evicted = max(evicted, sw.Evicted)
		// What the ENI is charged never passes what it opened (but for
		// the packets in flight and the numbering races, a few per CPU).
		u, err := d.ENIUsage("a")
		if err != nil {
			t.Fatal(err)
		}
		if opened := passed.Load(); u.Connections > uint64(opened)+uint64(2*ncpu+senders) && overcharged == 0 {
			overcharged = u.Connections - uint64(opened)
			t.Errorf("during the flood a is charged %d connections, %d over the %d it opened", u.Connections, overcharged, opened)
		}
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	sw, err := d.SweepConntrack() // alone
	if err != nil {
		t.Fatal(err)
	}
	evicted = max(evicted, sw.Evicted)
	var inTable int
	var k bpf.EniCtKey
	var v bpf.EniCtEntry
	for it := d.eni.Conntrack.Iterate(); it.Next(&k, &v); {
		if k.EniId == id {
			inTable++
		}
	}
	u, err := d.ENIUsage("a")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sweeps during the flood; %d passed, %d refused; %d of a's connections in the table, %d counted; %d evicted",
		sweeps, passed.Load(), refused.Load(), inTable, u.Connections, evicted)
	if sweeps < 3 {
		t.Logf("only %d sweeps overlapped the flood: the race was hardly tried", sweeps)
	}
	if inTable < limit || inTable > limit+ncpu {
		t.Errorf("a holds %d connections with max_connections %d; want %d to %d", inTable, limit, limit, limit+ncpu)
	}
	if int(passed.Load()) != inTable {
		t.Errorf("%d new connections passed, %d in the table", passed.Load(), inTable)
	}
	if u.Connections != uint64(inTable) {
		t.Errorf("a's count after a sweep alone: %d; the table holds %d of its connections", u.Connections, inTable)
	}
	if evicted != 0 {
		t.Errorf("the sweeps took %d connections for LRU evictions; the table never filled", evicted)
	}
}

// TestReadUsageStopsAtGivenIndexes: the usage read covers every index this
// daemon gave, and no further (the rest of the 32,768 slots was most of an
// idle daemon's CPU).
func TestReadUsageStopsAtGivenIndexes(t *testing.T) {
	d := testDatapath(t)
	if err := d.Reconcile(testState(), testIfindex); err != nil {
		t.Fatal(err)
	}
	top := uint32(0)
	for _, id := range d.eniIDs {
		top = max(top, id+1)
	}
	if top == 0 || d.usageTop != top {
		t.Fatalf("usageTop %d, want %d (one past the highest index given)", d.usageTop, top)
	}
	id, _ := d.ENIID("a")
	if err := d.eni.EniUsage.Put(id*usageSlots+usageCTRefused, uint64(7)); err != nil {
		t.Fatal(err)
	}
	// A slot of an index never given: not read.
	if err := d.eni.EniUsage.Put((top+5)*usageSlots+usageCTRefused, uint64(9)); err != nil {
		t.Fatal(err)
	}
	got, err := d.readUsage(usageCTRefused)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != int(top) || got[id] != 7 {
		t.Fatalf("readUsage = %v, want %d indexes with a's 7", got, top)
	}
}
