package dataplane

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf"
)

// FlowSample is what the datapath counted for one flow at one ENI in one
// direction with one action since the last drain.
type FlowSample struct {
	ENI              string
	Direction        Direction
	Reject           bool
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // ICMP: DstPort = type << 8 | code
	Protocol         uint8
	Packets, Bytes   uint64
	First, Last      time.Time
	TCPFlags         uint8 // AWS tcp-flags
	Encrypted        bool  // crossed hosts inside the tunnel
}

// FlowDrain is one drain: the samples, and per ENI the packets whose flows
// found no room since the previous drain.
type FlowDrain struct {
	Samples []FlowSample
	Lost    map[string]uint64
}

// DrainFlows takes every flow counter out of the datapath. Each entry is
// read and deleted atomically, so packets counted meanwhile land either in
// this drain or in a new entry for the next: none is lost or counted twice.
func (d *Datapath) DrainFlows() (FlowDrain, error) {
	byID := d.eniNames()
	// Monotonic to wall clock: the datapath stamps with CLOCK_MONOTONIC.
	offset := time.Now().UnixNano() - int64(monotonicNow())
	wall := func(ns uint64) time.Time { return time.Unix(0, int64(ns)+offset) }

	var out FlowDrain
	// Every flow entry counted in made is taken by this drain: after it,
	// the ENIs hold none of them (usage.go).
	made, err := d.readUsage(usageFlowMade)
	if err != nil {
		return out, err
	}
	keys := make([]bpf.EniFlowKey, 1024)
	vals := make([]bpf.EniFlowVal, 1024)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.eni.Flows.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			k, v := keys[i], vals[i]
			name, ok := byID[k.EniId]
			if !ok {
				continue // an ENI removed since: its counters go with it
			}
			out.Samples = append(out.Samples, FlowSample{
				ENI: name, Direction: Direction(k.Dir), Reject: k.Action == 1,
				Src: addr4(k.Saddr), Dst: addr4(k.Daddr), SrcPort: k.Sport, DstPort: k.Dport,
				Protocol: k.Proto, Packets: v.Packets, Bytes: v.Bytes,
				First: wall(v.First), Last: wall(v.Last), TCPFlags: v.TcpFlags, Encrypted: v.Encrypted != 0,
			})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return out, err
		}
	}
	if err := d.settleUsage(usageFlowGone, made, nil); err != nil {
		return out, err
	}
	// Without a flow log no fast-path entry counts anything: do not read
	// the table (up to 262,144 entries) every second for nothing.
	if d.flowLogged || len(d.fastSeen) > 0 {
		if err := d.drainFastPath(byID, wall, time.Now(), &out); err != nil {
			return out, err
		}
	}
	lost, err := d.flowLost(byID)
	out.Lost = lost
	return out, err
}

// fastSeen is what a drain last read of a fast-path entry's counters.
type fastSeen struct {
	first          uint64 // the entry's creation stamp: a new entry has another
	packets, bytes uint64
	drained        time.Time
	idle           int // drains in a row that found no new packets
}

// fastIdleDrains is after how many drains without a packet an entry is
// deleted (read and deleted atomically, so nothing it counted is lost);
// its flow's next packet takes the slow path and makes a new one.
const fastIdleDrains = 5

// drainFastPath turns the growth of the fast-path entries' flow counters
// since the last drain into samples: the fast path counts the packets it
// forwards in its own entry instead of looking their flow up. Closed and
// idle entries are deleted with an atomic lookup-and-delete.
func (d *Datapath) drainFastPath(byID map[uint32]string, wall func(uint64) time.Time, now time.Time, out *FlowDrain) error {
	if d.fastSeen == nil {
		d.fastSeen = map[bpf.EniFastKey]fastSeen{}
	}
	emit := func(k bpf.EniFastKey, v *bpf.EniFastEntry, prev fastSeen) {
		dp, db := v.Packets-prev.packets, v.Bytes-prev.bytes
		if v.Packets < prev.packets || dp == 0 {
			return
		}
		first := wall(v.First)
		if prev.drained.After(first) {
			first = prev.drained
		}
		sport, dport := k.Sport, k.Dport
		if k.Proto == 1 { // ICMP: one flow per type and code, as the slow path counts
			sport, dport = 0, k.RulePort
		}
		sample := FlowSample{Src: addr4(k.Saddr), Dst: addr4(k.Daddr), SrcPort: sport, DstPort: dport,
			Protocol: k.Proto, Packets: dp, Bytes: db, First: first, Last: now}
		if name, ok := byID[v.SrcEniId]; ok && v.SrcFlowLog != 0 {
			s := sample
			s.ENI, s.Direction, s.Encrypted = name, Egress, v.OutIfindex == 0
			out.Samples = append(out.Samples, s)
		}
		if name, ok := byID[v.DstEniId]; ok && v.DstFlowLog != 0 && v.OutIfindex != 0 {
			s := sample
			s.ENI, s.Direction = name, Ingress
			out.Samples = append(out.Samples, s)
		}
	}

	keys := make([]bpf.EniFastKey, 1024)
	vals := make([]bpf.EniFastEntry, 1024)
	var cursor ebpf.MapBatchCursor
	present := make(map[bpf.EniFastKey]bool, len(d.fastSeen))
	var retire []bpf.EniFastKey
	for {
		n, err := d.eni.Fastpath.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			k, v := keys[i], &vals[i]
			counting := v.SrcFlowLog != 0 || v.DstFlowLog != 0 || v.Packets != 0
			if !counting {
				if v.Closed != 0 {
					retire = append(retire, k)
				}
				continue
			}
			present[k] = true
			prev, ok := d.fastSeen[k]
			if !ok || prev.first != v.First {
				prev = fastSeen{first: v.First}
			}
			emit(k, v, prev)
			next := fastSeen{first: v.First, packets: v.Packets, bytes: v.Bytes, drained: now, idle: prev.idle + 1}
			if v.Packets != prev.packets {
				next.idle = 0
			}
			d.fastSeen[k] = next
			if v.Closed != 0 || next.idle >= fastIdleDrains {
				retire = append(retire, k)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return err
		}
	}
	for _, k := range retire {
		var v bpf.EniFastEntry
		if err := d.eni.Fastpath.LookupAndDelete(&k, &v); err == nil {
			// What the fast path counted between the read above and now.
			if prev, ok := d.fastSeen[k]; ok && prev.first == v.First {
				emit(k, &v, prev)
			}
		}
		delete(d.fastSeen, k)
	}
	// Entries the LRU evicted: what they counted since the last drain is
	// gone with them, as the evictions metric of the table shows.
	for k := range d.fastSeen {
		if !present[k] {
			delete(d.fastSeen, k)
			d.fastEvicted++
		}
	}
	return nil
}

// flowLost returns each ENI's lost packets since the previous call (the
// per-CPU counters only grow; the datapath remembers what it reported).
func (d *Datapath) flowLost(byID map[uint32]string) (map[string]uint64, error) {
	out := map[string]uint64{}
	var perCPU []uint64
	for id, name := range byID {
		if err := d.eni.FlowLost.Lookup(id, &perCPU); err != nil {
			return out, err
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		if d.lostSeen == nil {
			d.lostSeen = map[uint32]uint64{}
		}
		if delta := sum - d.lostSeen[id]; sum >= d.lostSeen[id] && delta > 0 {
			out[name] = delta
		}
		d.lostSeen[id] = sum
	}
	return out, nil
}

func addr4(be uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], be)
	return netip.AddrFrom4(b)
}

// FastPathEvictions counts fast-path entries with flow counters that the
// LRU evicted between two drains: what they counted since the earlier one
// is not in any flow log.
func (d *Datapath) FastPathEvictions() uint64 { return d.fastEvicted }
