package dataplane

import (
	"fmt"

	"github.com/vpcd/vpcd/bpf"
)

// Drops returns the number of dropped packets per reason label and
// direction, summed over CPUs.
func (d *Datapath) Drops() (map[string][2]uint64, error) {
	out := map[string][2]uint64{}
	var perCPU []uint64
	for r := 0; r < NumDropReasons; r++ {
		for dir := 0; dir < 2; dir++ {
			key := uint32(r*2 + dir)
			if err := d.eni.Drops.Lookup(key, &perCPU); err != nil {
				return nil, fmt.Errorf("read drops: %w", err)
			}
			var sum uint64
			for _, v := range perCPU {
				sum += v
			}
			c := out[DropReasonName(DropReason(r))]
			c[dir] += sum
			out[DropReasonName(DropReason(r))] = c
		}
	}
	return out, nil
}

// Counter is a packet and byte count.
type Counter struct {
	Packets, Bytes uint64
}

// ENICounters returns an ENI's counters by direction (Ingress, Egress).
func (d *Datapath) ENICounters(name string) ([2]Counter, error) {
	var out [2]Counter
	id, ok := d.eniIDs[name]
	if !ok {
		return out, fmt.Errorf("ENI %s is not on this host", name)
	}
	var perCPU []bpf.EniEniCounter
	for dir := 0; dir < 2; dir++ {
		if err := d.eni.EniStats.Lookup(id*2+uint32(dir), &perCPU); err != nil {
			return out, fmt.Errorf("read ENI counters: %w", err)
		}
		for _, c := range perCPU {
			out[dir].Packets += c.Packets
			out[dir].Bytes += c.Bytes
		}
	}
	return out, nil
}

// FlushConntrack forgets every tracked connection (tests, and an operator's
// last resort: established connections then need their rules again).
func (d *Datapath) FlushConntrack() error {
	var k bpf.EniCtKey
	var keys []bpf.EniCtKey
	var v bpf.EniCtEntry
	it := d.eni.Conntrack.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	for _, k := range keys {
		d.eni.Conntrack.Delete(k)
	}
	return it.Err()
}
