package fleetsim

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vpcd/vpcd/topology"
)

// fleet describes the simulated topology: hosts h0000…, VPCs v0…, each
// VPC with one subnet and two security groups (web-<v>, app-<v>), and
// ENIs spread round-robin over the VPCs and, within a VPC, alternately
// over its two groups.
type fleet struct {
	hosts, enisPerHost, vpcs int
}

func hostName(i int) string { return fmt.Sprintf("h%04d", i) }

// underlayIP of host i, in 198.18.0.0/15 (benchmarking addresses).
func underlayIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18 + byte(i/(250*256)), byte(i / 250 % 256), byte(i%250 + 1)})
}

// eniRef is one ENI of the base topology.
type eniRef struct {
	name, host string
	vpc        int
	group      string
	ip         netip.Addr
}

// eniIP is the address of the idx-th ENI of VPC v (the first four of the
// subnet are reserved, as in AWS).
func eniIP(v, idx int) netip.Addr {
	n := idx + 4
	return netip.AddrFrom4([4]byte{10, byte(100 + v), byte(n / 256), byte(n % 256)})
}

func (f fleet) enis() []eniRef {
	var out []eniRef
	for i := 0; i < f.hosts; i++ {
		for j := 0; j < f.enisPerHost; j++ {
			g := i*f.enisPerHost + j
			v, idx := g%f.vpcs, g/f.vpcs
			group := fmt.Sprintf("web-%d", v)
			if idx%2 == 1 {
				group = fmt.Sprintf("app-%d", v)
			}
			out = append(out, eniRef{name: fmt.Sprintf("e%04d-%d", i, j), host: hostName(i), vpc: v, group: group, ip: eniIP(v, idx)})
		}
	}
	return out
}

// yaml writes the topology file: the base, plus extra ENIs and, when
// sgChange, one more ingress rule in app-0.
func (f fleet) yaml(extra []eniRef, sgChange bool) string {
	var b strings.Builder
	b.WriteString("version: 1\naccount_id: \"123456789012\"\nhosts:\n")
	for i := 0; i < f.hosts; i++ {
		fmt.Fprintf(&b, "  - {name: %s, underlay_ip: %s}\n", hostName(i), underlayIP(i))
	}
	b.WriteString("vpcs:\n")
	for v := 0; v < f.vpcs; v++ {
		fmt.Fprintf(&b, "  - name: v%d\n    vni: %d\n    cidr: 10.%d.0.0/16\n    subnets:\n      - {name: s%d, cidr: 10.%d.0.0/17}\n",
			v, 1000+v, 100+v, v, 100+v)
	}
	b.WriteString("security_groups:\n")
	for v := 0; v < f.vpcs; v++ {
		fmt.Fprintf(&b, "  - name: web-%d\n    vpc: v%d\n    ingress:\n", v, v)
		b.WriteString("      - {protocol: tcp, from_port: 80, to_port: 80, cidr: 0.0.0.0/0}\n")
		fmt.Fprintf(&b, "      - {protocol: icmp, cidr: 10.%d.0.0/16}\n", 100+v)
		fmt.Fprintf(&b, "  - name: app-%d\n    vpc: v%d\n    ingress:\n", v, v)
		fmt.Fprintf(&b, "      - {protocol: tcp, from_port: 8080, to_port: 8080, cidr: 10.%d.0.0/16}\n", 100+v)
		if v == 0 && sgChange {
			b.WriteString("      - {protocol: tcp, from_port: 9090, to_port: 9090, cidr: 10.100.0.0/16}\n")
		}
	}
	b.WriteString("enis:\n")
	for _, e := range append(f.enis(), extra...) {
		fmt.Fprintf(&b, "  - {name: %s, host: %s, subnet: s%d, ip: %s, security_groups: [%s]}\n", e.name, e.host, e.vpc, e.ip, e.group)
	}
	return b.String()
}

// topology parses f.yaml(...), as `vpcd apply` parses a file.
func (f fleet) topology(extra []eniRef, sgChange bool) (*topology.Topology, error) {
	return topology.Parse([]byte(f.yaml(extra, sgChange)))
}

// newENI is the ENI the first change adds: on the first host, in v0,
// after every base ENI of v0.
func (f fleet) newENI(n int) eniRef {
	base := (f.hosts*f.enisPerHost + f.vpcs - 1) / f.vpcs
	return eniRef{name: fmt.Sprintf("new-%d", n), host: hostName(0), vpc: 0, group: "web-0", ip: eniIP(0, base+n)}
}
