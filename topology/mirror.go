package topology

import (
	"net/netip"

	"go.yaml.in/yaml/v3"
)

func (d *decoder) mirrorFilter(n *yaml.Node, path string) MirrorFilter {
	var f MirrorFilter
	m := d.mapping(n, path, "name", "ingress", "egress")
	if m == nil {
		return f
	}
	if v := m.req("name"); v != nil {
		f.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.opt("ingress"); v != nil {
		f.Ingress = decodeList(d, v, m.at("ingress"), d.mirrorRule)
		d.uniqueRuleNumbers(m.at("ingress"), len(f.Ingress), func(i int) int { return f.Ingress[i].RuleNumber })
	}
	if v := m.opt("egress"); v != nil {
		f.Egress = decodeList(d, v, m.at("egress"), d.mirrorRule)
		d.uniqueRuleNumbers(m.at("egress"), len(f.Egress), func(i int) int { return f.Egress[i].RuleNumber })
	}
	return f
}

// anyIPv4 is 0.0.0.0/0, the default source and destination of mirror rules.
func anyIPv4() netip.Prefix { return netip.PrefixFrom(netip.IPv4Unspecified(), 0) }

func (d *decoder) mirrorRule(n *yaml.Node, path string) MirrorFilterRule {
	r := MirrorFilterRule{
		Protocol:             ProtoAll,
		SourceCIDR:           anyIPv4(),
		DestinationCIDR:      anyIPv4(),
		SourcePortRange:      PortRange{0, 65535},
		DestinationPortRange: PortRange{0, 65535},
	}
	m := d.mapping(n, path, "rule_number", "action", "protocol", "source_cidr", "destination_cidr",
		"source_port_range", "destination_port_range")
	if m == nil {
		return r
	}
	if v := m.req("rule_number"); v != nil {
		r.RuleNumber, _ = d.integer(v, m.at("rule_number"), 1, maxRuleNumber)
	}
	if v := m.req("action"); v != nil {
		r.Action, _ = d.enum(v, m.at("action"), "accept", "reject")
	}
	protoOK := true
	if v := m.opt("protocol"); v != nil {
		r.Protocol, protoOK = d.protocol(v, m.at("protocol"))
	}
	if v := m.opt("source_cidr"); v != nil {
		r.SourceCIDR, _ = d.prefix(v, m.at("source_cidr"))
	}
	if v := m.opt("destination_cidr"); v != nil {
		r.DestinationCIDR, _ = d.prefix(v, m.at("destination_cidr"))
	}
	if protoOK && !HasPorts(r.Protocol) {
		d.onlyWith(m, ProtocolName(r.Protocol), "tcp or udp", "source_port_range", "destination_port_range")
		return r
	}
	if v := m.opt("source_port_range"); v != nil {
		r.SourcePortRange, _ = d.portRange(v, m.at("source_port_range"))
	}
	if v := m.opt("destination_port_range"); v != nil {
		r.DestinationPortRange, _ = d.portRange(v, m.at("destination_port_range"))
	}
	return r
}

func (d *decoder) mirrorSession(n *yaml.Node, path string) MirrorSession {
	var s MirrorSession
	m := d.mapping(n, path, "name", "source_eni", "filter", "session_number", "virtual_network_id",
		"packet_length", "target")
	if m == nil {
		return s
	}
	if v := m.req("name"); v != nil {
		s.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("source_eni"); v != nil {
		s.SourceENI, _ = d.text(v, m.at("source_eni"))
	}
	if v := m.req("filter"); v != nil {
		s.Filter, _ = d.text(v, m.at("filter"))
	}
	if v := m.req("session_number"); v != nil {
		s.SessionNumber, _ = d.integer(v, m.at("session_number"), 1, maxRuleNumber)
	}
	if v := m.req("virtual_network_id"); v != nil {
		vni, _ := d.integer(v, m.at("virtual_network_id"), 1, maxVNI)
		s.VirtualNetworkID = uint32(vni)
	}
	if v := m.opt("packet_length"); v != nil {
		s.PacketLength, _ = d.integer(v, m.at("packet_length"), 1, 65535)
	}
	if v := m.req("target"); v != nil {
		s.Target = d.mirrorTarget(v, m.at("target"))
	}
	return s
}

func (d *decoder) mirrorTarget(n *yaml.Node, path string) MirrorTarget {
	var t MirrorTarget
	m := d.mapping(n, path, "eni", "pcap")
	if m == nil {
		return t
	}
	eni, pcap := m.opt("eni"), m.opt("pcap")
	switch {
	case eni != nil && pcap != nil:
		d.errorf(n, path, "target has both eni and pcap: want exactly one")
	case eni == nil && pcap == nil:
		d.errorf(n, path, "target needs one of eni or pcap")
	case eni != nil:
		t.ENI, _ = d.text(eni, m.at("eni"))
	default:
		t.Pcap, _ = d.text(pcap, m.at("pcap"))
	}
	return t
}
