package dataplane

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/bpf/limits"
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
const MaxRules = limits.PolicyRules

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

// Atomic rule-set changes (SPEC §10). The rule bits of a set are spread
// over three maps, so a set is never changed in place: a changed set is
// written whole under a new set id, then the ENI's entry switches to it in
// one write, then (once no program still runs with the old entry) the
// generation is bumped, which retires the fast-path decisions of the old
// rules, and the old set is deleted. A rule set that does not fit the
// tables is refused whole before anything of it is written (and what a
// failed write left is removed): the ENI keeps its previous sets.

// eniSets are an ENI's rule sets: security groups in and out, network ACL
// in and out; 0 is none.
type eniSets [4]uint32

func setsOf(info *bpf.EniEniInfo) eniSets {
	return eniSets{info.SgIn, info.SgOut, info.NaclIn, info.NaclOut}
}

func (s eniSets) apply(info *bpf.EniEniInfo) {
	info.SgIn, info.SgOut, info.NaclIn, info.NaclOut = s[0], s[1], s[2], s[3]
}

// livePolicy is what the policy maps hold, by set.
type livePolicy struct {
	cidr map[uint32]map[bpf.EniPolicyCidrKey]bits
	port map[uint32]map[bpf.EniPolicyPortKey]bits
	sets map[uint32]bpf.EniPolicySet
	// entries in each map
	nCidr, nPort int
}

func (d *Datapath) readPolicy() (*livePolicy, error) {
	lp := &livePolicy{cidr: map[uint32]map[bpf.EniPolicyCidrKey]bits{}, port: map[uint32]map[bpf.EniPolicyPortKey]bits{}}
	cidr, err := readMap[bpf.EniPolicyCidrKey, bits](d.eni.PolicyCidr)
	if err != nil {
		return nil, err
	}
	port, err := readMap[bpf.EniPolicyPortKey, bits](d.eni.PolicyPort)
	if err != nil {
		return nil, err
	}
	if lp.sets, err = readMap[uint32, bpf.EniPolicySet](d.eni.PolicySets); err != nil {
		return nil, err
	}
	for k, v := range cidr {
		if lp.cidr[k.Set] == nil {
			lp.cidr[k.Set] = map[bpf.EniPolicyCidrKey]bits{}
		}
		lp.cidr[k.Set][k] = v
	}
	for k, v := range port {
		if lp.port[k.Set] == nil {
			lp.port[k.Set] = map[bpf.EniPolicyPortKey]bits{}
		}
		lp.port[k.Set][k] = v
	}
	lp.nCidr, lp.nPort = len(cidr), len(port)
	return lp, nil
}

// holds reports whether set id holds exactly cs (compiled for id).
func (lp *livePolicy) holds(id uint32, cs *compiledSet) bool {
	meta, ok := lp.sets[id]
	return ok && meta == cs.meta && maps.Equal(lp.cidr[id], cs.cidr) && maps.Equal(lp.port[id], cs.port)
}

// inUse lists every set id the maps hold.
func (lp *livePolicy) inUse() map[uint32]bool {
	out := map[uint32]bool{}
	for id := range lp.sets {
		out[id] = true
	}
	for id := range lp.cidr {
		out[id] = true
	}
	for id := range lp.port {
		out[id] = true
	}
	return out
}

// writeSet writes a compiled set (under an id nothing references yet). On
// error it removes what it wrote.
func (d *Datapath) writeSet(lp *livePolicy, id uint32, cs *compiledSet) error {
	var err error
	for k, v := range cs.cidr {
		if err = d.eni.PolicyCidr.Put(k, v); err != nil {
			err = fmt.Errorf("update map %s: %w", d.eni.PolicyCidr, err)
			break
		}
		if lp.cidr[id] == nil {
			lp.cidr[id] = map[bpf.EniPolicyCidrKey]bits{}
		}
		lp.cidr[id][k] = v
		lp.nCidr++
		d.stepped()
	}
	if err == nil {
		for k, v := range cs.port {
			if err = d.eni.PolicyPort.Put(k, v); err != nil {
				err = fmt.Errorf("update map %s: %w", d.eni.PolicyPort, err)
				break
			}
			if lp.port[id] == nil {
				lp.port[id] = map[bpf.EniPolicyPortKey]bits{}
			}
			lp.port[id][k] = v
			lp.nPort++
			d.stepped()
		}
	}
	if err == nil {
		if err = d.eni.PolicySets.Put(id, cs.meta); err != nil {
			err = fmt.Errorf("update map %s: %w", d.eni.PolicySets, err)
		} else {
			lp.sets[id] = cs.meta
			d.stepped()
		}
	}
	if err != nil {
		return errors.Join(err, d.deleteSet(lp, id))
	}
	return nil
}

// deleteSet deletes every entry of set id.
func (d *Datapath) deleteSet(lp *livePolicy, id uint32) error {
	var errs []error
	gone := func(err error) bool { return err == nil || errors.Is(err, ebpf.ErrKeyNotExist) }
	if _, ok := lp.sets[id]; ok {
		if err := d.eni.PolicySets.Delete(id); !gone(err) {
			errs = append(errs, fmt.Errorf("delete from map %s: %w", d.eni.PolicySets, err))
		} else {
			delete(lp.sets, id)
			d.stepped()
		}
	}
	for k := range lp.cidr[id] {
		if err := d.eni.PolicyCidr.Delete(k); !gone(err) {
			errs = append(errs, fmt.Errorf("delete from map %s: %w", d.eni.PolicyCidr, err))
			continue
		}
		delete(lp.cidr[id], k)
		lp.nCidr--
		d.stepped()
	}
	if len(lp.cidr[id]) == 0 {
		delete(lp.cidr, id)
	}
	for k := range lp.port[id] {
		if err := d.eni.PolicyPort.Delete(k); !gone(err) {
			errs = append(errs, fmt.Errorf("delete from map %s: %w", d.eni.PolicyPort, err))
			continue
		}
		delete(lp.port[id], k)
		lp.nPort--
		d.stepped()
	}
	if len(lp.port[id]) == 0 {
		delete(lp.port, id)
	}
	return errors.Join(errs...)
}

// stepped runs the test hook after a map write.
func (d *Datapath) stepped() {
	if d.afterWrite != nil {
		d.afterWrite()
	}
}

// policyChange is one ENI whose rule sets change.
type policyChange struct {
	name    string
	ifindex uint32
	live    bool    // its entry is in the enis map: the switch rewrites it
	cur     eniSets // in force now
	next    eniSets // after the change
	fresh   map[uint32]*compiledSet
}

// syncPolicy brings every ENI's rule sets to the desired rules, atomically
// per ENI, and sets the sets in the desired entries of enis (by ifindex).
// An ENI whose rule set is refused keeps its previous sets; a new ENI
// whose rule set is refused is left out of enis (its traffic is dropped as
// unknown_eni). It returns the policy maps' content.
func (d *Datapath) syncPolicy(desired []ENI, ids map[string]uint32, ifindexes map[string]int,
	enis map[uint32]bpf.EniEniInfo) (*livePolicy, []error) {
	lp, err := d.readPolicy()
	if err != nil {
		return nil, []error{err}
	}
	live, err := readMap[uint32, bpf.EniEniInfo](d.eni.Enis)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	used := lp.inUse()
	for _, info := range live {
		for _, s := range setsOf(&info) {
			used[s] = true
		}
	}
	var nextID uint32 = 1
	alloc := func() uint32 {
		for used[nextID] || nextID == 0 {
			nextID++
		}
		used[nextID] = true
		return nextID
	}
	refuse := func(c *policyChange, err error) {
		err = fmt.Errorf("ENI %s: rule set refused, the ENI keeps its previous rules: %w", c.name, err)
		d.log.Error("rule set refused; the ENI keeps its previous rules", "eni", c.name, "err", err)
		errs = append(errs, err)
		if !c.live {
			delete(enis, c.ifindex)
			return
		}
		info := enis[c.ifindex]
		c.cur.apply(&info)
		enis[c.ifindex] = info
	}

	sorted := slices.Clone(desired)
	slices.SortFunc(sorted, func(a, b ENI) int { return strings.Compare(a.Name, b.Name) })
	var pending []*policyChange
	for _, e := range sorted {
		idx, ok := ifindexes[e.Name]
		if !ok {
			continue
		}
		info, ok := enis[uint32(idx)]
		if !ok {
			continue
		}
		c := &policyChange{name: e.Name, ifindex: uint32(idx), fresh: map[uint32]*compiledSet{}}
		if li, ok := live[uint32(idx)]; ok && li.EniId == ids[e.Name] {
			c.live, c.cur = true, setsOf(&li)
		}
		rules := [4][]Rule{e.SGIngress, e.SGEgress, e.NACLIngress, e.NACLEgress}
		var cerr error
		for i := range rules {
			if i >= 2 && !e.HasNACL {
				continue // the default network ACL: no set
			}
			if c.cur[i] != 0 {
				cs, err := compileSet(c.cur[i], rules[i])
				if err != nil {
					cerr = err
					break
				}
				if lp.holds(c.cur[i], cs) {
					c.next[i] = c.cur[i]
					continue
				}
			}
			id := alloc()
			cs, err := compileSet(id, rules[i])
			if err != nil {
				cerr = err
				break
			}
			c.next[i], c.fresh[id] = id, cs
		}
		switch {
		case cerr != nil:
			refuse(c, cerr)
		case c.next == c.cur:
			c.next.apply(&info)
			enis[c.ifindex] = info
		default:
			pending = append(pending, c)
		}
	}

	capCidr, capPort, capSets := int(d.eni.PolicyCidr.MaxEntries()), int(d.eni.PolicyPort.MaxEntries()), int(d.eni.PolicySets.MaxEntries())
	for len(pending) > 0 {
		// Write the new sets of as many ENIs as the tables have room for
		// beside the sets in force; the others wait until this batch's
		// old sets are gone.
		var batch, rest []*policyChange
		for _, c := range pending {
			var nc, np int
			for _, cs := range c.fresh {
				nc += len(cs.cidr)
				np += len(cs.port)
			}
			if lp.nCidr+nc > capCidr || lp.nPort+np > capPort || len(lp.sets)+len(c.fresh) > capSets {
				rest = append(rest, c)
				continue
			}
			var werr error
			var written []uint32
			for id, cs := range c.fresh {
				if werr = d.writeSet(lp, id, cs); werr != nil {
					break
				}
				written = append(written, id)
			}
			if werr != nil {
				for _, id := range written {
					werr = errors.Join(werr, d.deleteSet(lp, id))
				}
				refuse(c, werr)
				continue
			}
			batch = append(batch, c)
		}
		if len(batch) == 0 {
			for _, c := range rest {
				var nc, np int
				for _, cs := range c.fresh {
					nc += len(cs.cidr)
					np += len(cs.port)
				}
				refuse(c, fmt.Errorf("%d CIDR and %d port entries do not fit the policy tables (%d and %d of %d used)",
					nc, np, lp.nCidr, lp.nPort, capCidr))
			}
			break
		}
		// The switch: one write of each live ENI's entry.
		var switched []*policyChange
		for _, c := range batch {
			info := enis[c.ifindex]
			c.next.apply(&info)
			enis[c.ifindex] = info
			if !c.live {
				continue // the ENI's entry is written with its sets below
			}
			li := live[c.ifindex]
			c.next.apply(&li)
			// An update of the (preallocated) hash map hands the
			// replaced element to the next update on this CPU: wait
			// until no program still reads the previous switch's old
			// element before this switch may reuse it.
			if len(switched) > 0 {
				if err := waitPrograms(); err != nil {
					errs = append(errs, err)
				}
			}
			if err := d.eni.Enis.Put(c.ifindex, li); err != nil {
				for id := range c.fresh {
					err = errors.Join(err, d.deleteSet(lp, id))
				}
				refuse(c, fmt.Errorf("update map %s: %w", d.eni.Enis, err))
				continue
			}
			d.stepped()
			switched = append(switched, c)
		}
		if len(switched) > 0 {
			// No program runs with an old entry any more; the fast
			// path forgets the old rules' decisions; the old sets go.
			if err := d.retire(); err != nil {
				errs = append(errs, err)
			}
			for _, c := range switched {
				for i, id := range c.cur {
					if id != 0 && id != c.next[i] {
						if err := d.deleteSet(lp, id); err != nil {
							errs = append(errs, err)
						}
					}
				}
			}
		}
		pending = rest
	}
	return lp, errs
}

// gcPolicy deletes every set no entry of the enis map names (sets of
// removed ENIs, and what a crashed daemon left). Call after retire.
func (d *Datapath) gcPolicy(lp *livePolicy) error {
	live, err := readMap[uint32, bpf.EniEniInfo](d.eni.Enis)
	if err != nil {
		return err
	}
	named := map[uint32]bool{}
	for _, info := range live {
		for _, s := range setsOf(&info) {
			named[s] = true
		}
	}
	var errs []error
	for id := range lp.inUse() {
		if !named[id] {
			errs = append(errs, d.deleteSet(lp, id))
		}
	}
	return errors.Join(errs...)
}
