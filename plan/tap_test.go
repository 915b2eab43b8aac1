package plan

import (
	"testing"

	"github.com/vpcd/vpcd/topology"
)

// TestTapENI: a tap ENI's type and owner reach the datapath (which creates
// and delivers to the tap) and the status list; a veth stays a veth.
func TestTapENI(t *testing.T) {
	top := load(t)
	local := top.ENIsOnHost("h1")
	if len(local) < 2 {
		t.Fatalf("testdata: h1 has %d ENIs, want 2 or more", len(local))
	}
	tap, veth := local[0], local[1]
	tap.InterfaceType, tap.TapOwner = topology.InterfaceTap, 1000
	p, err := ForHost(top, "h1")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Datapath.ENIs {
		switch e.Name {
		case tap.Name:
			if !e.Tap || e.TapOwner != 1000 {
				t.Errorf("datapath ENI %s: Tap %v TapOwner %d, want true 1000", e.Name, e.Tap, e.TapOwner)
			}
		case veth.Name:
			if e.Tap {
				t.Errorf("datapath ENI %s is a tap", e.Name)
			}
		}
	}
	for _, e := range p.ENIs {
		want := topology.InterfaceVeth
		if e.Name == tap.Name {
			want = topology.InterfaceTap
		}
		if e.InterfaceType != want {
			t.Errorf("status ENI %s: interface type %q, want %q", e.Name, e.InterfaceType, want)
		}
	}
}
