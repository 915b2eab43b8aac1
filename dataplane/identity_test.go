package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/internal/testkit"
)

// identityState is a host with the named ENIs (interfaces if-NAME, fake
// ifindexes from identityIfindex), all in one subnet.
func identityState(names ...string) *State {
	vpc := netip.MustParsePrefix("10.0.0.0/16")
	st := &State{UnderlayIP: hostA, ListenPort: 51820, UnderlayMTU: 1500, TunnelIfindex: 4242}
	for _, n := range names {
		ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(20 + n[0] - 'a')})
		mac := []byte{0x02, 0, 10, 0, 1, byte(20 + n[0] - 'a')}
		st.ENIs = append(st.ENIs, ENI{Name: n, Interface: "if-" + n, VNI: vniRed, IP: ip,
			Gateway: netip.MustParseAddr("10.0.1.1"), VPC: vpc, Subnet: subnetA, MAC: mac,
			SourceDestCheck: true, FlowLog: true, SGIngress: allowAll, SGEgress: allowAll})
		st.Routes = append(st.Routes, Route{VNI: vniRed, IP: ip, MAC: mac, ENI: n})
	}
	return st
}

func identityIfindex(n string) (int, error) { return 700 + int(n[len(n)-1]), nil }

func openAt(t *testing.T, dir string) *Datapath {
	t.Helper()
	d, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	return d
}

func indexes(t *testing.T, d *Datapath, names ...string) map[string]uint32 {
	t.Helper()
	out := map[string]uint32{}
	for _, n := range names {
		id, ok := d.ENIID(n)
		if !ok {
			t.Fatalf("ENI %s has no index", n)
		}
		out[n] = id
	}
	return out
}

// TestENIIndexStableAcrossRestart: ENIs b and c, then a reload adds a
// (which sorts first), then the daemon restarts: every ENI keeps its
// index. A restart over pins of a daemon that kept no record (an
// upgrade) adopts the indexes the enis map holds.
func TestENIIndexStableAcrossRestart(t *testing.T) {
	testkit.NeedRoot(t, "loads eBPF programs")
	dir := fmt.Sprintf("/sys/fs/bpf/vpcd-test-%d-%s", os.Getpid(), sanitize(t.Name()))
	t.Cleanup(func() { Teardown(dir) })

	d := openAt(t, dir)
	if err := d.Reconcile(identityState("b", "c"), identityIfindex); err != nil {
		t.Fatal(err)
	}
	first := indexes(t, d, "b", "c")
	if err := d.Reconcile(identityState("a", "b", "c"), identityIfindex); err != nil {
		t.Fatal(err)
	}
	want := indexes(t, d, "a", "b", "c")
	if want["b"] != first["b"] || want["c"] != first["c"] {
		t.Fatalf("a reload renumbered live ENIs: %v, then %v", first, want)
	}
	d.Close()

	for _, tc := range []struct {
		name   string
		before func()
	}{
		{"restart", func() {}},
		{"restart without the record (pins of an older daemon)", func() {
			if err := os.Remove(filepath.Join(dir, "maps", "eni_ids")); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}},
	} {
		tc.before()
		d := openAt(t, dir)
		if err := d.Reconcile(identityState("a", "b", "c"), identityIfindex); err != nil {
			t.Fatal(err)
		}
		if got := indexes(t, d, "a", "b", "c"); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: indexes %v, before it %v", tc.name, got, want)
		}
		d.Close()
	}
}

// TestENIIndexReuseStartsEmpty gives ENI b connections, flows, fast-path
// entries and counters, removes it, then adds c, which gets b's index:
// c must start with none of b's state.
func TestENIIndexReuseStartsEmpty(t *testing.T) {
	d := testDatapath(t)
	tc, _, _ := d.Programs()
	resolve := func(n string) (int, error) {
		return map[string]int{"if-a": testENIIfindex, "if-b": 777, "if-c": 778}[n], nil
	}
	st := testState()
	st.ENIs[1].FlowLog = true
	if err := d.Reconcile(st, resolve); err != nil {
		t.Fatal(err)
	}
	idB, _ := d.ENIID("b")
	udp := make([]byte, 8)
	udp[1], udp[3], udp[5] = 99, 53, 8
	tcp := make([]byte, 20)
	tcp[1], tcp[3], tcp[12], tcp[13] = 98, 80, 5<<4, tcpSYN
	for range 3 {
		runTC(t, tc, testENIIfindex, ipv4Packet(macA, GatewayMAC, ipA, ipB, 17, false, udp))
	}
	runTC(t, tc, testENIIfindex, ipv4Packet(macA, GatewayMAC, ipA, ipB, 6, false, tcp))

	// What b holds now, by index.
	held := func(id uint32) (ct, flows, fast int, packets uint64) {
		t.Helper()
		cts, err := readMap[bpf.EniCtKey, bpf.EniCtEntry](d.eni.Conntrack)
		if err != nil {
			t.Fatal(err)
		}
		for k := range cts {
			if k.EniId == id {
				ct++
			}
		}
		fl, err := readMap[bpf.EniFlowKey, bpf.EniFlowVal](d.eni.Flows)
		if err != nil {
			t.Fatal(err)
		}
		for k := range fl {
			if k.EniId == id {
				flows++
			}
		}
		fe, err := readMap[bpf.EniFastKey, bpf.EniFastEntry](d.eni.Fastpath)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range fe {
			if v.SrcEniId == id || v.DstEniId == id {
				fast++
			}
		}
		var perCPU []bpf.EniEniCounter
		for dir := uint32(0); dir < 2; dir++ {
			if err := d.eni.EniStats.Lookup(id*2+dir, &perCPU); err != nil {
				t.Fatal(err)
			}
			for _, c := range perCPU {
				packets += c.Packets
			}
		}
		return
	}
	if ct, flows, fast, packets := held(idB); ct == 0 || flows == 0 || fast == 0 || packets == 0 {
		t.Fatalf("b holds %d connections, %d flows, %d fast-path entries, %d packets: the test needs some of each", ct, flows, fast, packets)
	}

	// b goes; c comes.
	st.ENIs = st.ENIs[:1]
	st.Routes = []Route{st.Routes[0], st.Routes[2]}
	if err := d.Reconcile(st, resolve); err != nil {
		t.Fatal(err)
	}
	ipC := netip.MustParseAddr("10.0.1.12")
	c := testState().ENIs[1]
	c.Name, c.Interface, c.IP, c.FlowLog = "c", "if-c", ipC, true
	st.ENIs = append(st.ENIs, c)
	st.Routes = append(st.Routes, Route{VNI: vniRed, IP: ipC, MAC: macB, ENI: "c"})
	if err := d.Reconcile(st, resolve); err != nil {
		t.Fatal(err)
	}
	idC, _ := d.ENIID("c")
	if idC != idB {
		t.Fatalf("c got index %d, not b's freed %d: the test shows nothing", idC, idB)
	}
	if ct, flows, fast, packets := held(idC); ct+flows+fast != 0 || packets != 0 {
		t.Errorf("c starts with b's state: %d connections, %d flows, %d fast-path entries, %d packets", ct, flows, fast, packets)
	}
	conns, err := d.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range conns {
		if cn.ENI == "c" {
			t.Errorf("status lists a connection of c it never made: %+v", cn)
		}
	}
	drain, err := d.DrainFlows()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range drain.Samples {
		if s.ENI == "c" {
			t.Errorf("flow log of c gets b's flow: %+v", s)
		}
	}
}
