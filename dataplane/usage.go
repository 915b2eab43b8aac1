package dataplane

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/bpf/limits"
)

// Fair share of the host-wide tables (SPEC §10): each ENI may hold at most
// its max_connections tracked connections, and its share of the flow table.
//
// The datapath counts, per ENI, the entries it adds (eni_usage's MADE
// slots, atomic adds) and the daemon writes how many of them are gone (the
// GONE slots): an ENI holds MADE - GONE entries, and a new connection over
// its limit is dropped as conntrack_allowance. Every slot has one writer, so
// neither side ever loses the other's update. The daemon recomputes GONE
// from a recount rather than adding to it (GONE = MADE as read before the
// pass - entries left after it), which makes the count heal by itself after
// anything it did not see: LRU evictions, entries another part of the
// daemon flushed, a crash between a delete and a write.
//
// A recount runs while the datapath adds entries, so it must not count
// an entry whose add is not in the MADE it read: every entry carries its
// ENI's MADE count with it (seq, low 32 bits), numbered before the entry
// goes in and counted in MADE after, and the recount leaves out the entries
// numbered above the MADE it read (those made during its pass). Without
// that, a pass over a table that gains thousands of entries while it reads
// (a flood on a loaded host) charged the ENI for every one of them it met
// (GONE went below MADE-as-read by as many): the ENI was refused new
// connections far below its limit, then, once a later pass recounted, let
// in more than its share.
//
// Races left, all on the safe side or bounded:
//   - CPUs numbering entries at the same instant may give two entries one
//     number, and a number may reach MADE only after the pass read it: such
//     an entry is counted one pass early (charged, never free).
//   - An entry counted in MADE but not yet in the table when the pass
//     reads its bucket (a CPU between its add and its insert, at most one
//     per CPU) is charged as gone until the next pass.
//   - The limit check and the add are two steps: CPUs creating at the same
//     instant can take an ENI at most one entry per CPU over its limit.
//   - The sweep deletes an expired connection that a packet renews in the
//     microseconds between the sweep's read and its delete: that packet's
//     connection is forgotten and its next packet needs the rules again.
//
// With the limits of a host's ENIs summing to at most the conntrack table's
// size (the default), the per-ENI limits are what stop an ENI, not the
// table's LRU: the LRU evicts only when limits are set above that sum.

// Slots of eni_usage per ENI (enum usage_slot in bpf/lib/maps.h).
const (
	usageSlots     = limits.UsageSlots
	usageCTMade    = uint32(bpf.EniUsageSlotUSAGE_CT_MADE)
	usageCTGone    = uint32(bpf.EniUsageSlotUSAGE_CT_GONE)
	usageCTRefused = uint32(bpf.EniUsageSlotUSAGE_CT_REFUSED)
	usageFlowMade  = uint32(bpf.EniUsageSlotUSAGE_FLOW_MADE)
	usageFlowGone  = uint32(bpf.EniUsageSlotUSAGE_FLOW_GONE)
	usageFlowShare = uint32(bpf.EniUsageSlotUSAGE_FLOW_SHARE)
)

// MinDefaultConnections is the least max_connections an ENI gets by
// default, however many ENIs share the host.
const MinDefaultConnections = limits.MinDefaultConnections

// minFlowShare is the least share of the flow table an ENI gets.
const minFlowShare = 256

// DefaultMaxConnections is the max_connections of an ENI that sets none
// on a host with enis ENIs sharing a conntrack table of tableSize entries.
func DefaultMaxConnections(tableSize, enis int) uint32 {
	n := tableSize
	if enis > 1 {
		n = tableSize / enis
	}
	return uint32(max(n, MinDefaultConnections))
}

// setLimits gives an ENI (index id, one of enis on the host) its
// connection limit in info and its share of the flow table: the flow
// table's size in proportion to the ENI's share of the conntrack table.
func (d *Datapath) setLimits(id uint32, e ENI, enis int, info *bpf.EniEniInfo) error {
	ctSize := uint64(d.eni.Conntrack.MaxEntries())
	info.MaxConns = e.MaxConnections
	if info.MaxConns == 0 {
		info.MaxConns = DefaultMaxConnections(int(ctSize), enis)
	}
	if d.connLimits == nil {
		d.connLimits = map[uint32]uint32{}
	}
	d.connLimits[id] = info.MaxConns
	flows := uint64(d.eni.Flows.MaxEntries())
	share := min(max(uint64(info.MaxConns)*flows/ctSize, minFlowShare), flows)
	var have uint64
	key := id*usageSlots + usageFlowShare
	if err := d.eni.EniUsage.Lookup(key, &have); err == nil && have == share {
		return nil
	}
	if err := d.eni.EniUsage.Put(key, share); err != nil {
		return fmt.Errorf("ENI %s: flow share: %w", e.Name, err)
	}
	return nil
}

// ENIUsage is an ENI's use of the conntrack table.
type ENIUsage struct {
	Connections    uint64 // tracked now (expired ones until the next sweep)
	MaxConnections uint32
	Refused        uint64 // new connections dropped as conntrack_allowance
}

// ENIUsage returns a local ENI's connection count, limit and refusals.
func (d *Datapath) ENIUsage(name string) (ENIUsage, error) {
	id, ok := d.eniIDs[name]
	if !ok {
		return ENIUsage{}, fmt.Errorf("ENI %s is not on this host", name)
	}
	var made, gone, refused uint64
	for _, s := range []struct {
		slot uint32
		v    *uint64
	}{{usageCTMade, &made}, {usageCTGone, &gone}, {usageCTRefused, &refused}} {
		if err := d.eni.EniUsage.Lookup(id*usageSlots+s.slot, s.v); err != nil {
			return ENIUsage{}, fmt.Errorf("read ENI usage: %w", err)
		}
	}
	u := ENIUsage{MaxConnections: d.connLimits[id], Refused: refused}
	if n := int64(made - gone); n > 0 {
		u.Connections = uint64(n)
	}
	return u, nil
}

// readUsage reads one slot of every ENI index this daemon has given, in
// one batch per 4,096 slots. The indexes above were never given here, or
// are zeroed before they are (flushENIIndex): reading the whole table
// (32,768 slots, several times a second) was most of an idle daemon's CPU.
func (d *Datapath) readUsage(slot uint32) ([]uint64, error) {
	out := make([]uint64, d.usageTop)
	want := int(d.usageTop) * usageSlots
	if want == 0 {
		return out, nil
	}
	keys := make([]uint32, min(want, 4096))
	vals := make([]uint64, len(keys))
	var cursor ebpf.MapBatchCursor
	for read := 0; read < want; {
		k := min(len(keys), want-read)
		n, err := d.eni.EniUsage.BatchLookup(&cursor, keys[:k], vals[:k], nil)
		for i := 0; i < n; i++ {
			if keys[i]%usageSlots == slot && int(keys[i]/usageSlots) < len(out) {
				out[keys[i]/usageSlots] = vals[i]
			}
		}
		read += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read ENI usage: %w", err)
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

// settleUsage writes an ENI's GONE slot so that MADE - GONE is the count
// of entries left: made is MADE read before the pass that counted left.
func (d *Datapath) settleUsage(goneSlot uint32, made []uint64, left map[uint32]uint64) error {
	gone, err := d.readUsage(goneSlot)
	if err != nil {
		return err
	}
	var errs []error
	for id := range made {
		// Modulo 2^64: with entries the datapath did not count (made
		// before it counted, e.g. by an older version), GONE passes
		// MADE and MADE - GONE, read as signed, is still what is left.
		want := made[id] - left[uint32(id)]
		if gone[id] == want {
			continue
		}
		if err := d.eni.EniUsage.Put(uint32(id)*usageSlots+goneSlot, want); err != nil {
			errs = append(errs, fmt.Errorf("write ENI usage: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Conntrack states (enum ct_state) and idle timeouts (ct_timeout), as in
// bpf/lib/conntrack.h.
// Connection states and idle timeouts, as the datapath has them
// (enum ct_state; bpf/lib/limits.h).
const (
	ctEstablished = uint8(bpf.EniCtStateCT_ESTABLISHED)
	ctClosing     = uint8(bpf.EniCtStateCT_CLOSING)
	ctClosed      = uint8(bpf.EniCtStateCT_CLOSED)
	nsec          = uint64(1e9)
)

// ctTimeout is lib/conntrack.h's ct_timeout, in nanoseconds.
func ctTimeout(proto, state uint8) uint64 {
	switch proto {
	case 6:
		switch state {
		case ctEstablished:
			return limits.CtTcpEstablishedS * nsec
		case ctClosing:
			return limits.CtTcpClosingS * nsec
		}
		return limits.CtTcpSynS * nsec
	case 17:
		if state == ctEstablished {
			return limits.CtUdpStreamS * nsec
		}
		return limits.CtUdpS * nsec
	case 1:
		return limits.CtIcmpS * nsec
	}
	return limits.CtOtherS * nsec
}

// ConntrackSweep is what one sweep of the conntrack table did.
type ConntrackSweep struct {
	Entries int    // connections left in the table
	Inserts uint64 // new keys the datapath has added since the table was made
	Deleted int    // closed or expired connections the sweep deleted
	// Evicted is how many connections left the table since the first
	// sweep of this Datapath other than through the sweeps and the
	// daemon's flushes: what the LRU evicted. Exact when no connection is
	// made during a pass, never more than the truth when some are.
	Evicted uint64
}

// ctTally is what the sweeps carry from one to the next to work out the
// LRU's evictions: inserts - connections left - connections deleted, which
// only evictions make grow, as it stood at the first sweep (base) and at
// its highest (the evictions reported).
type ctTally struct {
	sampled bool
	base    int64
	evicted uint64
	deleted uint64        // by the sweeps
	flushed atomic.Uint64 // by FlushConntrack and index flushes
}

// madeSlack bounds how far above the MADE read after a pass a number found
// in that pass can be: one entry in flight per CPU.
const madeSlack = 1024

// SweepConntrack deletes the closed and idle-expired connections (the
// datapath no longer honours them, but they hold their ENI's share and a
// slot of the table) and recounts each ENI's connections. The daemon runs
// it every two seconds; it reads the table in batches.
func (d *Datapath) SweepConntrack() (ConntrackSweep, error) {
	var out ConntrackSweep
	// The inserts first, then MADE: the datapath counts in the other
	// order, so every insert read here is in MADE and its entry counted.
	var perCPU []uint64
	if err := d.eni.CtInserts.Lookup(uint32(0), &perCPU); err != nil {
		return out, fmt.Errorf("read conntrack inserts: %w", err)
	}
	for _, n := range perCPU {
		out.Inserts += n
	}
	made, err := d.readUsage(usageCTMade)
	if err != nil {
		return out, err
	}
	now := monotonicNow()
	left := map[uint32]uint64{}
	// later holds, per ENI, how far above the MADE read the number of
	// each entry is that may have been made during the pass.
	later := map[uint32][]uint32{}
	var expired []bpf.EniCtKey
	const chunk = 4096
	keys := make([]bpf.EniCtKey, chunk)
	vals := make([]bpf.EniCtEntry, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.eni.Conntrack.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			k, v := keys[i], vals[i]
			if v.State == ctClosed || now > v.LastSeen && now-v.LastSeen > ctTimeout(k.Proto, v.State) {
				expired = append(expired, k)
				continue
			}
			out.Entries++
			var m uint64
			if int(k.EniId) < len(made) {
				m = made[k.EniId]
			}
			if above := v.Seq - uint32(m); above != 0 && above < 1<<31 {
				later[k.EniId] = append(later[k.EniId], above)
				continue
			}
			left[k.EniId]++
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("sweep conntrack: %w", err)
		}
	}
	// Numbers above MADE as read: made during the pass (up to MADE as it
	// is now, and a few in flight), so not charged; any other (numbered
	// 2^32 adds ago, or by hand) is an entry like the rest.
	if len(later) > 0 {
		after, err := d.readUsage(usageCTMade)
		if err != nil {
			return out, err
		}
		for id, aboves := range later {
			var during uint64
			if int(id) < len(made) && int(id) < len(after) {
				during = after[id] - made[id]
			}
			for _, above := range aboves {
				if uint64(above) > during+madeSlack {
					left[id]++
				}
			}
		}
	}
	for len(expired) > 0 {
		n, err := d.eni.Conntrack.BatchDelete(expired, nil)
		out.Deleted += n
		if err == nil {
			break
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, fmt.Errorf("sweep conntrack: %w", err)
		}
		expired = expired[n+1:] // gone meanwhile (LRU): the rest still go
	}
	if err := d.settleUsage(usageCTGone, made, left); err != nil {
		return out, err
	}
	var counted uint64
	for _, n := range left {
		counted += n
	}
	out.Evicted = d.ctTally.add(out.Inserts, counted, uint64(out.Deleted))
	return out, nil
}

// add takes one sweep's inserts (read before its pass), the connections
// it counted (made before it read MADE) and those it deleted, and returns
// the evictions so far. Every insert read is counted, deleted, flushed or
// evicted; a connection counted but inserted after the read only lowers
// the tally: the result never overstates.
func (t *ctTally) add(inserts, counted, deleted uint64) uint64 {
	t.deleted += deleted
	tally := int64(inserts - counted - t.deleted - t.flushed.Load())
	if !t.sampled {
		t.base, t.sampled = tally, true
	}
	if n := tally - t.base; n > 0 && uint64(n) > t.evicted {
		t.evicted = uint64(n)
	}
	return t.evicted
}
