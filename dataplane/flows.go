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
	lost, err := d.flowLost(byID)
	out.Lost = lost
	return out, err
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
