package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/bpf"
)

// Drops returns the number of dropped packets per reason label and
// direction, summed over CPUs.
func (d *Datapath) Drops() (map[string][2]uint64, error) {
	out := map[string][2]uint64{}
	var perCPU []uint64
	for r := 0; r < NumDropReasons; r++ {
		for dir := 0; dir < int(numDirs); dir++ {
			key := uint32(r)*numDirs + uint32(dir)
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
	for dir := 0; dir < int(numDirs); dir++ {
		if err := d.eni.EniStats.Lookup(id*numDirs+uint32(dir), &perCPU); err != nil {
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
		if d.eni.Conntrack.Delete(k) == nil {
			d.ctTally.flushed.Add(1) // no eviction (usage.go)
		}
	}
	return it.Err()
}

// Conn is one tracked connection of an ENI, as `vpcd status --conntrack`
// shows it.
type Conn struct {
	ENI        string     `json:"eni"`
	Protocol   uint8      `json:"protocol"`
	Remote     netip.Addr `json:"remote"`
	LocalPort  uint16     `json:"local_port"`
	RemotePort uint16     `json:"remote_port"`
	State      string     `json:"state"`
	Origin     string     `json:"origin"` // who opened it: egress = the ENI
	IdleSecs   float64    `json:"idle_seconds"`
}

// numDirs is __DIR_MAX: the per-direction slots of the drops and
// eni_stats maps (reason or ENI index * numDirs + direction).
const numDirs = uint32(bpf.EniDirectionDIR_MAX)

var ctStateNames = map[uint8]string{
	uint8(bpf.EniCtStateCT_NEW): "new", uint8(bpf.EniCtStateCT_SYN_SENT): "syn_sent",
	uint8(bpf.EniCtStateCT_ESTABLISHED): "established", uint8(bpf.EniCtStateCT_CLOSING): "closing",
	uint8(bpf.EniCtStateCT_CLOSED): "closed",
}

// Conntrack lists the tracked connections of this host's ENIs.
func (d *Datapath) Conntrack() ([]Conn, error) {
	byID := d.eniNames()
	now := monotonicNow()
	var k bpf.EniCtKey
	var v bpf.EniCtEntry
	var out []Conn
	it := d.eni.Conntrack.Iterate()
	for it.Next(&k, &v) {
		name, ok := byID[k.EniId]
		if !ok {
			continue
		}
		var ip [4]byte
		binary.NativeEndian.PutUint32(ip[:], k.RemoteIp)
		c := Conn{ENI: name, Protocol: k.Proto, Remote: netip.AddrFrom4(ip), LocalPort: k.LocalPort,
			RemotePort: k.RemotePort, Origin: Direction(v.Origin).String(), State: "unknown"}
		if k.Proto == 1 { // the key's query kind and direction: not a port
			c.RemotePort = 0
		}
		if n, ok := ctStateNames[v.State]; ok {
			c.State = n
		}
		if now > v.LastSeen {
			c.IdleSecs = float64(now-v.LastSeen) / 1e9
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ENI != out[j].ENI {
			return out[i].ENI < out[j].ENI
		}
		return out[i].Remote.Less(out[j].Remote) || out[i].Remote == out[j].Remote && out[i].LocalPort < out[j].LocalPort
	})
	return out, it.Err()
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds, the clock of
// bpf_ktime_get_coarse_ns.
func monotonicNow() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e9 + uint64(ts.Nsec)
}

// ConntrackUsage returns how many connections the table holds now and how
// many it has gained since it was created (the datapath counts each new
// key). With no deletions but the LRU's, the gains not reflected in the
// size were evictions.
func (d *Datapath) ConntrackUsage() (entries int, inserts uint64, err error) {
	if entries, err = countEntries[bpf.EniCtKey, bpf.EniCtEntry](d.eni.Conntrack); err != nil {
		return 0, 0, err
	}
	var perCPU []uint64
	if err := d.eni.CtInserts.Lookup(uint32(0), &perCPU); err != nil {
		return entries, 0, err
	}
	for _, n := range perCPU {
		inserts += n
	}
	return entries, inserts, nil
}

// countEntries counts a hash map's entries a few thousand per system call
// (batch lookups): with 100,000 connections, one call per entry would cost
// the daemon a tenth of a core at every sample.
func countEntries[K, V any](m *ebpf.Map) (int, error) {
	const chunk = 4096
	keys := make([]K, chunk)
	vals := make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("count %s: %w", m.String(), err)
		}
	}
}
