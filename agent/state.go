package agent

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// linkLocal is 169.254.0.0/16: metadata-style addresses a workload must
// never reach on the host.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// desiredState computes what host's maps must hold for topology t.
func desiredState(t *topology.Topology, host string) (*dataplane.State, error) {
	h := t.HostByName(host)
	if h == nil {
		return nil, fmt.Errorf("host %q is not in the topology", host)
	}
	s := &dataplane.State{
		UnderlayIP:  h.UnderlayIP,
		ListenPort:  h.ListenPort,
		UnderlayMTU: pathMTU(t),
		Substrate:   []netip.Prefix{linkLocal, netip.MustParsePrefix("127.0.0.0/8")},
	}
	logged := map[string]bool{}
	for i := range t.FlowLogs {
		for _, e := range t.FlowLogENIs(&t.FlowLogs[i]) {
			logged[e.Name] = true
		}
	}
	hostIP := map[string]netip.Addr{}
	for _, hh := range t.Hosts {
		hostIP[hh.Name] = hh.UnderlayIP
		s.Substrate = append(s.Substrate, netip.PrefixFrom(hh.UnderlayIP, 32))
		if hh.Name != host {
			s.Peers = append(s.Peers, hh.UnderlayIP)
			if s.PeerPorts == nil {
				s.PeerPorts = map[netip.Addr]uint16{}
			}
			s.PeerPorts[hh.UnderlayIP] = hh.ListenPort
		}
	}
	for _, a := range h.UnderlayAllow {
		proto := a.Protocol
		if proto == topology.ProtoAll {
			proto = 0
		}
		s.UnderlayAllow = append(s.UnderlayAllow, dataplane.AllowRule{Protocol: uint8(proto), Port: a.Port})
	}
	for i := range t.ENIs {
		e := &t.ENIs[i]
		sub, vpc := t.SubnetByName(e.Subnet)
		if sub == nil || vpc == nil {
			return nil, fmt.Errorf("ENI %s: unknown subnet %q", e.Name, e.Subnet)
		}
		r := dataplane.Route{VNI: vpc.VNI, IP: e.IP, MAC: e.MAC}
		if e.Host == host {
			r.ENI = e.Name
			de := dataplane.ENI{
				Name:            e.Name,
				Interface:       e.Interface,
				VNI:             vpc.VNI,
				IP:              e.IP,
				Gateway:         sub.Gateway(),
				VPC:             vpc.CIDR,
				Subnet:          sub.CIDR,
				MAC:             e.MAC,
				SourceDestCheck: e.SourceDestCheck,
				Groups:          e.SecurityGroups,
				FlowLog:         logged[e.Name],
				MaxConnections:  uint32(t.MaxConnections(e)),
			}
			de.SGIngress, de.SGEgress = sgRules(t, e)
			if acl := t.NetworkACLByName(sub.NetworkACL); acl != nil {
				de.HasNACL = true
				de.NACLIngress = aclRules(acl.Ingress)
				de.NACLEgress = aclRules(acl.Egress)
			}
			s.ENIs = append(s.ENIs, de)
		} else {
			r.Remote = hostIP[e.Host]
		}
		s.Routes = append(s.Routes, r)
	}
	s.Mirror = mirrorSessions(t, host)
	return s, nil
}

// pathMTU is the underlay MTU every host pair can carry: the smallest of
// all hosts' MTUs.
func pathMTU(t *topology.Topology) int {
	mtu := 0
	for _, h := range t.Hosts {
		if mtu == 0 || h.MTU < mtu {
			mtu = h.MTU
		}
	}
	if mtu == 0 {
		mtu = 1500
	}
	return mtu
}

// tunnelConfig computes the tunnel's configuration for host.
func tunnelConfig(t *topology.Topology, host, device string, priv tunnel.Key, psk *tunnel.Key) (tunnel.Config, error) {
	h := t.HostByName(host)
	if h == nil {
		return tunnel.Config{}, fmt.Errorf("host %q is not in the topology", host)
	}
	cfg := tunnel.Config{
		Device:       device,
		PrivateKey:   priv,
		ListenPort:   h.ListenPort,
		MTU:          dataplane.TunnelMTU(pathMTU(t)),
		PresharedKey: psk,
		Keepalive:    25 * time.Second,
	}
	for _, p := range t.Peers(host) {
		pub, err := tunnel.ParseKey(p.PublicKey)
		if err != nil {
			return cfg, fmt.Errorf("host %s: public key: %w", p.Name, err)
		}
		cfg.Peers = append(cfg.Peers, tunnel.Peer{
			Name:      p.Name,
			PublicKey: pub,
			Endpoint:  netip.AddrPortFrom(p.UnderlayIP, p.ListenPort),
			AllowedIP: netip.PrefixFrom(p.UnderlayIP, 32),
		})
	}
	return cfg, nil
}

var anyIPv4 = netip.MustParsePrefix("0.0.0.0/0")

// sgRules compiles an ENI's security groups: the union of their rules per
// direction, with group references expanded to the members' addresses. An
// ENI without groups denies all in and allows all out; a group whose egress
// key is absent allows all out.
func sgRules(t *topology.Topology, e *topology.ENI) (in, out []dataplane.Rule) {
	if len(e.SecurityGroups) == 0 {
		return nil, []dataplane.Rule{{Protocol: dataplane.ProtoAll, CIDR: anyIPv4, Allow: true}}
	}
	vpc := t.ENIVPC(e)
	for _, name := range e.SecurityGroups {
		g := t.SecurityGroupByName(name)
		if g == nil {
			continue
		}
		for _, r := range g.Ingress {
			in = append(in, sgRule(t, vpc, r)...)
		}
		if g.EgressOmitted {
			out = append(out, dataplane.Rule{Protocol: dataplane.ProtoAll, CIDR: anyIPv4, Allow: true})
			continue
		}
		for _, r := range g.Egress {
			out = append(out, sgRule(t, vpc, r)...)
		}
	}
	return in, out
}

// sgRule compiles one rule; a group reference becomes one rule per member.
func sgRule(t *topology.Topology, vpc *topology.VPC, r topology.SGRule) []dataplane.Rule {
	base := dataplane.Rule{Protocol: r.Protocol, Allow: true}
	base.PortLo, base.PortHi = rulePorts(r.Protocol, r.FromPort, r.ToPort, r.ICMPType, r.ICMPCode)
	if r.Group == "" {
		base.CIDR = r.CIDR
		return []dataplane.Rule{base}
	}
	var out []dataplane.Rule
	for i := range t.ENIs {
		m := &t.ENIs[i]
		if vpc == nil || t.ENIVPC(m) != vpc {
			continue
		}
		for _, g := range m.SecurityGroups {
			if g == r.Group {
				rr := base
				rr.CIDR = netip.PrefixFrom(m.IP, 32)
				out = append(out, rr)
				break
			}
		}
	}
	return out
}

func aclRules(rules []topology.ACLRule) []dataplane.Rule {
	out := make([]dataplane.Rule, 0, len(rules))
	for _, r := range rules {
		dr := dataplane.Rule{Protocol: r.Protocol, CIDR: r.CIDR, Allow: r.Action == "allow"}
		dr.PortLo, dr.PortHi = rulePorts(r.Protocol, r.FromPort, r.ToPort, r.ICMPType, r.ICMPCode)
		out = append(out, dr)
	}
	return out
}

// rulePorts is the rule-port range of a rule: its port range for TCP and
// UDP, its ICMP type and code for ICMP, everything otherwise.
func rulePorts(proto, from, to, icmpType, icmpCode int) (uint16, uint16) {
	switch proto {
	case 6, 17:
		return uint16(from), uint16(to)
	case 1:
		switch {
		case icmpType < 0:
			return 0, 0xffff
		case icmpCode < 0:
			return uint16(icmpType) << 8, uint16(icmpType)<<8 | 0xff
		default:
			v := uint16(icmpType)<<8 | uint16(icmpCode)
			return v, v
		}
	}
	return 0, 0xffff
}
