// Package plan turns a topology into what one host must program: the
// datapath's maps, the tunnel's peers, the flow logs and the mirror
// sessions. It is pure: no netlink, no files, no logging, no clock. The
// daemon is source (a file, etcd) → plan.ForHost → the datapath, tunnel,
// flow-log and mirror code; a second source needs no change here.
package plan

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// Host is everything one host programs for one topology.
type Host struct {
	Name              string
	UnderlayInterface string
	// PublicKey is the topology's public key for this host ("" when
	// absent); the daemon warns when its private key does not match it.
	PublicKey string
	// PresharedKeyFile is the tunnel's preshared key file ("" = none).
	PresharedKeyFile string

	// Datapath is the desired content of every map. TunnelIfindex is 0:
	// the daemon fills in its tunnel device.
	Datapath *dataplane.State
	Tunnel   Tunnel
	// ENIs are the local ENIs sorted by name, as status and events name
	// them.
	ENIs []ENI
	// FlowLogs are the flow logs that cover a local ENI, in file order.
	FlowLogs []FlowLog
	// Mirrors are the sessions whose source ENI is local, in file order.
	Mirrors []Mirror
}

// Tunnel is the part of the tunnel's configuration the topology decides;
// the daemon adds its device name and keys.
type Tunnel struct {
	ListenPort uint16
	MTU        int // the tunnel device's, from the path MTU
	Keepalive  time.Duration
	Peers      []tunnel.Peer // every other host, in file order
}

// Config is the tunnel's configuration with the daemon's device and keys.
func (t Tunnel) Config(device string, priv tunnel.Key, psk *tunnel.Key) tunnel.Config {
	return tunnel.Config{
		Device:       device,
		PrivateKey:   priv,
		ListenPort:   t.ListenPort,
		MTU:          t.MTU,
		PresharedKey: psk,
		Keepalive:    t.Keepalive,
		Peers:        t.Peers,
	}
}

// Keepalive is how often every peer is sent a keepalive, so that sessions
// exist before the first packet needs them.
const Keepalive = 25 * time.Second

// ENI describes a local ENI for status and events.
type ENI struct {
	Name           string
	Interface      string
	InterfaceType  string // "veth" or "tap"
	IP             netip.Addr
	MAC            net.HardwareAddr
	Subnet         string
	VPC            string
	VNI            uint32
	NetworkACL     string // "" = the default NACL
	SecurityGroups []string
	// IngressRules and EgressRules count the compiled security-group
	// rules (group references expanded).
	IngressRules, EgressRules int
}

// FlowLog is one flow log resolved for this host. Format and Destination
// are as the topology writes them: the daemon parses the format and opens
// the sink.
type FlowLog struct {
	Name        string
	AccountID   string
	ENIs        map[string]flowlogs.ENIMeta // the local ENIs it covers
	TrafficType string
	Interval    time.Duration
	Format      string
	Destination string
}

// Mirror is one mirror session whose source ENI is local, as the mirror
// daemon sends its copies.
type Mirror struct {
	Name      string
	SourceENI string
	Source    netip.Addr // the source ENI's address: the copies' outer source
	VNI       uint32     // virtual_network_id
	// TargetENI and Target are the target ENI and its address; Pcap the
	// file when the target is one. Exactly one of TargetENI and Pcap is set.
	TargetENI string
	Target    netip.Addr
	Pcap      string
}

// linkLocal is 169.254.0.0/16: metadata-style addresses a workload must
// never reach on the host.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

var loopback = netip.MustParsePrefix("127.0.0.0/8")

var anyIPv4 = netip.MustParsePrefix("0.0.0.0/0")

// Options tune ForHostWith; the zero value is ForHost's plan.
type Options struct {
	// SkipKeyless leaves peers without a public key out of the plan (the
	// etcd control plane: a host whose daemon is not registered, or whose
	// lease expired, has none). They are no tunnel peer and not in the
	// datapath's peers, so the ENI program drops traffic to their ENIs
	// as no_tunnel; when their key comes back, so do they. Without it a
	// keyless peer fails the plan (a file must name every peer's key).
	SkipKeyless bool
}

// ForHost plans host's share of topology t. t is expected to be valid
// (topology.Parse); ForHost fails only on what would make the plan
// meaningless: an unknown host, an ENI without its subnet, a peer's
// unreadable public key.
func ForHost(t *topology.Topology, host string) (*Host, error) {
	return ForHostWith(t, host, Options{})
}

// ForHostWith is ForHost with options.
func ForHostWith(t *topology.Topology, host string, o Options) (*Host, error) {
	h := t.HostByName(host)
	if h == nil {
		return nil, fmt.Errorf("host %q is not in the topology", host)
	}
	state, err := datapath(t, host, o)
	if err != nil {
		return nil, err
	}
	tun, err := tunnelPlan(t, h, o)
	if err != nil {
		return nil, err
	}
	p := &Host{
		Name:              h.Name,
		UnderlayInterface: h.UnderlayInterface,
		PublicKey:         h.PublicKey,
		PresharedKeyFile:  t.Tunnel.PresharedKeyFile,
		Datapath:          state,
		Tunnel:            tun,
		ENIs:              localENIs(t, host),
		FlowLogs:          flowLogs(t, host),
		Mirrors:           mirrors(t, host),
	}
	return p, nil
}

// Datapath computes what host's maps must hold for topology t.
func Datapath(t *topology.Topology, host string) (*dataplane.State, error) {
	return datapath(t, host, Options{})
}

func datapath(t *topology.Topology, host string, o Options) (*dataplane.State, error) {
	h := t.HostByName(host)
	if h == nil {
		return nil, fmt.Errorf("host %q is not in the topology", host)
	}
	s := &dataplane.State{
		UnderlayIP:  h.UnderlayIP,
		ListenPort:  h.ListenPort,
		UnderlayMTU: PathMTU(t),
		Substrate:   make([]netip.Prefix, 0, len(t.Hosts)+2),
	}
	if len(t.ENIs) > 0 {
		s.Routes = make([]dataplane.Route, 0, len(t.ENIs))
	}
	s.Substrate = append(s.Substrate, linkLocal, loopback)
	logged := map[string]bool{}
	for i := range t.FlowLogs {
		for _, e := range t.FlowLogENIs(&t.FlowLogs[i]) {
			logged[e.Name] = true
		}
	}
	// Sized up front: with a thousand hosts, growing these maps and
	// slices was a good part of a plan's time (fleet-sim's profile).
	hostIP := make(map[string]netip.Addr, len(t.Hosts))
	for _, hh := range t.Hosts {
		hostIP[hh.Name] = hh.UnderlayIP
		s.Substrate = append(s.Substrate, netip.PrefixFrom(hh.UnderlayIP, 32))
		if hh.Name != host && (hh.PublicKey != "" || !o.SkipKeyless) {
			if s.PeerPorts == nil {
				s.PeerPorts = make(map[netip.Addr]uint16, len(t.Hosts)-1)
				s.Peers = make([]netip.Addr, 0, len(t.Hosts)-1)
			}
			s.Peers = append(s.Peers, hh.UnderlayIP)
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
				Tap:             e.IsTap(),
				TapOwner:        e.TapOwner,
				TapMultiQueue:   e.TapMultiQueue,
			}
			de.SGIngress, de.SGEgress = SecurityGroupRules(t, e)
			if acl := t.NetworkACLByName(sub.NetworkACL); acl != nil {
				de.HasNACL = true
				de.NACLIngress = aclRules(acl.Ingress)
				de.NACLEgress = aclRules(acl.Egress)
			}
			s.ENIs = append(s.ENIs, de)
		} else {
			r.Remote = hostIP[e.Host]
			if !e.SourceDestCheck {
				u := dataplane.HostVNI{VNI: vpc.VNI, Host: r.Remote}
				if !slices.Contains(s.UncheckedFrom, u) {
					s.UncheckedFrom = append(s.UncheckedFrom, u)
				}
			}
		}
		s.Routes = append(s.Routes, r)
	}
	s.Mirror = mirrorSessions(t, host)
	return s, nil
}

// PathMTU is the underlay MTU every host pair can carry: the smallest of
// all hosts' MTUs (1500 when no host says).
func PathMTU(t *topology.Topology) int {
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

// tunnelPlan is the tunnel's listen port, MTU and peers for host h.
func tunnelPlan(t *topology.Topology, h *topology.Host, o Options) (Tunnel, error) {
	tun := Tunnel{
		ListenPort: h.ListenPort,
		MTU:        dataplane.TunnelMTU(PathMTU(t)),
		Keepalive:  Keepalive,
	}
	if len(t.Hosts) > 1 {
		tun.Peers = make([]tunnel.Peer, 0, len(t.Hosts)-1)
	}
	for _, p := range t.Peers(h.Name) {
		if p.PublicKey == "" && o.SkipKeyless {
			continue
		}
		pub, err := tunnel.ParseKey(p.PublicKey)
		if err != nil {
			return tun, fmt.Errorf("host %s: public key: %w", p.Name, err)
		}
		tun.Peers = append(tun.Peers, tunnel.Peer{
			Name:      p.Name,
			PublicKey: pub,
			Endpoint:  netip.AddrPortFrom(p.UnderlayIP, p.ListenPort),
			AllowedIP: netip.PrefixFrom(p.UnderlayIP, 32),
		})
	}
	return tun, nil
}

// localENIs describes host's ENIs, sorted by name.
func localENIs(t *topology.Topology, host string) []ENI {
	var out []ENI
	for _, e := range t.ENIsOnHost(host) {
		pe := ENI{Name: e.Name, Interface: e.Interface, InterfaceType: topology.InterfaceVeth, IP: e.IP, MAC: e.MAC,
			Subnet: e.Subnet, SecurityGroups: e.SecurityGroups}
		if e.IsTap() {
			pe.InterfaceType = topology.InterfaceTap
		}
		if sub, vpc := t.SubnetByName(e.Subnet); sub != nil && vpc != nil {
			pe.VPC, pe.VNI, pe.NetworkACL = vpc.Name, vpc.VNI, sub.NetworkACL
		}
		in, eg := SecurityGroupRules(t, e)
		pe.IngressRules, pe.EgressRules = len(in), len(eg)
		out = append(out, pe)
	}
	slices.SortFunc(out, func(a, b ENI) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// SecurityGroupRules compiles an ENI's security groups: the union of their
// rules per direction, with group references expanded to the members'
// addresses. An ENI without groups denies all in and allows all out; a
// group whose egress key is absent allows all out.
func SecurityGroupRules(t *topology.Topology, e *topology.ENI) (in, out []dataplane.Rule) {
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

// sgRule compiles one rule; a group reference becomes one rule per member
// of the group in the ENI's VPC, on any host.
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
		if slices.Contains(m.SecurityGroups, r.Group) {
			rr := base
			rr.CIDR = netip.PrefixFrom(m.IP, 32)
			out = append(out, rr)
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
// UDP, its ICMP type and code (type<<8 | code) for ICMP, everything
// otherwise.
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

// flowLogs resolves the topology's flow logs for host; a log that covers
// no local ENI is left out.
func flowLogs(t *topology.Topology, host string) []FlowLog {
	var out []FlowLog
	for i := range t.FlowLogs {
		f := &t.FlowLogs[i]
		enis := map[string]flowlogs.ENIMeta{}
		for _, e := range t.FlowLogENIs(f) {
			if e.Host != host {
				continue
			}
			sub, vpc := t.SubnetByName(e.Subnet)
			if sub == nil || vpc == nil {
				continue
			}
			enis[e.Name] = flowlogs.ENIMeta{VPC: vpc.Name, Subnet: sub.Name, Instance: e.Instance, VNI: vpc.VNI}
		}
		if len(enis) == 0 {
			continue
		}
		out = append(out, FlowLog{Name: f.Name, AccountID: t.AccountID, ENIs: enis, TrafficType: f.TrafficType,
			Interval: f.AggregationInterval, Format: f.Format, Destination: f.Destination})
	}
	return out
}

// localMirrorSessions lists the sessions whose source ENI is on host and
// whose filter exists, in file order.
func localMirrorSessions(t *topology.Topology, host string) []*topology.MirrorSession {
	var out []*topology.MirrorSession
	for i := range t.MirrorSessions {
		s := &t.MirrorSessions[i]
		if src := t.ENIByName(s.SourceENI); src != nil && src.Host == host && t.MirrorFilterByName(s.Filter) != nil {
			out = append(out, s)
		}
	}
	return out
}

// mirrors lists host's sessions as the mirror daemon sends them.
func mirrors(t *topology.Topology, host string) []Mirror {
	var out []Mirror
	for _, s := range localMirrorSessions(t, host) {
		m := Mirror{Name: s.Name, SourceENI: s.SourceENI, Source: t.ENIByName(s.SourceENI).IP,
			VNI: s.VirtualNetworkID, TargetENI: s.Target.ENI, Pcap: s.Target.Pcap}
		if s.Target.ENI != "" {
			if dst := t.ENIByName(s.Target.ENI); dst != nil {
				m.Target = dst.IP
			}
		}
		out = append(out, m)
	}
	return out
}

// mirrorSessions lists host's sessions as the datapath takes them.
func mirrorSessions(t *topology.Topology, host string) []dataplane.MirrorSession {
	var out []dataplane.MirrorSession
	mtu := dataplane.InnerMTU(PathMTU(t))
	for _, s := range localMirrorSessions(t, host) {
		f := t.MirrorFilterByName(s.Filter)
		snap := s.PacketLength
		if s.Target.ENI != "" {
			// A copy travels the VPC whole: as AWS does, it is cut to
			// what the path carries.
			if most := mtu - dataplane.MirrorCopyOverhead; snap == 0 || snap > most {
				snap = most
			}
		}
		ms := dataplane.MirrorSession{
			Name: s.Name, SourceENI: s.SourceENI, SessionNumber: s.SessionNumber, Snaplen: snap,
			Ingress: mirrorRules(f.Ingress), Egress: mirrorRules(f.Egress),
		}
		if s.Target.ENI != "" {
			if e := t.ENIByName(s.Target.ENI); e != nil {
				ms.Target, ms.VNI = e.IP, uint32(s.VirtualNetworkID)
			}
		}
		out = append(out, ms)
	}
	return out
}

func mirrorRules(rules []topology.MirrorFilterRule) []dataplane.MirrorRule {
	out := make([]dataplane.MirrorRule, 0, len(rules))
	for _, r := range rules {
		proto := r.Protocol
		if proto == topology.ProtoAll {
			proto = -1
		}
		out = append(out, dataplane.MirrorRule{
			Accept: r.Action == "accept", Protocol: proto, Source: r.SourceCIDR, Dest: r.DestinationCIDR,
			SrcPorts: [2]uint16{uint16(r.SourcePortRange.From), uint16(r.SourcePortRange.To)},
			DstPorts: [2]uint16{uint16(r.DestinationPortRange.From), uint16(r.DestinationPortRange.To)},
		})
	}
	return out
}
