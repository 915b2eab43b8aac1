package dataplane

import (
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf"
)

// probe is a packet from a or b and what the reference model says of it
// under the old and the new rules of a.
type probe struct {
	p        RefPacket
	fromB    bool
	old, new string
}

// refVerdict is the reference model's verdict for a packet from a (or b)
// with no connection tracked: a's egress and, for b, b's ingress (from b:
// b's egress, then a's ingress).
func refVerdict(a ENI, p RefPacket, fromB bool) string {
	refA := NewRefENI(a)
	refA.ENI.Subnet = subnetA
	refB := NewRefENI(ENI{Subnet: subnetB, SGIngress: allowAll, SGEgress: allowAll})
	if fromB {
		if v := refB.Check(p, Egress); v != "" {
			return v
		}
		return refA.Check(p, Ingress)
	}
	v := refA.Check(p, Egress)
	if v == "" && p.Dst == ipB2 {
		v = refB.Check(p, Ingress)
	}
	return v
}

func (pr probe) run(t testing.TB, d *Datapath, prog *ebpf.Program, ifA, ifB uint32) string {
	d.FlushConntrack()
	if pr.fromB {
		return verdict(t, d, prog, ifB, l4Packet(macB2, pr.p))
	}
	return verdict(t, d, prog, ifA, l4Packet(macA, pr.p))
}

// TestPolicyReloadAtomic changes ENI a's rules while packets run between
// every single map write of the reload (the afterWrite hook): each packet
// must get the verdict of the whole old rule set or of the whole new one,
// and once the reload is done, the new one (no fast-path decision of the
// old rules survives).
func TestPolicyReloadAtomic(t *testing.T) {
	reloadLab(t, func(d *Datapath, ifA, ifB uint32, reconcile func(ENI) error) {
		prog, _, _ := d.Programs()
		r := rand.New(rand.NewSource(11))
		// The mix of the new CIDR bitmaps with the old port bitmaps
		// denies what both rule sets allow.
		dst := netip.MustParseAddr("10.0.3.10")
		transitions := [][2]ENI{{
			{SGIngress: allowAll, SGEgress: []Rule{
				{Protocol: 17, PortLo: 53, PortHi: 53, CIDR: netip.MustParsePrefix("0.0.0.0/0"), Allow: true},
				{Protocol: 6, PortLo: 80, PortHi: 80, CIDR: netip.PrefixFrom(dst, 32), Allow: true}}},
			{SGIngress: allowAll, SGEgress: []Rule{
				{Protocol: 6, PortLo: 80, PortHi: 80, CIDR: netip.PrefixFrom(dst, 32), Allow: true}}},
		}}
		randomENI := func() ENI {
			a := ENI{SGIngress: randomRules(r, 6, true), SGEgress: randomRules(r, 6, true)}
			if r.Intn(2) == 0 {
				a.HasNACL = true
				a.NACLIngress = randomRules(r, 5, false)
				a.NACLEgress = randomRules(r, 5, false)
			}
			return a
		}
		for range 30 {
			transitions = append(transitions, [2]ENI{randomENI(), randomENI()})
		}
		mixes := 0
		for n, tr := range transitions {
			old, next := tr[0], tr[1]
			if err := reconcile(old); err != nil {
				t.Fatalf("transition %d: reconcile: %v", n, err)
			}
			probes := []probe{{p: RefPacket{Proto: 6, Src: ipA, Dst: dst, SrcPort: 40000, DstPort: 80, TCPFlags: tcpSYN}}}
			for range 24 {
				var pr probe
				switch r.Intn(3) {
				case 0:
					pr.p = randomPacket(r, ipA, remotes[r.Intn(len(remotes))])
				case 1:
					pr.p = randomPacket(r, ipA, ipB2)
				default:
					pr.p, pr.fromB = randomPacket(r, ipB2, ipA), true
				}
				probes = append(probes, pr)
			}
			for i := range probes {
				probes[i].old = refVerdict(old, probes[i].p, probes[i].fromB)
				probes[i].new = refVerdict(next, probes[i].p, probes[i].fromB)
				// Twice: UDP and the like leave a fast-path entry.
				probes[i].run(t, d, prog, ifA, ifB)
				if got := probes[i].run(t, d, prog, ifA, ifB); got != probes[i].old {
					t.Fatalf("transition %d: before the reload %+v got %q, reference %q", n, probes[i].p, got, probes[i].old)
				}
			}
			step := 0
			d.afterWrite = func() {
				step++
				for _, pr := range probes {
					if got := pr.run(t, d, prog, ifA, ifB); got != pr.old && got != pr.new {
						mixes++
						if mixes <= 5 {
							t.Errorf("transition %d, after write %d of the reload: %+v got %q; old rules say %q, new ones %q",
								n, step, pr.p, got, pr.old, pr.new)
						}
					}
				}
			}
			err := reconcile(next)
			d.afterWrite = nil
			if err != nil {
				t.Fatalf("transition %d: reconcile: %v", n, err)
			}
			for _, pr := range probes {
				if got := pr.run(t, d, prog, ifA, ifB); got != pr.new {
					t.Errorf("transition %d: after the reload %+v got %q, new rules say %q", n, pr.p, got, pr.new)
				}
			}
		}
		if mixes > 0 {
			t.Fatalf("%d packets saw a mix of old and new rules", mixes)
		}
	})
}

// TestPolicyTableFullRefused fills the CIDR table of the policy maps to a
// few entries short of its size, then gives ENI a a rule set that needs
// more: the reload must fail naming the ENI, leave no entry of the new set
// behind, and keep a's old rules in force.
func TestPolicyTableFullRefused(t *testing.T) {
	reloadLab(t, func(d *Datapath, ifA, ifB uint32, reconcile func(ENI) error) {
		prog, _, _ := d.Programs()
		old := ENI{SGIngress: allowAll, SGEgress: []Rule{
			{Protocol: 6, PortLo: 80, PortHi: 80, CIDR: netip.MustParsePrefix("10.0.3.0/24"), Allow: true},
			{Protocol: 17, PortLo: 53, PortHi: 53, CIDR: netip.MustParsePrefix("10.0.4.0/30"), Allow: true}}}
		if err := reconcile(old); err != nil {
			t.Fatal(err)
		}
		// The new rules: 40 /32s, port 22 only.
		next := ENI{SGIngress: allowAll}
		for i := range 40 {
			next.SGEgress = append(next.SGEgress, Rule{Protocol: 6, PortLo: 22, PortHi: 22,
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 3, byte(i)}), 32), Allow: true})
		}
		var probes []probe
		for _, dst := range remotes {
			for _, p := range []RefPacket{
				{Proto: 6, Src: ipA, Dst: dst, SrcPort: 40000, DstPort: 80, TCPFlags: tcpSYN},
				{Proto: 6, Src: ipA, Dst: dst, SrcPort: 40000, DstPort: 22, TCPFlags: tcpSYN},
				{Proto: 17, Src: ipA, Dst: dst, SrcPort: 40000, DstPort: 53},
			} {
				probes = append(probes, probe{p: p, old: refVerdict(old, p, false), new: refVerdict(next, p, false)})
			}
		}
		changes := 0
		for _, pr := range probes {
			if pr.old != pr.new {
				changes++
			}
		}
		if changes == 0 {
			t.Fatal("the probes cannot tell the old rules from the new")
		}

		// Pre-fill: entries of a set no ENI uses, up to 10 short of full.
		size := int(d.eni.PolicyCidr.MaxEntries())
		have, err := countEntries[bpf.EniPolicyCidrKey, bpf.EniRuleBits](d.eni.PolicyCidr)
		if err != nil {
			t.Fatal(err)
		}
		var fill bits
		for i := 0; have+i < size-10; i++ {
			k := bpf.EniPolicyCidrKey{Prefixlen: 64, Set: 0x7fff0000 + uint32(i>>16), Ip: uint32(i)}
			if err := d.eni.PolicyCidr.Put(k, fill); err != nil {
				t.Fatalf("pre-fill entry %d of %d: %v", have+i, size, err)
			}
		}
		before, _ := countEntries[bpf.EniPolicyCidrKey, bpf.EniRuleBits](d.eni.PolicyCidr)

		err = reconcile(next)
		if err == nil || !strings.Contains(err.Error(), "ENI a") {
			t.Fatalf("a rule set that does not fit: reconcile returned %v, want an error naming ENI a", err)
		}
		t.Logf("refused: %v", err)
		for _, pr := range probes {
			if got := pr.run(t, d, prog, ifA, ifB); got != pr.old {
				t.Errorf("after the refused reload %+v got %q; the old rules say %q (new ones %q)", pr.p, got, pr.old, pr.new)
			}
		}
		// Nothing of the refused set is left: the table holds what it
		// held, less what the reload cleaned up (the pre-fill, which no
		// ENI uses).
		after, _ := countEntries[bpf.EniPolicyCidrKey, bpf.EniRuleBits](d.eni.PolicyCidr)
		if after > before {
			t.Errorf("the CIDR table grew from %d to %d entries with a refused rule set", before, after)
		}
		// With room again, the same rule set is accepted.
		if err := reconcile(next); err != nil {
			t.Fatalf("the same rule set once the table has room: %v", err)
		}
		for _, pr := range probes {
			if got := pr.run(t, d, prog, ifA, ifB); got != pr.new {
				t.Errorf("after the accepted reload %+v got %q; the new rules say %q", pr.p, got, pr.new)
			}
		}
	})
}
