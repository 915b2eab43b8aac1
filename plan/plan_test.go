package plan

import (
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// load parses testdata/plan.yaml: three hosts (MTUs 1500, 1420, 9000),
// two VPCs with the same CIDR, every kind of rule.
func load(t *testing.T) *topology.Topology {
	t.Helper()
	b, err := os.ReadFile("testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top, err := topology.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func forHost(t *testing.T, top *topology.Topology, host string) *Host {
	t.Helper()
	p, err := ForHost(top, host)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func eniOf(t *testing.T, s *dataplane.State, name string) dataplane.ENI {
	t.Helper()
	for _, e := range s.ENIs {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no ENI %s in the plan", name)
	return dataplane.ENI{}
}

// sameRules compares rule lists; nil and empty are the same (no rule).
func sameRules(got, want []dataplane.Rule) bool {
	if len(got) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(got, want)
}

func fmtRules(rs []dataplane.Rule) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n\t{proto %d ports %#x-%#x %s allow %v}", r.Protocol, r.PortLo, r.PortHi, r.CIDR, r.Allow)
	}
	return b.String()
}

func allow(proto int, lo, hi uint16, cidr string) dataplane.Rule {
	return dataplane.Rule{Protocol: proto, PortLo: lo, PortHi: hi, CIDR: pfx(cidr), Allow: true}
}

func deny(proto int, lo, hi uint16, cidr string) dataplane.Rule {
	r := allow(proto, lo, hi, cidr)
	r.Allow = false
	return r
}

// allOut is the implicit allow-all egress (no groups, or egress omitted);
// the datapath ignores ports for ProtoAll, so it carries none.
var allOut = []dataplane.Rule{allow(dataplane.ProtoAll, 0, 0, "0.0.0.0/0")}

// TestSecurityGroupRules compiles each ENI's groups: CIDR rules, group
// references expanded to the members' addresses on every host, each
// protocol's port or ICMP type/code range, and egress omitted (all out)
// against egress [] (nothing out).
func TestSecurityGroupRules(t *testing.T) {
	top := load(t)
	cases := []struct {
		host, eni string
		in, out   []dataplane.Rule
	}{
		{"h1", "a1", []dataplane.Rule{
			allow(6, 80, 80, "10.0.0.0/16"),                      // tcp, one port
			allow(6, 1000, 2000, "192.0.2.0/24"),                 // tcp, a range
			allow(17, 53, 53, "0.0.0.0/0"),                       // udp
			allow(1, 0, 0xffff, "0.0.0.0/0"),                     // icmp, any type
			allow(1, 0x0800, 0x08ff, "10.0.0.0/8"),               // icmp type 8, any code
			allow(1, 0x0304, 0x0304, "10.0.0.0/8"),               // icmp type 3 code 4
			allow(47, 0, 0xffff, "10.0.0.0/8"),                   // a protocol number: no ports
			allow(dataplane.ProtoAll, 0, 0xffff, "10.0.1.20/32"), // source_group db: b1 on h2
			allow(dataplane.ProtoAll, 0, 0xffff, "10.0.2.20/32"), // and b2 on h2
		}, allOut}, // egress omitted: all out
		{"h1", "a2", nil, allOut}, // no groups: nothing in, all out
		{"h1", "a3", []dataplane.Rule{allow(dataplane.ProtoAll, 0, 0xffff, "0.0.0.0/0")}, allOut},
		{"h2", "b1", []dataplane.Rule{
			allow(6, 5432, 5432, "10.0.1.10/32"), // source_group web: a1 on h1 (not red's a3 at the same address)
			allow(6, 5432, 5432, "10.0.1.30/32"), // and c1 on h3
		}, nil}, // egress []: nothing out
		{"h2", "b2", []dataplane.Rule{
			allow(6, 5432, 5432, "10.0.1.10/32"),
			allow(6, 5432, 5432, "10.0.1.30/32"),
		}, []dataplane.Rule{ // db's egress [] adds nothing, out's rules follow
			allow(17, 123, 123, "10.0.1.10/32"), // destination_group web
			allow(17, 123, 123, "10.0.1.30/32"),
			allow(6, 443, 443, "0.0.0.0/0"),
		}},
	}
	for _, c := range cases {
		t.Run(c.eni, func(t *testing.T) {
			e := eniOf(t, forHost(t, top, c.host).Datapath, c.eni)
			if !sameRules(e.SGIngress, c.in) {
				t.Errorf("ingress:%s\nwant:%s", fmtRules(e.SGIngress), fmtRules(c.in))
			}
			if !sameRules(e.SGEgress, c.out) {
				t.Errorf("egress:%s\nwant:%s", fmtRules(e.SGEgress), fmtRules(c.out))
			}
		})
	}
}

// TestGroupReferenceFollowsMembers: a member added on another host is in
// the expansion; a group without members expands to no rule.
func TestGroupReferenceFollowsMembers(t *testing.T) {
	top := load(t)
	e := top.ENIByName("c1")
	e.SecurityGroups = append(e.SecurityGroups, "db")
	in := eniOf(t, forHost(t, top, "h1").Datapath, "a1").SGIngress
	if got := in[len(in)-1]; got.CIDR != pfx("10.0.1.30/32") {
		t.Errorf("the new member on h3 is not in the expansion: %s", fmtRules(in))
	}
	for i := range top.ENIs {
		top.ENIs[i].SecurityGroups = nil
	}
	top.ENIByName("a1").SecurityGroups = []string{"web"}
	in = eniOf(t, forHost(t, top, "h1").Datapath, "a1").SGIngress
	if len(in) != 7 {
		t.Errorf("a group without members expanded to rules: %s", fmtRules(in))
	}
}

// TestNetworkACL: a subnet's ACL in rule-number order with its actions; a
// subnet without one gets the default NACL (HasNACL false: allow all).
func TestNetworkACL(t *testing.T) {
	s := forHost(t, load(t), "h1").Datapath
	a1 := eniOf(t, s, "a1")
	if !a1.HasNACL {
		t.Fatal("a1's subnet has blue-acl")
	}
	wantIn := []dataplane.Rule{deny(6, 22, 22, "0.0.0.0/0"), allow(dataplane.ProtoAll, 0, 0xffff, "0.0.0.0/0")}
	if !sameRules(a1.NACLIngress, wantIn) {
		t.Errorf("NACL ingress:%s\nwant:%s", fmtRules(a1.NACLIngress), fmtRules(wantIn))
	}
	wantOut := []dataplane.Rule{allow(1, 0, 0xff, "10.0.0.0/8")} // icmp type 0, any code
	if !sameRules(a1.NACLEgress, wantOut) {
		t.Errorf("NACL egress:%s\nwant:%s", fmtRules(a1.NACLEgress), fmtRules(wantOut))
	}
	for _, name := range []string{"a2", "a3"} {
		if e := eniOf(t, s, name); e.HasNACL || len(e.NACLIngress)+len(e.NACLEgress) != 0 {
			t.Errorf("%s: default NACL expected, got %+v", name, e)
		}
	}
}

// TestENIs: each local ENI's addresses, VNI, gateway, interface, flags
// and connection limit; remote ENIs are routes only.
func TestENIs(t *testing.T) {
	s := forHost(t, load(t), "h1").Datapath
	if len(s.ENIs) != 3 {
		t.Fatalf("%d local ENIs, want 3 (a1 a2 a3)", len(s.ENIs))
	}
	cases := []struct {
		name, iface, mac, gw, vpc, subnet string
		vni                               uint32
		sdc, flowLog                      bool
		maxConn                           uint32
	}{
		{"a1", "vpc-a1", "02:00:0a:00:01:0a", "10.0.1.1", "10.0.0.0/16", "10.0.1.0/24", 1001, true, true, 262144 / 3},
		{"a2", "vpc-a2", "02:00:0a:00:02:0a", "10.0.2.1", "10.0.0.0/16", "10.0.2.0/24", 1001, false, true, 5000},
		{"a3", "tap-red", "02:00:00:00:20:02", "10.0.1.1", "10.0.0.0/16", "10.0.1.0/24", 2002, true, false, 262144 / 3},
	}
	for i, c := range cases {
		e := s.ENIs[i]
		if e.Name != c.name || e.Interface != c.iface || e.MAC.String() != c.mac || e.Gateway != addr(c.gw) ||
			e.VPC != pfx(c.vpc) || e.Subnet != pfx(c.subnet) || e.VNI != c.vni || e.SourceDestCheck != c.sdc ||
			e.FlowLog != c.flowLog || e.MaxConnections != c.maxConn {
			t.Errorf("ENI %d: %+v\nwant %+v", i, e, c)
		}
	}
}

// TestMaxConnectionsDefault: the table divided by the host's ENI count,
// at least MinDefaultConnections; max_connections wins.
func TestMaxConnectionsDefault(t *testing.T) {
	for _, c := range []struct {
		enis, set int
		want      uint32
	}{
		{1, 0, 262144},
		{4, 0, 65536},
		{256, 0, 1024},
		{300, 0, 1024}, // 873 would be below the floor
		{300, 77, 77},
	} {
		top := &topology.Topology{
			Hosts: []topology.Host{{Name: "h", UnderlayIP: addr("198.18.0.1"), MTU: 1500}},
			VPCs: []topology.VPC{{Name: "v", VNI: 1, CIDR: pfx("10.0.0.0/8"),
				Subnets: []topology.Subnet{{Name: "s", CIDR: pfx("10.0.0.0/16"), VPC: "v"}}}},
		}
		for i := range c.enis {
			top.ENIs = append(top.ENIs, topology.ENI{Name: fmt.Sprint("e", i), Host: "h", Subnet: "s",
				IP: netip.AddrFrom4([4]byte{10, 0, byte(i / 200), byte(2 + i%200)}), MaxConnections: c.set})
		}
		s, err := Datapath(top, "h")
		if err != nil {
			t.Fatal(err)
		}
		if got := s.ENIs[0].MaxConnections; got != c.want {
			t.Errorf("%d ENIs, max_connections %d: %d, want %d", c.enis, c.set, got, c.want)
		}
	}
}

// TestRoutesAndUnderlay: every ENI of every VPC is a route (local by
// name, remote by its host's underlay address; overlapping VPCs apart by
// VNI); substrate, peers, peer ports and underlay_allow.
func TestRoutesAndUnderlay(t *testing.T) {
	s := forHost(t, load(t), "h1").Datapath
	h2, h3 := addr("198.18.0.2"), addr("198.18.0.3")
	type route struct {
		vni    uint32
		ip     string
		eni    string
		remote netip.Addr
	}
	want := []route{
		{1001, "10.0.1.10", "a1", netip.Addr{}},
		{1001, "10.0.2.10", "a2", netip.Addr{}},
		{2002, "10.0.1.10", "a3", netip.Addr{}},
		{1001, "10.0.1.20", "", h2},
		{1001, "10.0.2.20", "", h2},
		{1001, "10.0.1.30", "", h3},
	}
	if len(s.Routes) != len(want) {
		t.Fatalf("%d routes, want %d: %+v", len(s.Routes), len(want), s.Routes)
	}
	for i, w := range want {
		r := s.Routes[i]
		if r.VNI != w.vni || r.IP != addr(w.ip) || r.ENI != w.eni || r.Remote != w.remote || len(r.MAC) != 6 {
			t.Errorf("route %d: %+v, want %+v", i, r, w)
		}
	}
	if s.UnderlayIP != addr("198.18.0.1") || s.ListenPort != 51820 || s.TunnelIfindex != 0 {
		t.Errorf("underlay %v port %d tunnel %d", s.UnderlayIP, s.ListenPort, s.TunnelIfindex)
	}
	wantSub := []netip.Prefix{pfx("169.254.0.0/16"), pfx("127.0.0.0/8"),
		pfx("198.18.0.1/32"), pfx("198.18.0.2/32"), pfx("198.18.0.3/32")}
	if !reflect.DeepEqual(s.Substrate, wantSub) {
		t.Errorf("substrate %v, want %v", s.Substrate, wantSub)
	}
	if !reflect.DeepEqual(s.Peers, []netip.Addr{h2, h3}) {
		t.Errorf("peers %v", s.Peers)
	}
	if !reflect.DeepEqual(s.PeerPorts, map[netip.Addr]uint16{h2: 40002, h3: 51820}) {
		t.Errorf("peer ports %v", s.PeerPorts)
	}
	wantAllow := []dataplane.AllowRule{{Protocol: 6, Port: 22}, {Protocol: 0, Port: 0}} // all = protocol 0
	if !reflect.DeepEqual(s.UnderlayAllow, wantAllow) {
		t.Errorf("underlay allow %+v, want %+v", s.UnderlayAllow, wantAllow)
	}
	if s2 := forHost(t, load(t), "h2").Datapath; s2.UnderlayAllow != nil || s2.ListenPort != 40002 {
		t.Errorf("h2: underlay allow %+v, listen port %d", s2.UnderlayAllow, s2.ListenPort)
	}
}

// TestPathMTU: the smallest MTU of all hosts, for the datapath, the tunnel
// and mirror truncation alike.
func TestPathMTU(t *testing.T) {
	for _, c := range []struct {
		mtus []int
		want int
	}{
		{nil, 1500},
		{[]int{1500}, 1500},
		{[]int{9000, 1500}, 1500},
		{[]int{1500, 1420, 9000}, 1420},
		{[]int{9000, 9000}, 9000},
	} {
		top := &topology.Topology{}
		for i, m := range c.mtus {
			top.Hosts = append(top.Hosts, topology.Host{Name: fmt.Sprint("h", i), MTU: m})
		}
		if got := PathMTU(top); got != c.want {
			t.Errorf("MTUs %v: path MTU %d, want %d", c.mtus, got, c.want)
		}
	}
	p := forHost(t, load(t), "h3") // its own MTU is 9000; h2's 1420 rules
	if p.Datapath.UnderlayMTU != 1420 || p.Tunnel.MTU != 1420-dataplane.WireGuardOverhead {
		t.Errorf("underlay MTU %d, tunnel MTU %d", p.Datapath.UnderlayMTU, p.Tunnel.MTU)
	}
}

// TestTunnel: every other host is a peer with its key, endpoint (its own
// listen port) and underlay address as the allowed IP.
func TestTunnel(t *testing.T) {
	p := forHost(t, load(t), "h1")
	key := func(b byte) (k tunnel.Key) {
		for i := range k {
			k[i] = b
		}
		return k
	}
	want := Tunnel{ListenPort: 51820, MTU: 1360, Keepalive: 25 * time.Second, Peers: []tunnel.Peer{
		{Name: "h2", PublicKey: key(2), Endpoint: netip.MustParseAddrPort("198.18.0.2:40002"), AllowedIP: pfx("198.18.0.2/32")},
		{Name: "h3", PublicKey: key(3), Endpoint: netip.MustParseAddrPort("198.18.0.3:51820"), AllowedIP: pfx("198.18.0.3/32")},
	}}
	if !reflect.DeepEqual(p.Tunnel, want) {
		t.Errorf("tunnel %+v\nwant %+v", p.Tunnel, want)
	}
	psk := key(9)
	cfg := p.Tunnel.Config("wg-h1", key(1), &psk)
	if cfg.Device != "wg-h1" || cfg.PrivateKey != key(1) || cfg.PresharedKey != &psk || cfg.ListenPort != 51820 ||
		cfg.MTU != 1360 || cfg.Keepalive != 25*time.Second || len(cfg.Peers) != 2 {
		t.Errorf("config %+v", cfg)
	}
	if p.Name != "h1" || p.UnderlayInterface != "eth0" || p.PublicKey != "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=" {
		t.Errorf("host %q interface %q key %q", p.Name, p.UnderlayInterface, p.PublicKey)
	}
	if p2 := forHost(t, load(t), "h2"); p2.UnderlayInterface != "ens5" || p2.Tunnel.ListenPort != 40002 {
		t.Errorf("h2: interface %q port %d", p2.UnderlayInterface, p2.Tunnel.ListenPort)
	}
}

// TestStatusENIs: the local ENIs sorted by name with their names of
// subnet, VPC and ACL and their compiled rule counts.
func TestStatusENIs(t *testing.T) {
	top := load(t)
	top.ENIs[0], top.ENIs[2] = top.ENIs[2], top.ENIs[0] // file order a3 a2 a1
	got := forHost(t, top, "h1").ENIs
	want := []struct {
		name, subnet, vpc, acl string
		vni                    uint32
		in, out                int
	}{
		{"a1", "blue-a", "blue", "blue-acl", 1001, 9, 1},
		{"a2", "blue-b", "blue", "", 1001, 0, 1},
		{"a3", "red-a", "red", "", 2002, 1, 1},
	}
	if len(got) != len(want) {
		t.Fatalf("%d ENIs, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Subnet != w.subnet || g.VPC != w.vpc || g.NetworkACL != w.acl || g.VNI != w.vni ||
			g.IngressRules != w.in || g.EgressRules != w.out {
			t.Errorf("ENI %d: %+v, want %+v", i, g, w)
		}
	}
}

// TestMirrorSessions: only sessions whose source ENI is local, in file
// order with their session numbers (the datapath orders by number);
// filter rules in rule-number order with omitted port ranges as any; an
// omitted direction mirrors nothing; copies to an ENI cut to what the
// path carries, pcap copies to packet_length.
func TestMirrorSessions(t *testing.T) {
	p := forHost(t, load(t), "h1")
	cut := 1420 - dataplane.WireGuardOverhead - dataplane.VXLANOverhead - dataplane.MirrorCopyOverhead
	any := [2]uint16{0, 65535}
	webOnly := []dataplane.MirrorRule{
		{Accept: false, Protocol: 6, Source: pfx("10.0.0.0/8"), Dest: pfx("10.0.1.10/32"),
			SrcPorts: [2]uint16{1024, 65535}, DstPorts: [2]uint16{80, 80}},
		{Accept: true, Protocol: -1, Source: pfx("0.0.0.0/0"), Dest: pfx("0.0.0.0/0"), SrcPorts: any, DstPorts: any},
	}
	egressOnly := []dataplane.MirrorRule{
		{Accept: true, Protocol: 17, Source: pfx("0.0.0.0/0"), Dest: pfx("0.0.0.0/0"), SrcPorts: any, DstPorts: any},
	}
	want := []dataplane.MirrorSession{
		{Name: "m-late", SourceENI: "a1", SessionNumber: 20, Snaplen: cut, Ingress: webOnly, Egress: []dataplane.MirrorRule{}, Target: addr("10.0.1.30"), VNI: 42},
		{Name: "m-early", SourceENI: "a1", SessionNumber: 10, Snaplen: 64, Ingress: []dataplane.MirrorRule{}, Egress: egressOnly},
		{Name: "m-big", SourceENI: "a2", SessionNumber: 1, Snaplen: cut, Ingress: webOnly, Egress: []dataplane.MirrorRule{}, Target: addr("10.0.1.20"), VNI: 44},
	}
	if !reflect.DeepEqual(p.Datapath.Mirror, want) {
		t.Errorf("datapath sessions:\n%+v\nwant\n%+v", p.Datapath.Mirror, want)
	}
	wantRun := []Mirror{
		{Name: "m-late", SourceENI: "a1", Source: addr("10.0.1.10"), VNI: 42, TargetENI: "c1", Target: addr("10.0.1.30")},
		{Name: "m-early", SourceENI: "a1", Source: addr("10.0.1.10"), VNI: 43, Pcap: "/var/log/vpcd/m.pcap"},
		{Name: "m-big", SourceENI: "a2", Source: addr("10.0.2.10"), VNI: 44, TargetENI: "b1", Target: addr("10.0.1.20")},
	}
	if !reflect.DeepEqual(p.Mirrors, wantRun) {
		t.Errorf("mirror sessions:\n%+v\nwant\n%+v", p.Mirrors, wantRun)
	}
	if p3 := forHost(t, load(t), "h3"); len(p3.Mirrors)+len(p3.Datapath.Mirror) != 0 {
		t.Errorf("h3 has no source ENI, yet sessions %+v", p3.Mirrors)
	}
	if p2 := forHost(t, load(t), "h2"); len(p2.Mirrors) != 1 || p2.Mirrors[0].Name != "m-remote" || p2.Mirrors[0].Target != addr("10.0.1.10") {
		t.Errorf("h2 sessions %+v", p2.Mirrors)
	}
	// A packet_length under the path's cut is kept for an ENI target.
	top := load(t)
	top.MirrorSessionByName("m-late").PacketLength = 100
	if got := forHost(t, top, "h1").Datapath.Mirror[0].Snaplen; got != 100 {
		t.Errorf("packet_length 100 to an ENI: snaplen %d", got)
	}
}

// TestFlowLogs: a log covers the local ENIs of its VPC, subnet or ENI; a
// log without a local ENI is left out; the ENIs it covers count flows in
// the datapath.
func TestFlowLogs(t *testing.T) {
	top := load(t)
	meta := map[string]flowlogs.ENIMeta{
		"a1": {VPC: "blue", Subnet: "blue-a", Instance: "web-1", VNI: 1001},
		"a2": {VPC: "blue", Subnet: "blue-b", VNI: 1001},
		"b1": {VPC: "blue", Subnet: "blue-a", VNI: 1001},
		"b2": {VPC: "blue", Subnet: "blue-b", VNI: 1001},
		"c1": {VPC: "blue", Subnet: "blue-a", VNI: 1001},
	}
	cover := func(names ...string) map[string]flowlogs.ENIMeta {
		m := map[string]flowlogs.ENIMeta{}
		for _, n := range names {
			m[n] = meta[n]
		}
		return m
	}
	vpc := func(enis ...string) FlowLog {
		return FlowLog{Name: "fl-vpc", AccountID: "123456789012", ENIs: cover(enis...), TrafficType: "ALL",
			Interval: time.Minute, Format: "default", Destination: "file:///var/log/vpcd/{host}-blue.log"}
	}
	sub := func(enis ...string) FlowLog {
		return FlowLog{Name: "fl-sub", AccountID: "123456789012", ENIs: cover(enis...), TrafficType: "REJECT",
			Interval: 10 * time.Second, Format: "${interface-id} ${action}", Destination: "stdout"}
	}
	remote := FlowLog{Name: "fl-remote", AccountID: "123456789012", ENIs: cover("b1"), TrafficType: "ACCEPT",
		Interval: time.Second, Format: "default", Destination: "stdout"}
	for _, c := range []struct {
		host   string
		want   []FlowLog
		logged map[string]bool
	}{
		{"h1", []FlowLog{vpc("a1", "a2"), sub("a2")}, map[string]bool{"a1": true, "a2": true, "a3": false}},
		{"h2", []FlowLog{vpc("b1", "b2"), sub("b2"), remote}, map[string]bool{"b1": true, "b2": true}},
		{"h3", []FlowLog{vpc("c1")}, map[string]bool{"c1": true}},
	} {
		p := forHost(t, top, c.host)
		if !reflect.DeepEqual(p.FlowLogs, c.want) {
			t.Errorf("%s: flow logs\n%+v\nwant\n%+v", c.host, p.FlowLogs, c.want)
		}
		for name, want := range c.logged {
			if got := eniOf(t, p.Datapath, name).FlowLog; got != want {
				t.Errorf("%s: ENI %s counts flows: %v, want %v", c.host, name, got, want)
			}
		}
	}
}

// TestErrors: what makes a plan impossible fails it whole.
func TestErrors(t *testing.T) {
	if _, err := ForHost(load(t), "nowhere"); err == nil || !strings.Contains(err.Error(), `"nowhere"`) {
		t.Errorf("unknown host: %v", err)
	}
	top := load(t)
	top.HostByName("h3").PublicKey = ""
	if _, err := ForHost(top, "h1"); err == nil || !strings.Contains(err.Error(), "h3") {
		t.Errorf("a peer without a key: %v", err)
	}
	if _, err := Datapath(top, "h1"); err != nil {
		t.Errorf("the datapath needs no keys: %v", err)
	}
	top = load(t)
	top.ENIByName("c1").Subnet = "gone"
	if _, err := ForHost(top, "h1"); err == nil || !strings.Contains(err.Error(), "c1") {
		t.Errorf("an ENI without its subnet: %v", err)
	}
}

// TestPure: planning twice gives equal plans and leaves the topology as
// it was.
func TestPure(t *testing.T) {
	top := load(t)
	before := load(t)
	p1, p2 := forHost(t, top, "h1"), forHost(t, top, "h1")
	if !reflect.DeepEqual(p1, p2) {
		t.Error("two plans of one topology differ")
	}
	if !reflect.DeepEqual(top, before) {
		t.Error("planning changed the topology")
	}
}
