package dataplane

import (
	"testing"

	"github.com/vpcd/vpcd/bpf"
)

// TestFastPathFlowCounts checks that flows the fast path forwards are
// counted exactly: its entries' counters reach the drain as growth since
// the last one, both for the source (egress) and the local target
// (ingress), and a closed entry's last packets are not lost when the
// drain retires it.
func TestFastPathFlowCounts(t *testing.T) {
	d := testDatapath(t)
	st := testState()
	for i := range st.ENIs {
		st.ENIs[i].FlowLog = true
	}
	if err := d.Reconcile(st, testIfindex); err != nil {
		t.Fatal(err)
	}
	prog, _, _ := d.Programs()
	send := func(flags uint8, n int) {
		for i := 0; i < n; i++ {
			if ret, _ := runTC(t, prog, testENIIfindex, tcpSegment(ipA, ipB, 40000, 443, flags)); ret != tcActRedirect {
				t.Fatalf("packet with flags %#x: verdict %d", flags, ret)
			}
		}
	}
	count := func() (egress, ingress uint64) {
		dr, err := d.DrainFlows()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range dr.Samples {
			if s.Src != ipA || s.Dst != ipB || s.DstPort != 443 {
				continue
			}
			switch {
			case s.ENI == "a" && s.Direction == Egress:
				egress += s.Packets
			case s.ENI == "b" && s.Direction == Ingress:
				ingress += s.Packets
			}
		}
		return
	}
	send(0x02, 1)  // SYN: the slow path, which makes the fast-path entry
	send(0x10, 50) // ACKs: the fast path
	var k bpf.EniFastKey
	var v bpf.EniFastEntry
	fast := uint64(0)
	for it := d.eni.Fastpath.Iterate(); it.Next(&k, &v); {
		fast += v.Packets
	}
	if fast != 50 {
		t.Fatalf("the fast path counted %d packets in its entries, want the 50 ACKs", fast)
	}
	if e, i := count(); e != 51 || i != 51 {
		t.Fatalf("first drain: %d egress, %d ingress packets; want 51 each", e, i)
	}
	send(0x10, 7)
	if e, i := count(); e != 7 || i != 7 {
		t.Fatalf("second drain: %d egress, %d ingress; want only the 7 new ones", e, i)
	}
	send(0x10, 3)
	send(0x11, 1) // FIN: the slow path closes the entry
	if e, i := count(); e != 4 || i != 4 {
		t.Fatalf("third drain: %d egress, %d ingress; want 4", e, i)
	}
	if e, i := count(); e != 0 || i != 0 {
		t.Fatalf("a drain after nothing was sent: %d egress, %d ingress", e, i)
	}
}
