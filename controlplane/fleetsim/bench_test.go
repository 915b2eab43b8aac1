package fleetsim

import (
	"testing"

	"github.com/vpcd/vpcd/plan"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// fleetTopology is the base topology of n hosts with every host's key.
func fleetTopology(b *testing.B, n int) *topology.Topology {
	b.Helper()
	t, err := (fleet{n, 2, 4}).topology(nil, false)
	if err != nil {
		b.Fatal(err)
	}
	for i := range t.Hosts {
		k, _ := tunnel.GeneratePrivateKey()
		t.Hosts[i].PublicKey = k.PublicKey().String()
	}
	return t
}

// One simulated host's planning of one state of a 1,000-host fleet.
func BenchmarkPlan1000(b *testing.B) {
	t := fleetTopology(b, 1000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p, err := plan.ForHost(t, hostName(i%1000))
		if err != nil {
			b.Fatal(err)
		}
		digestOf(p)
	}
}

// What controlplane's assembly spends validating a 1,000-host state: the
// file's validation of its Marshal.
func BenchmarkRevalidate1000(b *testing.B) {
	t := fleetTopology(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		data, err := topology.Marshal(t)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := topology.Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
