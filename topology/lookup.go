package topology

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
)

// HostByName returns the host called name, or nil.
func (t *Topology) HostByName(name string) *Host {
	return find(t.Hosts, func(h *Host) bool { return h.Name == name })
}

// VPCByName returns the VPC called name, or nil.
func (t *Topology) VPCByName(name string) *VPC {
	return find(t.VPCs, func(v *VPC) bool { return v.Name == name })
}

// VPCByVNI returns the VPC whose VNI is vni, or nil.
func (t *Topology) VPCByVNI(vni uint32) *VPC {
	return find(t.VPCs, func(v *VPC) bool { return v.VNI == vni })
}

// SubnetByName returns the subnet called name and its VPC, or nil, nil.
func (t *Topology) SubnetByName(name string) (*Subnet, *VPC) {
	for i := range t.VPCs {
		if s := find(t.VPCs[i].Subnets, func(s *Subnet) bool { return s.Name == name }); s != nil {
			return s, &t.VPCs[i]
		}
	}
	return nil, nil
}

// ENIByName returns the ENI called name, or nil.
func (t *Topology) ENIByName(name string) *ENI {
	return find(t.ENIs, func(e *ENI) bool { return e.Name == name })
}

// SecurityGroupByName returns the security group called name, or nil.
func (t *Topology) SecurityGroupByName(name string) *SecurityGroup {
	return find(t.SecurityGroups, func(g *SecurityGroup) bool { return g.Name == name })
}

// NetworkACLByName returns the network ACL called name, or nil.
func (t *Topology) NetworkACLByName(name string) *NetworkACL {
	return find(t.NetworkACLs, func(a *NetworkACL) bool { return a.Name == name })
}

// FlowLogByName returns the flow log called name, or nil.
func (t *Topology) FlowLogByName(name string) *FlowLog {
	return find(t.FlowLogs, func(f *FlowLog) bool { return f.Name == name })
}

// MirrorFilterByName returns the mirror filter called name, or nil.
func (t *Topology) MirrorFilterByName(name string) *MirrorFilter {
	return find(t.MirrorFilters, func(f *MirrorFilter) bool { return f.Name == name })
}

// MirrorSessionByName returns the mirror session called name, or nil.
func (t *Topology) MirrorSessionByName(name string) *MirrorSession {
	return find(t.MirrorSessions, func(s *MirrorSession) bool { return s.Name == name })
}

// ENIsOnHost returns the ENIs placed on host, in file order.
func (t *Topology) ENIsOnHost(host string) []*ENI {
	return filter(t.ENIs, func(e *ENI) bool { return e.Host == host })
}

// MaxConnections is how many connections e may track at once: its
// max_connections, or by default an equal share of the conntrack table
// among the ENIs of its host, at least MinDefaultConnections.
func (t *Topology) MaxConnections(e *ENI) int {
	if e.MaxConnections > 0 {
		return e.MaxConnections
	}
	n := max(len(t.ENIsOnHost(e.Host)), 1)
	return max(ConntrackTableSize/n, MinDefaultConnections)
}

// ENIsInSubnet returns the ENIs of the subnet called subnet, in file order.
func (t *Topology) ENIsInSubnet(subnet string) []*ENI {
	return filter(t.ENIs, func(e *ENI) bool { return e.Subnet == subnet })
}

// ENIsInVPC returns the ENIs of every subnet of the VPC called vpc.
func (t *Topology) ENIsInVPC(vpc string) []*ENI {
	return filter(t.ENIs, func(e *ENI) bool {
		v := t.ENIVPC(e)
		return v != nil && v.Name == vpc
	})
}

// Peers returns every host but the one called host, in file order.
func (t *Topology) Peers(host string) []*Host {
	return filter(t.Hosts, func(h *Host) bool { return h.Name != host })
}

// ENISubnet returns the subnet of e and its VPC, or nil, nil.
func (t *Topology) ENISubnet(e *ENI) (*Subnet, *VPC) { return t.SubnetByName(e.Subnet) }

// ENIVPC returns the VPC of e, or nil.
func (t *Topology) ENIVPC(e *ENI) *VPC {
	_, v := t.SubnetByName(e.Subnet)
	return v
}

// ENIPrefix returns e's address with its subnet's prefix length (the
// address the workload's eth0 carries), or an invalid prefix when the
// subnet is unknown.
func (t *Topology) ENIPrefix(e *ENI) netip.Prefix {
	s, _ := t.SubnetByName(e.Subnet)
	if s == nil {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(e.IP, s.CIDR.Bits())
}

// ENIGateway returns the default gateway of e (its subnet's .1), or an
// invalid address when the subnet is unknown.
func (t *Topology) ENIGateway(e *ENI) netip.Addr {
	s, _ := t.SubnetByName(e.Subnet)
	if s == nil {
		return netip.Addr{}
	}
	return s.Gateway()
}

// ENISecurityGroups returns the security groups of e, in the ENI's order.
func (t *Topology) ENISecurityGroups(e *ENI) []*SecurityGroup {
	var out []*SecurityGroup
	for _, name := range e.SecurityGroups {
		if g := t.SecurityGroupByName(name); g != nil {
			out = append(out, g)
		}
	}
	return out
}

// FlowLogENIs returns the ENIs a flow log covers: every ENI of its VPC or
// subnet, or the one ENI it names.
func (t *Topology) FlowLogENIs(f *FlowLog) []*ENI {
	switch f.ResourceKind {
	case "vpc":
		return t.ENIsInVPC(f.ResourceName)
	case "subnet":
		return t.ENIsInSubnet(f.ResourceName)
	case "eni":
		if e := t.ENIByName(f.ResourceName); e != nil {
			return []*ENI{e}
		}
	}
	return nil
}

// MirrorSessionsOf returns the mirror sessions whose source is the ENI
// called eni, lowest session number (highest priority) first.
func (t *Topology) MirrorSessionsOf(eni string) []*MirrorSession {
	out := filter(t.MirrorSessions, func(s *MirrorSession) bool { return s.SourceENI == eni })
	slices.SortStableFunc(out, func(a, b *MirrorSession) int { return cmp.Compare(a.SessionNumber, b.SessionNumber) })
	return out
}

// RequireKeys checks that every host but the one called host has a public
// key, as `vpcd run` needs. It returns an ErrorList with one entry (path
// hosts[i].public_key) per host that lacks one, or nil.
func (t *Topology) RequireKeys(host string) error {
	var errs ErrorList
	if t.HostByName(host) == nil {
		errs = append(errs, &FieldError{Path: "hosts", Msg: "unknown host " + strconv.Quote(host)})
	}
	for i, h := range t.Hosts {
		if h.Name != host && h.PublicKey == "" {
			errs = append(errs, &FieldError{
				Path: field(elem("hosts", i), "public_key"),
				Msg:  "host " + h.Name + " has no public key: run needs the key of every peer",
			})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// Gateway returns the subnet's default gateway: its first address after
// the network address (the ".1").
func (s *Subnet) Gateway() netip.Addr { return s.CIDR.Addr().Next() }

// Broadcast returns the subnet's last (broadcast) address.
func (s *Subnet) Broadcast() netip.Addr {
	b := s.CIDR.Addr().As4()
	host := uint32(1)<<(32-s.CIDR.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Reserved returns what ip is in the subnet when no ENI may take it
// ("network address", "gateway" or "broadcast address"), or "".
func (s *Subnet) Reserved(ip netip.Addr) string {
	switch ip {
	case s.CIDR.Addr():
		return "network address"
	case s.Gateway():
		return "gateway"
	case s.Broadcast():
		return "broadcast address"
	}
	return ""
}

// find returns a pointer to the first element of list that matches, or nil.
func find[T any](list []T, match func(*T) bool) *T {
	for i := range list {
		if match(&list[i]) {
			return &list[i]
		}
	}
	return nil
}

// filter returns pointers to every element of list that matches.
func filter[T any](list []T, match func(*T) bool) []*T {
	var out []*T
	for i := range list {
		if match(&list[i]) {
			out = append(out, &list[i])
		}
	}
	return out
}
