package topology

import (
	"encoding/base64"
	"math"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vpcd/vpcd/bpf/limits"
)

// Defaults of optional fields.
const (
	DefaultUnderlayInterface   = "eth0"
	DefaultListenPort          = 51820
	DefaultMTU                 = 1500
	DefaultTrafficType         = "ALL"
	DefaultAggregationInterval = 600 * time.Second // as AWS
	DefaultFlowLogFormat       = "default"
	minMTU, maxMTU             = 576, 9000
	maxVNI                     = 1<<24 - 1
	maxRuleNumber              = 32766
	maxSubnetBits              = 30 // network, gateway, broadcast and one ENI
)

// ConntrackTableSize is how many connections a host's datapath tracks in
// all (MAX_CONNECTIONS, bpf/lib/limits.h): no ENI may track more.
const ConntrackTableSize = limits.MaxConnections

// MinDefaultConnections is the least max_connections an ENI gets by
// default, however many ENIs share its host.
const MinDefaultConnections = limits.MinDefaultConnections

// topology decodes the document's root mapping.
func (d *decoder) topology(root *yaml.Node) *Topology {
	t := &Topology{}
	m := d.mapping(root, "", "version", "account_id", "tunnel", "hosts", "vpcs",
		"security_groups", "network_acls", "enis", "flow_logs", "mirror_filters", "mirror_sessions", "vms")
	if m == nil {
		return t
	}
	if v := m.req("version"); v != nil {
		if ver, ok := d.integer(v, m.at("version"), math.MinInt32, math.MaxInt32); ok {
			t.Version = ver
			if ver != 1 {
				d.errorf(v, m.at("version"), "unsupported version %d: want 1", ver)
			}
		}
	}
	if v := m.opt("account_id"); v != nil {
		t.AccountID, _ = d.word(v, m.at("account_id"))
	}
	if v := m.opt("tunnel"); v != nil {
		t.Tunnel = d.tunnel(v, m.at("tunnel"))
	}
	if v := m.req("hosts"); v != nil {
		t.Hosts = decodeList(d, v, m.at("hosts"), d.host)
		if len(t.Hosts) == 0 && resolve(v).Kind == yaml.SequenceNode {
			d.errorf(v, m.at("hosts"), "at least one host is required")
		}
	}
	if v := m.opt("vpcs"); v != nil {
		t.VPCs = decodeList(d, v, m.at("vpcs"), d.vpc)
	}
	if v := m.opt("security_groups"); v != nil {
		t.SecurityGroups = decodeList(d, v, m.at("security_groups"), d.securityGroup)
	}
	if v := m.opt("network_acls"); v != nil {
		t.NetworkACLs = decodeList(d, v, m.at("network_acls"), d.networkACL)
	}
	if v := m.opt("enis"); v != nil {
		t.ENIs = decodeList(d, v, m.at("enis"), d.eni)
	}
	if v := m.opt("flow_logs"); v != nil {
		t.FlowLogs = decodeList(d, v, m.at("flow_logs"), d.flowLog)
	}
	if v := m.opt("mirror_filters"); v != nil {
		t.MirrorFilters = decodeList(d, v, m.at("mirror_filters"), d.mirrorFilter)
	}
	if v := m.opt("mirror_sessions"); v != nil {
		t.MirrorSessions = decodeList(d, v, m.at("mirror_sessions"), d.mirrorSession)
	}
	if v := m.opt("vms"); v != nil {
		t.VMs = decodeList(d, v, m.at("vms"), d.vm)
	}
	return t
}

// vm decodes one entry of vms: an ENI's name, or a mapping naming it.
func (d *decoder) vm(n *yaml.Node, path string) VM {
	var v VM
	if resolve(n).Kind == yaml.ScalarNode {
		v.ENI, _ = d.name(n, path)
		return v
	}
	m := d.mapping(n, path, "eni")
	if m == nil {
		return v
	}
	if e := m.req("eni"); e != nil {
		v.ENI, _ = d.name(e, m.at("eni"))
	}
	return v
}

func (d *decoder) tunnel(n *yaml.Node, path string) Tunnel {
	var t Tunnel
	m := d.mapping(n, path, "preshared_key_file")
	if m == nil {
		return t
	}
	if v := m.opt("preshared_key_file"); v != nil {
		t.PresharedKeyFile, _ = d.text(v, m.at("preshared_key_file"))
	}
	return t
}

func (d *decoder) host(n *yaml.Node, path string) Host {
	h := Host{UnderlayInterface: DefaultUnderlayInterface, ListenPort: DefaultListenPort, MTU: DefaultMTU}
	m := d.mapping(n, path, "name", "underlay_ip", "underlay_interface", "listen_port",
		"public_key", "mtu", "underlay_allow")
	if m == nil {
		return h
	}
	if v := m.req("name"); v != nil {
		h.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("underlay_ip"); v != nil {
		h.UnderlayIP, _ = d.underlayIP(v, m.at("underlay_ip"))
	}
	if v := m.opt("underlay_interface"); v != nil {
		h.UnderlayInterface, _ = d.ifname(v, m.at("underlay_interface"))
	}
	if v := m.opt("listen_port"); v != nil {
		p, _ := d.integer(v, m.at("listen_port"), 1, 65535)
		h.ListenPort = uint16(p)
	}
	if v := m.opt("public_key"); v != nil {
		h.PublicKey, _ = d.publicKey(v, m.at("public_key"))
	}
	if v := m.opt("mtu"); v != nil {
		h.MTU, _ = d.integer(v, m.at("mtu"), minMTU, maxMTU)
	}
	if v := m.opt("underlay_allow"); v != nil {
		h.UnderlayAllow = decodeList(d, v, m.at("underlay_allow"), d.underlayAllow)
	}
	return h
}

// underlayIP decodes a host address: IPv4 and usable as a unicast source.
func (d *decoder) underlayIP(n *yaml.Node, path string) (netip.Addr, bool) {
	a, ok := d.addr(n, path)
	if ok && (a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		d.errorf(n, path, "%s is not a unicast address", a)
		return netip.Addr{}, false
	}
	return a, ok
}

// publicKey decodes a WireGuard public key: base64 of exactly 32 bytes.
func (d *decoder) publicKey(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(s)
	switch {
	case err != nil:
		d.errorf(n, path, "invalid WireGuard key %q: not base64", s)
	case len(b) != 32:
		d.errorf(n, path, "invalid WireGuard key %q: %d bytes, want 32", s, len(b))
	default:
		return s, true
	}
	return "", false
}

func (d *decoder) underlayAllow(n *yaml.Node, path string) UnderlayAllow {
	var u UnderlayAllow
	m := d.mapping(n, path, "protocol", "port")
	if m == nil {
		return u
	}
	protoOK := false
	if v := m.req("protocol"); v != nil {
		u.Protocol, protoOK = d.protocol(v, m.at("protocol"))
	}
	if v := m.opt("port"); v != nil {
		if protoOK && !HasPorts(u.Protocol) {
			d.errorf(v, m.at("port"), "port is only allowed with protocol tcp or udp, not %s", ProtocolName(u.Protocol))
		} else {
			p, _ := d.integer(v, m.at("port"), 0, 65535)
			u.Port = uint16(p)
		}
	}
	return u
}

func (d *decoder) vpc(n *yaml.Node, path string) VPC {
	var v VPC
	m := d.mapping(n, path, "name", "vni", "cidr", "subnets")
	if m == nil {
		return v
	}
	if x := m.req("name"); x != nil {
		v.Name, _ = d.name(x, m.at("name"))
	}
	if x := m.req("vni"); x != nil {
		vni, _ := d.integer(x, m.at("vni"), 1, maxVNI)
		v.VNI = uint32(vni)
	}
	if x := m.req("cidr"); x != nil {
		v.CIDR, _ = d.prefix(x, m.at("cidr"))
	}
	if x := m.opt("subnets"); x != nil {
		v.Subnets = decodeList(d, x, m.at("subnets"), func(n *yaml.Node, path string) Subnet {
			s := d.subnet(n, path)
			s.VPC = v.Name
			return s
		})
	}
	return v
}

func (d *decoder) subnet(n *yaml.Node, path string) Subnet {
	var s Subnet
	m := d.mapping(n, path, "name", "cidr", "network_acl")
	if m == nil {
		return s
	}
	if v := m.req("name"); v != nil {
		s.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("cidr"); v != nil {
		if p, ok := d.prefix(v, m.at("cidr")); ok && p.Bits() > maxSubnetBits {
			d.errorf(v, m.at("cidr"), "subnet %s is too small: network, gateway and broadcast addresses leave no room; want /%d or larger", p, maxSubnetBits)
		} else {
			s.CIDR = p
		}
	}
	if v := m.opt("network_acl"); v != nil {
		s.NetworkACL, _ = d.text(v, m.at("network_acl"))
	}
	return s
}

func (d *decoder) securityGroup(n *yaml.Node, path string) SecurityGroup {
	g := SecurityGroup{EgressOmitted: true}
	m := d.mapping(n, path, "name", "vpc", "ingress", "egress")
	if m == nil {
		return g
	}
	if v := m.req("name"); v != nil {
		g.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("vpc"); v != nil {
		g.VPC, _ = d.text(v, m.at("vpc"))
	}
	if v := m.opt("ingress"); v != nil {
		g.Ingress = decodeList(d, v, m.at("ingress"), d.sgRule("source_group"))
	}
	g.EgressOmitted = !m.has("egress")
	if v := m.opt("egress"); v != nil {
		g.Egress = decodeList(d, v, m.at("egress"), d.sgRule("destination_group"))
	}
	return g
}

// sgRule returns a decoder of security-group rules whose group key is
// groupKey (source_group for ingress, destination_group for egress).
func (d *decoder) sgRule(groupKey string) func(*yaml.Node, string) SGRule {
	wrongKey, wrongDir, dir := "destination_group", "egress", "ingress"
	if groupKey == "destination_group" {
		wrongKey, wrongDir, dir = "source_group", "ingress", "egress"
	}
	return func(n *yaml.Node, path string) SGRule {
		r := SGRule{ToPort: 65535, ICMPType: AnyICMP, ICMPCode: AnyICMP}
		m := d.mapping(n, path, "protocol", "from_port", "to_port", "icmp_type", "icmp_code", "cidr", groupKey, wrongKey)
		if m == nil {
			return r
		}
		x := d.match(m)
		r.Protocol, r.FromPort, r.ToPort, r.ICMPType, r.ICMPCode = x.proto, x.from, x.to, x.icmpType, x.icmpCode
		cidr, group := m.opt("cidr"), m.opt(groupKey)
		switch {
		case m.has(wrongKey):
			d.errorf(m.vals[wrongKey], m.at(wrongKey), "%s is only allowed in %s rules: %s rules take %s", wrongKey, wrongDir, dir, groupKey)
		case cidr != nil && group != nil:
			d.errorf(n, path, "rule has both cidr and %s: want exactly one", groupKey)
		case cidr == nil && group == nil:
			d.errorf(n, path, "rule needs one of cidr or %s", groupKey)
		case cidr != nil:
			r.CIDR, _ = d.prefix(cidr, m.at("cidr"))
		default:
			r.Group, _ = d.text(group, m.at(groupKey))
		}
		return r
	}
}

func (d *decoder) networkACL(n *yaml.Node, path string) NetworkACL {
	var a NetworkACL
	m := d.mapping(n, path, "name", "vpc", "ingress", "egress")
	if m == nil {
		return a
	}
	if v := m.req("name"); v != nil {
		a.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("vpc"); v != nil {
		a.VPC, _ = d.text(v, m.at("vpc"))
	}
	if v := m.opt("ingress"); v != nil {
		a.Ingress = decodeList(d, v, m.at("ingress"), d.aclRule)
		d.uniqueRuleNumbers(m.at("ingress"), len(a.Ingress), func(i int) int { return a.Ingress[i].RuleNumber })
	}
	if v := m.opt("egress"); v != nil {
		a.Egress = decodeList(d, v, m.at("egress"), d.aclRule)
		d.uniqueRuleNumbers(m.at("egress"), len(a.Egress), func(i int) int { return a.Egress[i].RuleNumber })
	}
	return a
}

func (d *decoder) aclRule(n *yaml.Node, path string) ACLRule {
	r := ACLRule{ToPort: 65535, ICMPType: AnyICMP, ICMPCode: AnyICMP}
	m := d.mapping(n, path, "rule_number", "action", "protocol", "from_port", "to_port",
		"icmp_type", "icmp_code", "cidr")
	if m == nil {
		return r
	}
	if v := m.req("rule_number"); v != nil {
		r.RuleNumber, _ = d.integer(v, m.at("rule_number"), 1, maxRuleNumber)
	}
	if v := m.req("action"); v != nil {
		r.Action, _ = d.enum(v, m.at("action"), "allow", "deny")
	}
	x := d.match(m)
	r.Protocol, r.FromPort, r.ToPort, r.ICMPType, r.ICMPCode = x.proto, x.from, x.to, x.icmpType, x.icmpCode
	if v := m.req("cidr"); v != nil {
		r.CIDR, _ = d.prefix(v, m.at("cidr"))
	}
	return r
}

// uniqueRuleNumbers reports rule numbers used twice in the list at path.
func (d *decoder) uniqueRuleNumbers(path string, count int, number func(int) int) {
	seen := make(map[int]int, count)
	for i := range count {
		num := number(i)
		if num == 0 {
			continue
		}
		if j, dup := seen[num]; dup {
			p := field(elem(path, i), "rule_number")
			d.errorAt(p, "rule number %d is already used by %s", num, elem(path, j))
			continue
		}
		seen[num] = i
	}
}

func (d *decoder) eni(n *yaml.Node, path string) ENI {
	e := ENI{SourceDestCheck: true}
	m := d.mapping(n, path, "name", "host", "subnet", "ip", "instance", "mac",
		"security_groups", "source_dest_check", "interface", "max_connections",
		"interface_type", "tap_owner", "tap_multi_queue")
	if m == nil {
		return e
	}
	if v := m.req("name"); v != nil {
		e.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("host"); v != nil {
		e.Host, _ = d.text(v, m.at("host"))
	}
	if v := m.req("subnet"); v != nil {
		e.Subnet, _ = d.text(v, m.at("subnet"))
	}
	if v := m.req("ip"); v != nil {
		e.IP, _ = d.addr(v, m.at("ip"))
	}
	if v := m.opt("instance"); v != nil {
		e.Instance, _ = d.word(v, m.at("instance"))
	}
	if v := m.opt("mac"); v != nil {
		e.MAC, _ = d.mac(v, m.at("mac"))
	} else if e.IP.IsValid() {
		e.MAC = DefaultMAC(e.IP)
	}
	if v := m.opt("security_groups"); v != nil {
		e.SecurityGroups = decodeList(d, v, m.at("security_groups"), func(n *yaml.Node, path string) string {
			s, _ := d.text(n, path)
			return s
		})
	}
	if v := m.opt("source_dest_check"); v != nil {
		e.SourceDestCheck, _ = d.boolean(v, m.at("source_dest_check"))
	}
	if v := m.opt("interface"); v != nil {
		e.Interface, _ = d.ifname(v, m.at("interface"))
	} else if e.Name != "" {
		e.Interface = DefaultInterface(e.Name)
	}
	if v := m.opt("max_connections"); v != nil {
		e.MaxConnections, _ = d.integer(v, m.at("max_connections"), 1, ConntrackTableSize)
	}
	if v := m.opt("interface_type"); v != nil {
		if s, ok := d.enum(v, m.at("interface_type"), InterfaceVeth, InterfaceTap); ok && s == InterfaceTap {
			e.InterfaceType = s // a veth stays "", the default
		}
	}
	if v := m.opt("tap_owner"); v != nil {
		// A uid; 4294967295 is (uid_t)-1, "no owner", which is no uid.
		if uid, ok := d.integer(v, m.at("tap_owner"), 0, 1<<32-2); ok {
			if e.InterfaceType != InterfaceTap {
				d.errorf(v, m.at("tap_owner"), "only an ENI with interface_type: tap has a tap owner")
			}
			e.TapOwner = uint32(uid)
		}
	}
	if v := m.opt("tap_multi_queue"); v != nil {
		if mq, ok := d.boolean(v, m.at("tap_multi_queue")); ok {
			if e.InterfaceType != InterfaceTap {
				d.errorf(v, m.at("tap_multi_queue"), "only an ENI with interface_type: tap has tap queues")
			}
			e.TapMultiQueue = mq
		}
	}
	return e
}

// DefaultMAC is the MAC of an ENI whose file names none: 02:00 followed by
// the four bytes of its IPv4 address.
func DefaultMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// DefaultInterface is the host-side device of an ENI whose file names none:
// "vpc-" followed by the ENI's name, cut to 15 bytes (on a UTF-8 boundary).
func DefaultInterface(eniName string) string {
	s := "vpc-" + eniName
	for len(s) > 15 {
		_, size := lastRune(s)
		s = s[:len(s)-size]
	}
	return s
}

func lastRune(s string) (rune, int) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i]&0xC0 != 0x80 {
			return rune(s[i]), len(s) - i
		}
	}
	return 0, len(s)
}

// sortRules orders network-ACL and mirror-filter rules by rule number.
func sortRules(t *Topology) {
	byACL := func(a, b ACLRule) int { return a.RuleNumber - b.RuleNumber }
	byMirror := func(a, b MirrorFilterRule) int { return a.RuleNumber - b.RuleNumber }
	for i := range t.NetworkACLs {
		slices.SortStableFunc(t.NetworkACLs[i].Ingress, byACL)
		slices.SortStableFunc(t.NetworkACLs[i].Egress, byACL)
	}
	for i := range t.MirrorFilters {
		slices.SortStableFunc(t.MirrorFilters[i].Ingress, byMirror)
		slices.SortStableFunc(t.MirrorFilters[i].Egress, byMirror)
	}
}
