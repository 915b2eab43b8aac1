//go:build linux

package limits_test

import (
	"testing"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/bpf/limits"
)

// TestLimitsMatchObjects checks the generated constants against what
// bpf2go generated from the same sources: the maps' sizes in the
// collection specs and the array lengths of the generated structs. It
// fails when one was regenerated and the other not.
func TestLimitsMatchObjects(t *testing.T) {
	eni, err := bpf.LoadEni()
	if err != nil {
		t.Fatal(err)
	}
	const dirs = 2 // __DIR_MAX
	for name, want := range map[string]uint32{
		"enis":            limits.MaxENIs,
		"routes":          limits.MaxRoutes,
		"peers":           limits.MaxPeers,
		"substrate":       limits.MaxSubstrate,
		"underlay_allow":  limits.MaxUnderlayAllow,
		"drops":           limits.DropSlots,
		"eni_stats":       limits.MaxENIs * dirs,
		"policy_cidr":     limits.MaxPolicyCIDRs,
		"policy_port":     limits.MaxPolicyPorts,
		"policy_sets":     limits.MaxPolicySets,
		"conntrack":       limits.MaxConnections,
		"eni_usage":       limits.MaxENIs * limits.UsageSlots,
		"fastpath":        limits.MaxFastEntries,
		"frags":           limits.MaxFrags,
		"flows":           limits.MaxFlows,
		"flow_lost":       limits.MaxENIs,
		"events":          limits.EventsRingSize,
		"mirror_sets":     limits.MaxENIs * dirs,
		"mirror_sessions": limits.MaxMirrorSessions,
		"mirror_stats":    limits.MaxMirrorSessions,
		"mirror_ring":     limits.MirrorRingSize,
	} {
		m, ok := eni.Maps[name]
		if !ok {
			t.Errorf("map %s: not in the ENI collection", name)
			continue
		}
		if m.MaxEntries != want {
			t.Errorf("map %s: %d entries in the object, %d in package limits", name, m.MaxEntries, want)
		}
	}
	for _, c := range []struct {
		what      string
		got, want int
	}{
		{"mirror_set.rules", len(bpf.EniMirrorSet{}.Rules), limits.MirrorRules},
		{"rule_bits.w", len(bpf.EniRuleBits{}.W), limits.PolicyWords},
		{"rule_bits bits", len(bpf.EniRuleBits{}.W) * 64, limits.PolicyRules},
		{"drop_event.head", len(bpf.EniDropEvent{}.Head), limits.EventHead},
		{"usage slots", int(bpf.EniUsageSlotUSAGE_MAX), min(int(bpf.EniUsageSlotUSAGE_MAX), limits.UsageSlots)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, package limits says %d", c.what, c.got, c.want)
		}
	}
}
