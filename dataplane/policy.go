package dataplane

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/vpcd/vpcd/bpf"
)

// Rule is one security-group or network-ACL rule, compiled to what the
// datapath matches: a protocol (ProtoAll for every protocol), a range of
// the packet's "rule port" (the destination port for TCP and UDP, ICMP
// type<<8|code for ICMP, anything for other protocols) and the remote
// CIDR. Security-group rules always allow; network-ACL rules allow or
// deny, and their order is their rule numbers'.
type Rule struct {
	Protocol int // 0..255, or ProtoAll
	PortLo   uint16
	PortHi   uint16
	CIDR     netip.Prefix
	Allow    bool
}

// ProtoAll is Rule.Protocol for every protocol.
const ProtoAll = -1

// MaxRules is the most rules one set (an ENI's groups in one direction, or
// a network ACL's rules in one direction) can hold: the bits of the
// datapath's rule bitmaps.
const MaxRules = 16 * 64

// RulePort is the value a packet's rule port takes: see Rule.
func RulePort(proto uint8, dport uint16, icmpType, icmpCode uint8) uint16 {
	switch proto {
	case 6, 17:
		return dport
	case 1:
		return uint16(icmpType)<<8 | uint16(icmpCode)
	}
	return 0
}

// Matches reports whether the rule matches a packet's protocol, rule port
// and remote address.
func (r Rule) Matches(proto uint8, port uint16, remote netip.Addr) bool {
	if r.Protocol != ProtoAll && r.Protocol != int(proto) {
		return false
	}
	if r.Protocol != ProtoAll && (port < r.PortLo || port > r.PortHi) {
		return false
	}
	return r.CIDR.Contains(remote)
}

type bits = bpf.EniRuleBits

func setBit(b *bits, i int) { b.W[i/64] |= 1 << (i % 64) }

func orBits(a *bits, b bits) {
	for i := range a.W {
		a.W[i] |= b.W[i]
	}
}

// portBlock is an aligned block of ports: Base with the low 16-Len bits
// free (Len = prefix length).
type portBlock struct {
	Base uint16
	Len  int
}

func (b portBlock) contains(c portBlock) bool {
	if c.Len < b.Len {
		return false
	}
	mask := uint16(0xffff) << (16 - b.Len)
	if b.Len == 0 {
		mask = 0
	}
	return c.Base&mask == b.Base
}

// rangeBlocks splits [lo, hi] into the fewest aligned blocks.
func rangeBlocks(lo, hi uint16) []portBlock {
	var out []portBlock
	l, h := uint32(lo), uint32(hi)
	for l <= h {
		size := uint32(1)
		n := 16
		for n > 0 && l%(size*2) == 0 && l+size*2-1 <= h {
			size *= 2
			n--
		}
		out = append(out, portBlock{Base: uint16(l), Len: n})
		l += size
	}
	return out
}

// compiledSet is one rule set as map entries.
type compiledSet struct {
	cidr map[bpf.EniPolicyCidrKey]bits
	port map[bpf.EniPolicyPortKey]bits
	meta bpf.EniPolicySet
}

// compileSet turns rules (in match order) into the entries the datapath
// looks up for set id. Each CIDR entry carries the bits of every rule whose
// CIDR contains it, and each port block those of every rule with a block
// containing it, so that the longest-prefix match yields every matching
// rule.
func compileSet(id uint32, rules []Rule) (*compiledSet, error) {
	if len(rules) > MaxRules {
		return nil, fmt.Errorf("%d rules, at most %d per direction", len(rules), MaxRules)
	}
	cs := &compiledSet{cidr: map[bpf.EniPolicyCidrKey]bits{}, port: map[bpf.EniPolicyPortKey]bits{}}
	cs.meta.Rules = uint32(len(rules))

	cidrs := map[netip.Prefix]bool{}
	for _, r := range rules {
		cidrs[r.CIDR.Masked()] = true
	}
	for p := range cidrs {
		var b bits
		for i, r := range rules {
			rp := r.CIDR.Masked()
			if rp.Bits() <= p.Bits() && rp.Contains(p.Addr()) {
				setBit(&b, i)
			}
		}
		cs.cidr[bpf.EniPolicyCidrKey{Prefixlen: uint32(32 + p.Bits()), Set: id, Ip: be32(p.Addr())}] = b
	}

	type protoBlock struct {
		proto uint8
		block portBlock
	}
	ruleBlocks := make([][]portBlock, len(rules))
	blocks := map[protoBlock]bool{}
	var anyBits bits
	var hasAny bool
	for i, r := range rules {
		if r.Allow {
			setBit(&cs.meta.Allow, i)
		}
		if r.Protocol == ProtoAll {
			setBit(&anyBits, i)
			hasAny = true
			continue
		}
		ruleBlocks[i] = rangeBlocks(r.PortLo, r.PortHi)
		for _, b := range ruleBlocks[i] {
			blocks[protoBlock{uint8(r.Protocol), b}] = true
		}
	}
	for pb := range blocks {
		var b bits
		for i, r := range rules {
			if r.Protocol != int(pb.proto) {
				continue
			}
			for _, rb := range ruleBlocks[i] {
				if rb.contains(pb.block) {
					setBit(&b, i)
					break
				}
			}
		}
		cs.port[bpf.EniPolicyPortKey{Prefixlen: uint32(48 + pb.block.Len), Set: id, Proto: pb.proto, Port: be16(pb.block.Base)}] = b
	}
	if hasAny {
		cs.port[bpf.EniPolicyPortKey{Prefixlen: 48, Set: id, Any: 1}] = anyBits
	}
	return cs, nil
}

// Policy set ids of an ENI: four per counter index.
func sgInSet(id uint32) uint32  { return 4*id + 1 }
func sgOutSet(id uint32) uint32 { return 4*id + 2 }
func naclInSet(id uint32) uint32 {
	return 4*id + 3
}
func naclOutSet(id uint32) uint32 { return 4*id + 4 }

// policyEntries compiles every local ENI's sets.
func policyEntries(enis []ENI, ids map[string]uint32) (map[bpf.EniPolicyCidrKey]bits, map[bpf.EniPolicyPortKey]bits, map[uint32]bpf.EniPolicySet, []error) {
	cidr := map[bpf.EniPolicyCidrKey]bits{}
	port := map[bpf.EniPolicyPortKey]bits{}
	sets := map[uint32]bpf.EniPolicySet{}
	var errs []error
	add := func(eni string, set uint32, rules []Rule) {
		cs, err := compileSet(set, rules)
		if err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: %w", eni, err))
			return
		}
		for k, v := range cs.cidr {
			cidr[k] = v
		}
		for k, v := range cs.port {
			port[k] = v
		}
		sets[set] = cs.meta
	}
	sorted := append([]ENI(nil), enis...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, e := range sorted {
		id := ids[e.Name]
		add(e.Name, sgInSet(id), e.SGIngress)
		add(e.Name, sgOutSet(id), e.SGEgress)
		if e.HasNACL {
			add(e.Name, naclInSet(id), e.NACLIngress)
			add(e.Name, naclOutSet(id), e.NACLEgress)
		}
	}
	return cidr, port, sets, errs
}
