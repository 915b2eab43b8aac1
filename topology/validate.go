package topology

import (
	"net/netip"

	"github.com/vpcd/vpcd/bpf/limits"
)

// checker validates what no single value can: names, references between
// objects and address plans. Objects whose own values did not decode (an
// empty name, an invalid CIDR) are skipped so that one mistake is reported
// once.
type checker struct {
	*decoder
	t                                     *Topology
	hosts, vpcs, sgs, acls, enis, filters map[string]int
	subnets                               map[string]subnetRef
}

// subnetRef locates a subnet: t.VPCs[vpc].Subnets[sub].
type subnetRef struct{ vpc, sub int }

// validate runs every cross-object check on t.
func (d *decoder) validate(t *Topology) {
	c := &checker{decoder: d, t: t}
	c.indexNames()
	c.checkHosts()
	c.checkVPCs()
	c.checkSecurityGroups()
	c.checkNetworkACLs()
	c.checkENIs()
	c.checkFlowLogs()
	c.checkMirrorSessions()
	c.checkVMs()
}

// checkVMs checks that each VM's ENI is a tap ENI and has no other VM.
func (c *checker) checkVMs() {
	seen := make(map[string]int)
	for i, v := range c.t.VMs {
		path := elem("vms", i)
		if v.ENI == "" {
			continue
		}
		if _, isMap := c.nodes[field(path, "eni")]; isMap {
			path = field(path, "eni")
		}
		e, ok := c.enis[v.ENI]
		switch {
		case !ok:
			c.errorAt(path, "unknown eni %q", v.ENI)
		case !c.t.ENIs[e].IsTap():
			c.errorAt(path, "eni %s is no tap ENI (interface_type: tap): a VM needs a tap", v.ENI)
		}
		if j, dup := claim(seen, v.ENI, i); dup {
			c.errorAt(path, "eni %s already has a VM, at %s", v.ENI, elem("vms", j))
		}
	}
}

// names maps each name of one kind to the index of its first definition and
// reports later definitions of the same name.
func (c *checker) names(kind, path string, count int, nameOf func(int) string) map[string]int {
	idx := make(map[string]int, count)
	for i := range count {
		name := nameOf(i)
		if name == "" {
			continue
		}
		if j, dup := idx[name]; dup {
			c.errorAt(field(elem(path, i), "name"), "%s %s is already defined at %s", kind, name, elem(path, j))
			continue
		}
		idx[name] = i
	}
	return idx
}

func (c *checker) indexNames() {
	t := c.t
	c.hosts = c.names("host", "hosts", len(t.Hosts), func(i int) string { return t.Hosts[i].Name })
	c.vpcs = c.names("vpc", "vpcs", len(t.VPCs), func(i int) string { return t.VPCs[i].Name })
	c.sgs = c.names("security group", "security_groups", len(t.SecurityGroups), func(i int) string { return t.SecurityGroups[i].Name })
	c.acls = c.names("network acl", "network_acls", len(t.NetworkACLs), func(i int) string { return t.NetworkACLs[i].Name })
	c.enis = c.names("eni", "enis", len(t.ENIs), func(i int) string { return t.ENIs[i].Name })
	c.filters = c.names("mirror filter", "mirror_filters", len(t.MirrorFilters), func(i int) string { return t.MirrorFilters[i].Name })
	c.names("flow log", "flow_logs", len(t.FlowLogs), func(i int) string { return t.FlowLogs[i].Name })
	c.names("mirror session", "mirror_sessions", len(t.MirrorSessions), func(i int) string { return t.MirrorSessions[i].Name })

	// Subnet names are unique across VPCs: ENIs name their subnet alone.
	c.subnets = make(map[string]subnetRef)
	for v := range t.VPCs {
		for s, sn := range t.VPCs[v].Subnets {
			if sn.Name == "" {
				continue
			}
			path := subnetPath(v, s)
			if prev, dup := c.subnets[sn.Name]; dup {
				c.errorAt(field(path, "name"), "subnet %s is already defined at %s", sn.Name, subnetPath(prev.vpc, prev.sub))
				continue
			}
			c.subnets[sn.Name] = subnetRef{v, s}
		}
	}
}

func subnetPath(vpc, sub int) string {
	return elem(field(elem("vpcs", vpc), "subnets"), sub)
}

func (c *checker) checkHosts() {
	seen := make(map[netip.Addr]int)
	for i, h := range c.t.Hosts {
		if !h.UnderlayIP.IsValid() {
			continue
		}
		if j, dup := seen[h.UnderlayIP]; dup {
			c.errorAt(field(elem("hosts", i), "underlay_ip"), "%s is already used by host %s", h.UnderlayIP, label(c.t.Hosts[j].Name, "hosts", j))
			continue
		}
		seen[h.UnderlayIP] = i
	}
}

func (c *checker) checkVPCs() {
	vnis := make(map[uint32]int)
	for i, v := range c.t.VPCs {
		if v.VNI != 0 {
			if j, dup := vnis[v.VNI]; dup {
				c.errorAt(field(elem("vpcs", i), "vni"), "%d is already used by vpc %s", v.VNI, label(c.t.VPCs[j].Name, "vpcs", j))
			} else {
				vnis[v.VNI] = i
			}
		}
		c.checkSubnets(i)
	}
}

// label names an object for messages even when its name did not decode.
func label(name, list string, i int) string {
	if name == "" {
		return elem(list, i)
	}
	return name
}

// checkSubnets checks the subnets of t.VPCs[v]: inside the VPC's CIDR, not
// overlapping one another, and with a network ACL of the same VPC.
func (c *checker) checkSubnets(v int) {
	vpc := &c.t.VPCs[v]
	for s, sn := range vpc.Subnets {
		path := subnetPath(v, s)
		if sn.CIDR.IsValid() {
			if vpc.CIDR.IsValid() && !contains(vpc.CIDR, sn.CIDR) {
				c.errorAt(field(path, "cidr"), "%s is outside vpc %s %s", sn.CIDR, label(vpc.Name, "vpcs", v), vpc.CIDR)
			}
			for p := range s {
				prev := vpc.Subnets[p]
				if prev.CIDR.IsValid() && prev.CIDR.Overlaps(sn.CIDR) {
					c.errorAt(field(path, "cidr"), "%s overlaps subnet %s %s", sn.CIDR, label(prev.Name, field(elem("vpcs", v), "subnets"), p), prev.CIDR)
					break
				}
			}
		}
		if sn.NetworkACL != "" {
			c.checkACLRef(field(path, "network_acl"), sn.NetworkACL, vpc.Name)
		}
	}
}

// contains reports whether prefix inner lies inside prefix outer.
func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// checkACLRef checks that the network ACL name exists and belongs to vpc.
func (c *checker) checkACLRef(path, name, vpc string) {
	i, ok := c.acls[name]
	switch {
	case !ok:
		c.errorAt(path, "unknown network acl %q", name)
	case vpc != "" && c.t.NetworkACLs[i].VPC != "" && c.t.NetworkACLs[i].VPC != vpc:
		c.errorAt(path, "network acl %s belongs to vpc %s, not %s", name, c.t.NetworkACLs[i].VPC, vpc)
	}
}

// checkVPCRef checks that a vpc name exists.
func (c *checker) checkVPCRef(path, name string) {
	if _, ok := c.vpcs[name]; name != "" && !ok {
		c.errorAt(path, "unknown vpc %q", name)
	}
}

// checkGroupRef checks that a security-group name exists and belongs to vpc.
func (c *checker) checkGroupRef(path, name, vpc string) {
	i, ok := c.sgs[name]
	switch {
	case !ok:
		c.errorAt(path, "unknown security group %q", name)
	case vpc != "" && c.t.SecurityGroups[i].VPC != "" && c.t.SecurityGroups[i].VPC != vpc:
		c.errorAt(path, "security group %s belongs to vpc %s, not %s", name, c.t.SecurityGroups[i].VPC, vpc)
	}
}

func (c *checker) checkSecurityGroups() {
	for i, g := range c.t.SecurityGroups {
		path := elem("security_groups", i)
		c.checkVPCRef(field(path, "vpc"), g.VPC)
		vpc := g.VPC
		if _, ok := c.vpcs[vpc]; !ok {
			vpc = ""
		}
		c.checkRuleGroups(field(path, "ingress"), "source_group", g.Ingress, vpc)
		c.checkRuleGroups(field(path, "egress"), "destination_group", g.Egress, vpc)
	}
}

func (c *checker) checkRuleGroups(path, key string, rules []SGRule, vpc string) {
	for r, rule := range rules {
		if rule.Group != "" {
			c.checkGroupRef(field(elem(path, r), key), rule.Group, vpc)
		}
	}
}

func (c *checker) checkNetworkACLs() {
	for i, a := range c.t.NetworkACLs {
		c.checkVPCRef(field(elem("network_acls", i), "vpc"), a.VPC)
	}
}

// hostKey keys values that must be unique per host (MACs, interfaces).
type hostKey struct{ host, value string }

// vpcAddr keys addresses that must be unique per VPC.
type vpcAddr struct {
	vpc int
	ip  netip.Addr
}

func (c *checker) checkENIs() {
	ips := make(map[vpcAddr]int)
	macs := make(map[hostKey]int)
	ifaces := make(map[hostKey]int)
	for i := range c.t.ENIs {
		e := &c.t.ENIs[i]
		path := elem("enis", i)
		if _, ok := c.hosts[e.Host]; e.Host != "" && !ok {
			c.errorAt(field(path, "host"), "unknown host %q", e.Host)
		}
		ref, ok := c.subnets[e.Subnet]
		if e.Subnet != "" && !ok {
			c.errorAt(field(path, "subnet"), "unknown subnet %q", e.Subnet)
		}
		vpcName := ""
		if ok {
			vpc := &c.t.VPCs[ref.vpc]
			vpcName = vpc.Name
			if c.checkENIAddr(field(path, "ip"), e.IP, &vpc.Subnets[ref.sub]) {
				if j, dup := claim(ips, vpcAddr{ref.vpc, e.IP}, i); dup {
					c.errorAt(field(path, "ip"), "%s is already used by eni %s in vpc %s",
						e.IP, c.eniLabel(j), label(vpcName, "vpcs", ref.vpc))
				}
			}
		}
		if e.Host != "" && e.MAC != nil {
			if j, dup := claim(macs, hostKey{e.Host, e.MAC.String()}, i); dup {
				c.errorAt(field(path, "mac"), "MAC %s%s is already used by eni %s on host %s",
					e.MAC, c.defaulted(path, "mac", "ip"), c.eniLabel(j), e.Host)
			}
		}
		if e.Host != "" && e.Interface != "" {
			if j, dup := claim(ifaces, hostKey{e.Host, e.Interface}, i); dup {
				c.errorAt(field(path, "interface"), "interface %s%s is already used by eni %s on host %s",
					e.Interface, c.defaulted(path, "interface", "name"), c.eniLabel(j), e.Host)
			} else if h, ok := c.hosts[e.Host]; ok && c.t.Hosts[h].UnderlayInterface == e.Interface {
				c.errorAt(field(path, "interface"), "interface %s%s is the underlay interface of host %s",
					e.Interface, c.defaulted(path, "interface", "name"), e.Host)
			}
		}
		c.checkENIGroups(path, e, vpcName)
	}
}

// claim records that object i holds key and returns (i, false), or returns
// the index of the object that holds it already and true.
func claim[K comparable](seen map[K]int, key K, i int) (int, bool) {
	if j, dup := seen[key]; dup {
		return j, true
	}
	seen[key] = i
	return i, false
}

func (c *checker) eniLabel(i int) string { return label(c.t.ENIs[i].Name, "enis", i) }

// defaulted returns a note for messages about a value that the file did not
// give but Parse derived from another key.
func (c *checker) defaulted(path, key, from string) string {
	if _, given := c.nodes[field(path, key)]; given {
		return ""
	}
	return " (default from " + from + "; set " + key + " explicitly)"
}

// checkENIAddr checks that ip is a usable address of subnet s and reports
// whether the address could be checked and is valid.
func (c *checker) checkENIAddr(path string, ip netip.Addr, s *Subnet) bool {
	if !ip.IsValid() || !s.CIDR.IsValid() {
		return false
	}
	if !s.CIDR.Contains(ip) {
		c.errorAt(path, "%s is outside subnet %s %s", ip, s.Name, s.CIDR)
		return false
	}
	if what := s.Reserved(ip); what != "" {
		c.errorAt(path, "%s is reserved in subnet %s %s (%s)", ip, s.Name, s.CIDR, what)
		return false
	}
	return true
}

// checkENIGroups checks an ENI's security groups: known, listed once and of
// the ENI's VPC (when that is known).
func (c *checker) checkENIGroups(path string, e *ENI, vpc string) {
	listed := make(map[string]int)
	for k, g := range e.SecurityGroups {
		if g == "" {
			continue
		}
		p := elem(field(path, "security_groups"), k)
		if j, dup := claim(listed, g, k); dup {
			c.errorAt(p, "security group %s is already listed at %s", g, elem(field(path, "security_groups"), j))
			continue
		}
		c.checkGroupRef(p, g, vpc)
	}
}

func (c *checker) checkFlowLogs() {
	for i, f := range c.t.FlowLogs {
		path := field(elem("flow_logs", i), "resource")
		var known bool
		switch f.ResourceKind {
		case "vpc":
			_, known = c.vpcs[f.ResourceName]
		case "subnet":
			_, known = c.subnets[f.ResourceName]
		case "eni":
			_, known = c.enis[f.ResourceName]
		default:
			continue
		}
		if !known {
			c.errorAt(path, "unknown %s %q", f.ResourceKind, f.ResourceName)
		}
	}
}

// sessionKey keys mirror session numbers, unique per source ENI.
type sessionKey struct {
	eni    string
	number int
}

// MaxMirrorRulesPerENI is how many mirror filter rules the sessions of one
// source ENI may have together in one direction: what the datapath holds
// per ENI and direction (MIRROR_RULES in bpf/lib/limits.h).
const MaxMirrorRulesPerENI = limits.MirrorRules

func (c *checker) checkMirrorSessions() {
	numbers := make(map[sessionKey]int)
	// rules counts, per source ENI and direction, the rules of its sessions.
	rules := map[[2]string]int{}
	for i, s := range c.t.MirrorSessions {
		path := elem("mirror_sessions", i)
		src, srcOK := c.enis[s.SourceENI]
		if s.SourceENI != "" && !srcOK {
			c.errorAt(field(path, "source_eni"), "unknown eni %q", s.SourceENI)
		}
		if _, ok := c.filters[s.Filter]; s.Filter != "" && !ok {
			c.errorAt(field(path, "filter"), "unknown mirror filter %q", s.Filter)
		}
		if s.SourceENI != "" && s.SessionNumber != 0 {
			if j, dup := claim(numbers, sessionKey{s.SourceENI, s.SessionNumber}, i); dup {
				c.errorAt(field(path, "session_number"), "session number %d is already used by mirror session %s on eni %s",
					s.SessionNumber, label(c.t.MirrorSessions[j].Name, "mirror_sessions", j), s.SourceENI)
			}
		}
		if s.Target.ENI != "" {
			c.checkMirrorTarget(field(field(path, "target"), "eni"), s.Target.ENI, src, srcOK)
		}
		if fi, ok := c.filters[s.Filter]; ok && srcOK {
			f := &c.t.MirrorFilters[fi]
			for _, d := range []struct {
				dir string
				n   int
			}{{"ingress", len(f.Ingress)}, {"egress", len(f.Egress)}} {
				dir, n := d.dir, d.n
				k := [2]string{s.SourceENI, dir}
				before := rules[k]
				rules[k] += n
				if before <= MaxMirrorRulesPerENI && rules[k] > MaxMirrorRulesPerENI {
					c.errorAt(field(path, "filter"), "eni %s would have %d %s mirror rules across its sessions; at most %d",
						s.SourceENI, rules[k], dir, MaxMirrorRulesPerENI)
				}
			}
		}
	}
}

// checkMirrorTarget checks a target ENI: known, not the source itself and in
// the source's VPC (mirrored packets travel through the source's VPC).
func (c *checker) checkMirrorTarget(path, target string, src int, srcOK bool) {
	dst, ok := c.enis[target]
	switch {
	case !ok:
		c.errorAt(path, "unknown eni %q", target)
	case srcOK && dst == src:
		c.errorAt(path, "eni %s is the session's source: a target must be another eni", target)
	case srcOK:
		sv, dv := c.eniVPC(src), c.eniVPC(dst)
		if sv != "" && dv != "" && sv != dv {
			c.errorAt(path, "target eni %s is in vpc %s, but source eni %s is in vpc %s", target, dv, c.t.ENIs[src].Name, sv)
		}
	}
}

// eniVPC returns the name of the VPC of t.ENIs[i], or "" when unknown.
func (c *checker) eniVPC(i int) string {
	if ref, ok := c.subnets[c.t.ENIs[i].Subnet]; ok {
		return c.t.VPCs[ref.vpc].Name
	}
	return ""
}
