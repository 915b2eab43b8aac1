package topology

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// IP protocol numbers that have names in the topology file.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// ProtocolName returns the topology-file spelling of an IP protocol number:
// "tcp", "udp", "icmp", "all" for ProtoAll, or the decimal number.
func ProtocolName(p int) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoAll:
		return "all"
	}
	return strconv.Itoa(p)
}

// HasPorts reports whether rules for protocol p may name ports (tcp, udp).
func HasPorts(p int) bool { return p == ProtoTCP || p == ProtoUDP }

// protocol decodes tcp, udp, icmp, all (or -1), or a number 0..255.
func (d *decoder) protocol(n *yaml.Node, path string) (int, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, true
	case "udp":
		return ProtoUDP, true
	case "icmp":
		return ProtoICMP, true
	case "all", "-1":
		return ProtoAll, true
	}
	if v, err := strconv.Atoi(s); err == nil && v >= 0 && v <= 255 {
		return v, true
	}
	d.errorf(n, path, "invalid protocol %q: want tcp, udp, icmp, all or a number 0..255", s)
	return 0, false
}

// portRange decodes "FROM-TO" or a single port.
func (d *decoder) portRange(n *yaml.Node, path string) (PortRange, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return PortRange{}, false
	}
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	from, err1 := strconv.Atoi(strings.TrimSpace(lo))
	to, err2 := strconv.Atoi(strings.TrimSpace(hi))
	switch {
	case err1 != nil || err2 != nil:
		d.errorf(n, path, "invalid port range %q: want \"FROM-TO\" or \"PORT\"", s)
	case from < 0 || from > 65535 || to < 0 || to > 65535:
		d.errorf(n, path, "port range %q is out of range 0..65535", s)
	case from > to:
		d.errorf(n, path, "port range %q starts after it ends", s)
	default:
		return PortRange{From: from, To: to}, true
	}
	return PortRange{}, false
}

// match is the protocol part shared by security-group and network-ACL rules.
type match struct {
	proto, from, to, icmpType, icmpCode int
}

// match decodes protocol, from_port/to_port and icmp_type/icmp_code of a
// rule, filling the defaults: ports 0..65535 and ICMP type and code AnyICMP.
func (d *decoder) match(m *mapNode) match {
	r := match{to: 65535, icmpType: AnyICMP, icmpCode: AnyICMP}
	protoOK := false
	if v := m.req("protocol"); v != nil {
		r.proto, protoOK = d.protocol(v, m.at("protocol"))
	}
	if protoOK && !HasPorts(r.proto) {
		d.onlyWith(m, ProtocolName(r.proto), "tcp or udp", "from_port", "to_port")
	} else {
		r.from, r.to = d.pair(m, "from_port", "to_port", 0, 65535, r.from, r.to)
		if r.from > r.to {
			d.errorf(m.vals["from_port"], m.at("from_port"), "from_port %d is greater than to_port %d", r.from, r.to)
		}
	}
	if protoOK && r.proto != ProtoICMP {
		d.onlyWith(m, ProtocolName(r.proto), "icmp", "icmp_type", "icmp_code")
	} else {
		if v := m.opt("icmp_type"); v != nil {
			r.icmpType, _ = d.integer(v, m.at("icmp_type"), AnyICMP, 255)
		}
		if v := m.opt("icmp_code"); v != nil {
			r.icmpCode, _ = d.integer(v, m.at("icmp_code"), AnyICMP, 255)
		}
	}
	return r
}

// onlyWith reports each present key that the rule's protocol does not allow.
func (d *decoder) onlyWith(m *mapNode, proto, allowed string, keys ...string) {
	for _, k := range keys {
		if v := m.opt(k); v != nil {
			d.errorf(v, m.at(k), "%s is only allowed with protocol %s, not %s", k, allowed, proto)
		}
	}
}

// pair decodes two keys that go together (from_port/to_port): both or
// neither must be present. Absent keys keep their defaults.
func (d *decoder) pair(m *mapNode, k1, k2 string, lo, hi, def1, def2 int) (int, int) {
	v1, v2 := m.opt(k1), m.opt(k2)
	switch {
	case v1 == nil && v2 == nil:
		return def1, def2
	case v1 == nil:
		d.errorf(m.node, m.at(k1), "missing: %s needs %s", k2, k1)
	case v2 == nil:
		d.errorf(m.node, m.at(k2), "missing: %s needs %s", k1, k2)
	}
	a, b := def1, def2
	ok1, ok2 := false, false
	if v1 != nil {
		a, ok1 = d.integer(v1, m.at(k1), lo, hi)
	}
	if v2 != nil {
		b, ok2 = d.integer(v2, m.at(k2), lo, hi)
	}
	if !ok1 || !ok2 {
		return def1, def2
	}
	return a, b
}
