package topology

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Marshal writes t as a topology file (SPEC §2) such that Parse of the
// result yields a Topology equal to t, when t is itself valid. Every
// defaulted value is written out explicitly, except where writing it would
// not round-trip (ports of a protocol without ports, "any" ICMP type and
// code, the egress key of a group whose egress was omitted).
func Marshal(t *Topology) ([]byte, error) {
	if t == nil {
		return nil, errors.New("topology: Marshal of a nil Topology")
	}
	root := mapping(false)
	put(root, "version", intNode(t.Version))
	if t.AccountID != "" {
		put(root, "account_id", str(t.AccountID))
	}
	if t.Tunnel.PresharedKeyFile != "" {
		tun := mapping(false)
		put(tun, "preshared_key_file", str(t.Tunnel.PresharedKeyFile))
		put(root, "tunnel", tun)
	}
	put(root, "hosts", list(false, t.Hosts, hostNode))
	putList(root, "vpcs", false, t.VPCs, vpcNode)
	putList(root, "security_groups", false, t.SecurityGroups, securityGroupNode)
	putList(root, "network_acls", false, t.NetworkACLs, networkACLNode)
	putList(root, "enis", false, t.ENIs, eniNode)
	putList(root, "flow_logs", false, t.FlowLogs, flowLogNode)
	putList(root, "mirror_filters", false, t.MirrorFilters, mirrorFilterNode)
	putList(root, "mirror_sessions", false, t.MirrorSessions, mirrorSessionNode)
	putList(root, "vms", true, t.VMs, func(v *VM) *yaml.Node { return str(v.ENI) })

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func hostNode(h *Host) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(h.Name))
	put(m, "underlay_ip", str(h.UnderlayIP.String()))
	put(m, "underlay_interface", str(h.UnderlayInterface))
	put(m, "listen_port", intNode(int(h.ListenPort)))
	if h.PublicKey != "" {
		put(m, "public_key", str(h.PublicKey))
	}
	put(m, "mtu", intNode(h.MTU))
	putList(m, "underlay_allow", false, h.UnderlayAllow, func(u *UnderlayAllow) *yaml.Node {
		r := mapping(true)
		put(r, "protocol", protoNode(u.Protocol))
		if u.Port != 0 {
			put(r, "port", intNode(int(u.Port)))
		}
		return r
	})
	return m
}

func vpcNode(v *VPC) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(v.Name))
	put(m, "vni", intNode(int(v.VNI)))
	put(m, "cidr", str(v.CIDR.String()))
	putList(m, "subnets", false, v.Subnets, func(s *Subnet) *yaml.Node {
		n := mapping(true)
		put(n, "name", str(s.Name))
		put(n, "cidr", str(s.CIDR.String()))
		if s.NetworkACL != "" {
			put(n, "network_acl", str(s.NetworkACL))
		}
		return n
	})
	return m
}

func securityGroupNode(g *SecurityGroup) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(g.Name))
	put(m, "vpc", str(g.VPC))
	putList(m, "ingress", false, g.Ingress, sgRuleNode("source_group"))
	if !g.EgressOmitted {
		put(m, "egress", list(false, g.Egress, sgRuleNode("destination_group")))
	}
	return m
}

func sgRuleNode(groupKey string) func(*SGRule) *yaml.Node {
	return func(r *SGRule) *yaml.Node {
		m := mapping(true)
		putMatch(m, r.Protocol, r.FromPort, r.ToPort, r.ICMPType, r.ICMPCode)
		if r.Group != "" {
			put(m, groupKey, str(r.Group))
		} else {
			put(m, "cidr", str(r.CIDR.String()))
		}
		return m
	}
}

// putMatch writes the protocol part of a rule, leaving out what Parse
// would fill in anyway or would refuse for the protocol.
func putMatch(m *yaml.Node, proto, from, to, icmpType, icmpCode int) {
	put(m, "protocol", protoNode(proto))
	if HasPorts(proto) && (from != 0 || to != 65535) {
		put(m, "from_port", intNode(from))
		put(m, "to_port", intNode(to))
	}
	if proto == ProtoICMP && icmpType != AnyICMP {
		put(m, "icmp_type", intNode(icmpType))
	}
	if proto == ProtoICMP && icmpCode != AnyICMP {
		put(m, "icmp_code", intNode(icmpCode))
	}
}

func networkACLNode(a *NetworkACL) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(a.Name))
	put(m, "vpc", str(a.VPC))
	putList(m, "ingress", false, a.Ingress, aclRuleNode)
	putList(m, "egress", false, a.Egress, aclRuleNode)
	return m
}

func aclRuleNode(r *ACLRule) *yaml.Node {
	m := mapping(true)
	put(m, "rule_number", intNode(r.RuleNumber))
	put(m, "action", str(r.Action))
	putMatch(m, r.Protocol, r.FromPort, r.ToPort, r.ICMPType, r.ICMPCode)
	put(m, "cidr", str(r.CIDR.String()))
	return m
}

func eniNode(e *ENI) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(e.Name))
	put(m, "host", str(e.Host))
	put(m, "subnet", str(e.Subnet))
	put(m, "ip", str(e.IP.String()))
	if e.Instance != "" {
		put(m, "instance", str(e.Instance))
	}
	if e.MAC != nil {
		put(m, "mac", str(e.MAC.String()))
	}
	putList(m, "security_groups", true, e.SecurityGroups, func(s *string) *yaml.Node { return str(*s) })
	put(m, "source_dest_check", boolNode(e.SourceDestCheck))
	if e.Interface != "" {
		put(m, "interface", str(e.Interface))
	}
	if e.MaxConnections != 0 {
		put(m, "max_connections", intNode(e.MaxConnections))
	}
	if e.IsTap() {
		put(m, "interface_type", str(e.InterfaceType))
		if e.TapOwner != 0 {
			put(m, "tap_owner", intNode(int(e.TapOwner)))
		}
		if e.TapMultiQueue {
			put(m, "tap_multi_queue", boolNode(true))
		}
	}
	return m
}

func flowLogNode(f *FlowLog) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(f.Name))
	res := f.Resource
	if f.ResourceKind != "" {
		res = f.ResourceKind + ":" + f.ResourceName
	}
	put(m, "resource", str(res))
	put(m, "traffic_type", str(f.TrafficType))
	put(m, "aggregation_interval", str(formatDuration(f.AggregationInterval)))
	put(m, "format", str(f.Format))
	put(m, "destination", str(f.Destination))
	return m
}

func mirrorFilterNode(f *MirrorFilter) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(f.Name))
	putList(m, "ingress", false, f.Ingress, mirrorRuleNode)
	putList(m, "egress", false, f.Egress, mirrorRuleNode)
	return m
}

func mirrorRuleNode(r *MirrorFilterRule) *yaml.Node {
	m := mapping(true)
	put(m, "rule_number", intNode(r.RuleNumber))
	put(m, "action", str(r.Action))
	put(m, "protocol", protoNode(r.Protocol))
	put(m, "source_cidr", str(r.SourceCIDR.String()))
	put(m, "destination_cidr", str(r.DestinationCIDR.String()))
	if HasPorts(r.Protocol) {
		putRange(m, "source_port_range", r.SourcePortRange)
		putRange(m, "destination_port_range", r.DestinationPortRange)
	}
	return m
}

func putRange(m *yaml.Node, key string, r PortRange) {
	if r.From != 0 || r.To != 65535 {
		put(m, key, str(strconv.Itoa(r.From)+"-"+strconv.Itoa(r.To)))
	}
}

func mirrorSessionNode(s *MirrorSession) *yaml.Node {
	m := mapping(false)
	put(m, "name", str(s.Name))
	put(m, "source_eni", str(s.SourceENI))
	put(m, "filter", str(s.Filter))
	put(m, "session_number", intNode(s.SessionNumber))
	put(m, "virtual_network_id", intNode(int(s.VirtualNetworkID)))
	if s.PacketLength != 0 {
		put(m, "packet_length", intNode(s.PacketLength))
	}
	target := mapping(true)
	if s.Target.ENI != "" {
		put(target, "eni", str(s.Target.ENI))
	} else {
		put(target, "pcap", str(s.Target.Pcap))
	}
	put(m, "target", target)
	return m
}

// formatDuration writes whole seconds as "60s" rather than "1m0s".
func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// mapping returns an empty YAML mapping, in flow style ({a: 1}) if flow.
func mapping(flow bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if flow {
		n.Style = yaml.FlowStyle
	}
	return n
}

// put appends key: val to the mapping m.
func put(m *yaml.Node, key string, val *yaml.Node) {
	m.Content = append(m.Content, str(key), val)
}

// list returns a YAML sequence of one node per element of items.
func list[T any](flow bool, items []T, node func(*T) *yaml.Node) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{}}
	if flow {
		n.Style = yaml.FlowStyle
	}
	for i := range items {
		n.Content = append(n.Content, node(&items[i]))
	}
	return n
}

// putList puts key: [items] into m unless items is empty.
func putList[T any](m *yaml.Node, key string, flow bool, items []T, node func(*T) *yaml.Node) {
	if len(items) > 0 {
		put(m, key, list(flow, items, node))
	}
}

// str returns a string scalar; the encoder quotes it when needed so that it
// reads back as a string ("123", "true", "").
func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func intNode(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

// protoNode writes a protocol by name when it has one, else by number.
func protoNode(p int) *yaml.Node {
	if name := ProtocolName(p); name != strconv.Itoa(p) {
		return str(name)
	}
	return intNode(p)
}
