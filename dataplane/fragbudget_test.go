package dataplane

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf/limits"
)

// TestFragmentFloodSparesOthers: ENI b's first fragment is remembered;
// then ENI a sends more first fragments than the host-wide frags map
// holds, each a new datagram. a's flood is cut at its budget (counted as
// `fragment`), so b's entry survives and b's later fragment still follows
// its first.
func TestFragmentFloodSparesOthers(t *testing.T) {
	policyLab(t, func(d *Datapath, ifA, ifB uint32, apply func(ENI)) {
		apply(ENI{SGIngress: allowAll, SGEgress: allowAll})
		prog, _, _ := d.Programs()
		victim := udpDatagram(ipB2, ipA, 5001)
		vf := threeFragments(1)
		if got := verdict(t, d, prog, ifB, fragmentFrame(macB2, victim, vf[0])); got != "" {
			t.Fatalf("b's first fragment: %q", got)
		}
		before := dropCount(t, d, "fragment")
		flood := limits.MaxFrags + limits.FragBudget
		ctx := skbCtx(ifA)
		out := make([]byte, 2048)
		for i := 0; i < flood; i++ {
			f := RefFragment{ID: uint16(i), More: true, PayloadLen: 24}
			p := udpDatagram(ipA, remotes[0], uint16(10000+i%1000))
			if _, err := prog.Run(&ebpf.RunOptions{Data: fragmentFrame(macA, p, f), DataOut: out, Context: ctx}); err != nil {
				t.Fatal(err)
			}
		}
		cut := dropCount(t, d, "fragment") - before
		if cut == 0 {
			t.Fatalf("a's %d first fragments all remembered: no budget", flood)
		}
		for _, f := range vf[1:] {
			if got := verdict(t, d, prog, ifB, fragmentFrame(macB2, victim, f)); got != "" {
				t.Errorf("b's later fragment %+v after a's flood: %q, want it to follow its first", f, got)
			}
		}
		t.Logf("a's flood of %d first fragments: %d cut at its budget", flood, cut)
	})
}
