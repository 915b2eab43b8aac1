package topology

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, doc string) *Topology {
	t.Helper()
	top, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: unexpected errors:\n%v", err)
	}
	return top
}

func mustLoad(t *testing.T, name string) *Topology {
	t.Helper()
	top, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("Load(%s): unexpected errors:\n%v", name, err)
	}
	return top
}

// errorList asserts that err is a non-empty ErrorList and returns it.
func errorList(t *testing.T, err error) ErrorList {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("want a non-empty ErrorList, got %T %v", err, err)
	}
	return list
}

// TestSpecExampleVerbatim parses SPEC §2's example as printed: its
// placeholder key and its mirror target "collector" (an ENI the example
// does not define) are the only problems.
func TestSpecExampleVerbatim(t *testing.T) {
	data, err := os.ReadFile("testdata/spec_example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data)
	got := errorList(t, err).Error()
	want := `hosts[0].public_key: invalid WireGuard key "base64...": not base64` + "\n" +
		`mirror_sessions[0].target.eni: unknown eni "collector"`
	if got != want {
		t.Errorf("errors:\n%s\nwant:\n%s", got, want)
	}
}

// TestSpecExampleWithoutKeys: keys may be absent (validate, lab up).
func TestSpecExampleWithoutKeys(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "public_key:") {
			lines = append(lines, l)
		}
	}
	top := mustParse(t, strings.Join(lines, "\n"))
	if top.Hosts[0].PublicKey != "" {
		t.Errorf("PublicKey = %q, want empty", top.Hosts[0].PublicKey)
	}
}

func TestExample(t *testing.T) {
	top := mustLoad(t, "example.yaml")
	if top.Version != 1 || top.AccountID != "123456789012" || top.Tunnel.PresharedKeyFile != "/etc/vpcd/psk" {
		t.Errorf("header = %d %q %+v", top.Version, top.AccountID, top.Tunnel)
	}
	h := top.HostByName("host-a")
	wantHost := &Host{
		Name: "host-a", UnderlayIP: netip.MustParseAddr("198.18.0.11"), UnderlayInterface: "eth0",
		ListenPort: 51820, PublicKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", MTU: 1500,
		UnderlayAllow: []UnderlayAllow{{Protocol: ProtoTCP, Port: 22}},
	}
	if !reflect.DeepEqual(h, wantHost) {
		t.Errorf("host-a = %+v\nwant %+v", h, wantHost)
	}
	s, v := top.SubnetByName("blue-1")
	if s == nil || v.Name != "blue" || s.VPC != "blue" || s.NetworkACL != "blue-acl" || v.VNI != 1001 {
		t.Errorf("blue-1 = %+v in %+v", s, v)
	}
	sg := top.SecurityGroupByName("blue-web")
	wantIngress := []SGRule{
		{Protocol: ProtoTCP, FromPort: 80, ToPort: 80, ICMPType: AnyICMP, ICMPCode: AnyICMP, CIDR: netip.MustParsePrefix("10.0.0.0/16")},
		{Protocol: ProtoICMP, FromPort: 0, ToPort: 65535, ICMPType: AnyICMP, ICMPCode: AnyICMP, CIDR: netip.MustParsePrefix("0.0.0.0/0")},
		{Protocol: ProtoAll, FromPort: 0, ToPort: 65535, ICMPType: AnyICMP, ICMPCode: AnyICMP, Group: "blue-web"},
	}
	if !reflect.DeepEqual(sg.Ingress, wantIngress) || sg.EgressOmitted || len(sg.Egress) != 1 {
		t.Errorf("blue-web = %+v", sg)
	}
	acl := top.NetworkACLByName("blue-acl")
	if len(acl.Ingress) != 2 || acl.Ingress[0].RuleNumber != 90 || acl.Ingress[0].Action != "deny" || acl.Ingress[0].FromPort != 22 {
		t.Errorf("blue-acl = %+v", acl)
	}
	a1 := top.ENIByName("a1")
	wantENI := &ENI{
		Name: "a1", Host: "host-a", Subnet: "blue-1", IP: netip.MustParseAddr("10.0.1.10"), Instance: "web-1",
		MAC: net.HardwareAddr{2, 0, 10, 0, 1, 10}, SecurityGroups: []string{"blue-web"},
		SourceDestCheck: true, Interface: "vpc-a1",
	}
	if !reflect.DeepEqual(a1, wantENI) {
		t.Errorf("a1 = %+v\nwant %+v", a1, wantENI)
	}
	fl := top.FlowLogByName("all-blue")
	wantFL := &FlowLog{
		Name: "all-blue", Resource: "vpc:blue", ResourceKind: "vpc", ResourceName: "blue", TrafficType: "ALL",
		AggregationInterval: time.Minute, Format: "default", Destination: "file:///var/log/vpcd/{host}-blue.log",
	}
	if !reflect.DeepEqual(fl, wantFL) {
		t.Errorf("all-blue = %+v\nwant %+v", fl, wantFL)
	}
	mf := top.MirrorFilterByName("web-only")
	wantRule := MirrorFilterRule{
		RuleNumber: 100, Action: "accept", Protocol: ProtoTCP,
		SourceCIDR: netip.MustParsePrefix("0.0.0.0/0"), DestinationCIDR: netip.MustParsePrefix("0.0.0.0/0"),
		SourcePortRange: PortRange{0, 65535}, DestinationPortRange: PortRange{80, 80},
	}
	if len(mf.Ingress) != 1 || mf.Ingress[0] != wantRule || len(mf.Egress) != 1 || mf.Egress[0].Protocol != ProtoAll {
		t.Errorf("web-only = %+v", mf)
	}
	ms := top.MirrorSessionByName("m1")
	wantMS := &MirrorSession{Name: "m1", SourceENI: "a1", Filter: "web-only", SessionNumber: 1,
		VirtualNetworkID: 4242, PacketLength: 128, Target: MirrorTarget{ENI: "collector"}}
	if !reflect.DeepEqual(ms, wantMS) {
		t.Errorf("m1 = %+v\nwant %+v", ms, wantMS)
	}
}

func TestDefaults(t *testing.T) {
	top := mustParse(t, `version: 1
hosts:
  - {name: h1, underlay_ip: 192.0.2.1}
vpcs:
  - name: v
    vni: 1
    cidr: 10.0.0.0/8
    subnets: [{name: s, cidr: 10.200.3.0/24}]
security_groups:
  - name: g
    vpc: v
    ingress:
      - {protocol: udp, cidr: 10.0.0.0/8}
      - {protocol: "-1", source_group: g}
      - {protocol: 1, icmp_type: 8, cidr: 10.0.0.0/8}
  - {name: closed, vpc: v, egress: []}
network_acls:
  - name: acl
    vpc: v
    ingress:
      - {rule_number: 300, action: allow, protocol: all, cidr: 0.0.0.0/0}
      - {rule_number: 5, action: deny, protocol: 47, cidr: 10.0.0.0/8}
      - {rule_number: 20, action: deny, protocol: UDP, cidr: 10.0.0.0/8}
enis:
  - {name: a-very-long-eni-name, host: h1, subnet: s, ip: 10.200.3.4}
  - {name: quiet, host: h1, subnet: s, ip: 10.200.3.5, source_dest_check: false}
flow_logs:
  - {name: f, resource: "subnet:s", destination: stdout}
mirror_filters:
  - name: mf
    egress:
      - {rule_number: 9, action: reject}
      - {rule_number: 2, action: accept, protocol: udp, source_port_range: "53"}
`)
	h := top.Hosts[0]
	if h.UnderlayInterface != "eth0" || h.ListenPort != 51820 || h.MTU != 1500 || h.PublicKey != "" {
		t.Errorf("host defaults = %+v", h)
	}
	e := top.ENIs[0]
	if e.MAC.String() != "02:00:0a:c8:03:04" || !e.SourceDestCheck || e.Interface != "vpc-a-very-long" || e.SecurityGroups != nil {
		t.Errorf("eni defaults = %+v (mac %s)", e, e.MAC)
	}
	if top.ENIs[1].SourceDestCheck {
		t.Error("source_dest_check: false was read as true")
	}
	g := top.SecurityGroups[0]
	if !g.EgressOmitted || g.Egress != nil {
		t.Errorf("omitted egress: EgressOmitted=%v Egress=%v", g.EgressOmitted, g.Egress)
	}
	if r := g.Ingress[0]; r.Protocol != ProtoUDP || r.FromPort != 0 || r.ToPort != 65535 || r.ICMPType != AnyICMP || r.ICMPCode != AnyICMP {
		t.Errorf("udp rule defaults = %+v", r)
	}
	if r := g.Ingress[1]; r.Protocol != ProtoAll || r.Group != "g" {
		t.Errorf(`"-1" rule = %+v`, r)
	}
	if r := g.Ingress[2]; r.Protocol != ProtoICMP || r.ICMPType != 8 || r.ICMPCode != AnyICMP {
		t.Errorf("icmp rule = %+v", r)
	}
	if c := top.SecurityGroups[1]; c.EgressOmitted || len(c.Egress) != 0 {
		t.Errorf("egress: [] gave EgressOmitted=%v Egress=%v", c.EgressOmitted, c.Egress)
	}
	var nums []int
	for _, r := range top.NetworkACLs[0].Ingress {
		nums = append(nums, r.RuleNumber)
	}
	if !reflect.DeepEqual(nums, []int{5, 20, 300}) || top.NetworkACLs[0].Ingress[0].Protocol != 47 || top.NetworkACLs[0].Ingress[1].Protocol != ProtoUDP {
		t.Errorf("acl rules = %+v", top.NetworkACLs[0].Ingress)
	}
	f := top.FlowLogs[0]
	if f.ResourceKind != "subnet" || f.ResourceName != "s" || f.TrafficType != "ALL" ||
		f.AggregationInterval != DefaultAggregationInterval || f.Format != "default" {
		t.Errorf("flow log defaults = %+v", f)
	}
	mf := top.MirrorFilters[0]
	if len(mf.Egress) != 2 || mf.Egress[0].RuleNumber != 2 || mf.Egress[0].SourcePortRange != (PortRange{53, 53}) ||
		mf.Egress[0].DestinationPortRange != (PortRange{0, 65535}) || mf.Egress[1].Protocol != ProtoAll ||
		mf.Egress[1].SourceCIDR != netip.MustParsePrefix("0.0.0.0/0") || mf.Ingress != nil {
		t.Errorf("mirror filter = %+v", mf)
	}
}

// TestOverlappingVPCs: different VPCs may reuse CIDRs and addresses.
func TestOverlappingVPCs(t *testing.T) {
	top := mustParse(t, baseENIs)
	if a, b := top.ENIs[0], top.ENIs[1]; a.IP != b.IP {
		t.Fatalf("want the same address in two VPCs, got %s and %s", a.IP, b.IP)
	}
}

// TestENIAndGroupShareName: names are unique per kind only.
func TestENIAndGroupShareName(t *testing.T) {
	mustParse(t, base+`security_groups:
  - {name: web, vpc: blue}
enis:
  - {name: web, host: h1, subnet: blue-1, ip: 10.0.1.10, security_groups: [web]}
`)
}

// TestMultipleErrors: every problem is reported, in document order, even
// when the checks that find them run in another order.
func TestMultipleErrors(t *testing.T) {
	_, err := Load("testdata/broken.yaml")
	got := errorList(t, err)
	want := []string{
		"hosts[0].mtu: 100 is out of range 576..9000",
		"hosts[1].name: host h1 is already defined at hosts[0]",
		"hosts[1].underlay_ip: 192.0.2.1 is already used by host h1",
		"vpcs[0].vni: 0 is out of range 1..16777215",
		`vpcs[0].subnets[0].network_acl: unknown network acl "nope"`,
		"vpcs[0].subnets[1].cidr: CIDR 10.0.1.5/24 has host bits set: did you mean 10.0.1.0/24?",
		`enis[0].host: unknown host "h9"`,
		"enis[0].ip: 10.0.2.5 is outside subnet s1 10.0.1.0/24",
		`enis[0].colour: unknown key "colour"`,
		"enis[1].ip: 10.0.1.1 is reserved in subnet s1 10.0.1.0/24 (gateway)",
		`bogus: unknown key "bogus"`,
	}
	if got.Error() != strings.Join(want, "\n") {
		t.Errorf("errors:\n%v\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestAnchors: aliases and merge keys work, and the mapping's own keys win
// over merged ones.
func TestAnchors(t *testing.T) {
	top := mustParse(t, `version: 1
hosts:
  - &h {name: h1, underlay_ip: 192.0.2.1, mtu: 9000, listen_port: 4000}
  - <<: *h
    name: h2
    underlay_ip: 192.0.2.2
vpcs:
  - {name: v, vni: 1, cidr: 10.0.0.0/16}
security_groups:
  - {name: a, vpc: v, ingress: &web [{protocol: tcp, from_port: 80, to_port: 80, cidr: 0.0.0.0/0}]}
  - {name: b, vpc: v, ingress: *web}
`)
	if h := top.Hosts[1]; h.Name != "h2" || h.MTU != 9000 || h.ListenPort != 4000 || h.UnderlayIP.String() != "192.0.2.2" {
		t.Errorf("merged host = %+v", h)
	}
	if !reflect.DeepEqual(top.SecurityGroups[0].Ingress, top.SecurityGroups[1].Ingress) {
		t.Errorf("aliased rules differ: %+v", top.SecurityGroups)
	}
	_, err := Parse([]byte("version: 1\nhosts:\n  - &h {name: h1, underlay_ip: 192.0.2.1, colour: red}\n  - <<: *h\n    name: h2\n    underlay_ip: 192.0.2.2\n"))
	list := errorList(t, err)
	if len(list) != 2 || list[0].Path != "hosts[0].colour" || list[1].Path != "hosts[1].colour" {
		t.Errorf("unknown key through a merge: %v", list)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want ErrNotExist", err)
	}
}

func TestFieldErrorAs(t *testing.T) {
	_, err := Parse([]byte("version: 1\nhosts: []\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "hosts" {
		t.Errorf("errors.As(*FieldError) = %v, %+v", err, fe)
	}
}

// TestNullEgress: a null egress list is present and empty: nothing out.
func TestNullEgress(t *testing.T) {
	top := mustParse(t, base+"security_groups:\n  - name: g\n    vpc: blue\n    egress:\n")
	if g := top.SecurityGroups[0]; g.EgressOmitted || g.Egress != nil {
		t.Errorf("egress: (null) gave %+v", g)
	}
}
