package dataplane

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/bpf/limits"
)

// Stable ENI identity (SPEC §10). An ENI's index keys its conntrack, flow,
// fast-path, counter and usage entries, so it must not move: the index
// given to an ENI name is recorded in a pinned map (eni_ids, beside the
// datapath's maps) before any entry carries it, and a daemon that starts
// adopts the record. Pins of a daemon that predates the record are
// adopted from the enis map (the index of the ENI's interface). An index
// is given to another ENI only once nothing uses it any more (no record,
// no entry in the enis map) and after every entry it keys was flushed.

// maxENIs bounds ENI indexes (MAX_ENIS, bpf/lib/limits.h).
const maxENIs = limits.MaxENIs

// eniIDNameLen is the size of an eni_ids key: the ENI's name, or for a
// longer name "sha256:" and its hash.
const eniIDNameLen = 128

type eniIDKey struct{ Name [eniIDNameLen]byte }

func eniIDKeyOf(name string) eniIDKey {
	var k eniIDKey
	if len(name) > eniIDNameLen {
		sum := sha256.Sum256([]byte(name))
		name = "sha256:" + hex.EncodeToString(sum[:])
	}
	copy(k.Name[:], name)
	return k
}

// eniIDMap opens (or creates) the pinned record of ENI indexes.
func (d *Datapath) eniIDMap() (*ebpf.Map, error) {
	if d.eniIDRecord != nil {
		return d.eniIDRecord, nil
	}
	dir := filepath.Join(d.dir, "maps")
	spec := &ebpf.MapSpec{Name: "eni_ids", Type: ebpf.Hash, KeySize: eniIDNameLen, ValueSize: 4,
		MaxEntries: maxENIs, Pinning: ebpf.PinByName}
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Not ours to read: start a record (the enis map still says
		// which index each live interface has).
		os.Remove(filepath.Join(dir, spec.Name))
		m, err = ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
	}
	if err != nil {
		return nil, fmt.Errorf("ENI index record: %w", err)
	}
	d.eniIDRecord = m
	return m, nil
}

// assignENIIDs gives each ENI its index: the recorded one, else (pins of
// an older daemon) the one its interface has in the enis map, else the
// lowest index nothing uses, flushed first. ifindexes holds the resolved
// interfaces. ENIs it could give no index to are missing from the result.
func (d *Datapath) assignENIIDs(enis []ENI, ifindexes map[string]int) (map[string]uint32, []error) {
	var errs []error
	rec, err := d.eniIDMap()
	if err != nil {
		errs = append(errs, err)
	}
	recorded := map[eniIDKey]uint32{}
	if rec != nil {
		if recorded, err = readMap[eniIDKey, uint32](rec); err != nil {
			errs = append(errs, err)
		}
	}
	live, err := readMap[uint32, bpf.EniEniInfo](d.eni.Enis)
	if err != nil {
		errs = append(errs, err)
	}
	// Indexes something may still use: recorded for a name (also one
	// removed in this reconcile, until its entries are gone) or in the
	// enis map.
	reserved := map[uint32]bool{}
	recordedIDs := map[uint32]bool{}
	for _, id := range recorded {
		reserved[id], recordedIDs[id] = true, true
	}
	for _, id := range d.eniIDs {
		reserved[id] = true
	}
	for _, info := range live {
		reserved[info.EniId] = true
	}

	names := make([]string, 0, len(enis))
	for _, e := range enis {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	ids := map[string]uint32{}
	taken := map[uint32]bool{}
	give := func(name string, id uint32) bool {
		if id >= maxENIs || taken[id] {
			return false
		}
		ids[name], taken[id] = id, true
		return true
	}
	for _, n := range names {
		if id, ok := recorded[eniIDKeyOf(n)]; ok && give(n, id) {
			continue
		}
		if id, ok := d.eniIDs[n]; ok { // given by this daemon, not recorded
			give(n, id)
		}
	}
	for _, n := range names {
		if _, ok := ids[n]; ok {
			continue
		}
		idx, ok := ifindexes[n]
		if !ok {
			continue
		}
		if info, ok := live[uint32(idx)]; ok && !recordedIDs[info.EniId] {
			give(n, info.EniId)
		}
	}
	var next uint32
	for _, n := range names {
		if _, ok := ids[n]; ok {
			continue
		}
		for next < maxENIs && (taken[next] || reserved[next]) {
			next++
		}
		if next >= maxENIs {
			errs = append(errs, fmt.Errorf("ENI %s: no free ENI index (at most %d ENIs per host)", n, maxENIs))
			continue
		}
		if err := d.flushENIIndex(next); err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: flush index %d before reuse: %w", n, next, err))
			reserved[next] = true // not clean: never given out so
			continue
		}
		give(n, next)
	}
	// Record before any entry carries the index.
	for n, id := range ids {
		k := eniIDKeyOf(n)
		if old, ok := recorded[k]; ok && old == id || rec == nil {
			continue
		}
		if err := rec.Put(k, id); err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: record index %d: %w", n, id, err))
		}
	}
	d.eniIDs = maps.Clone(ids)
	for _, id := range ids {
		d.usageTop = max(d.usageTop, id+1)
	}
	return ids, errs
}

// pruneENIIDs forgets the recorded indexes of ENIs that are gone, once
// the enis map no longer names them: their indexes are free for reuse
// (flushed then) from the next reconcile on.
func (d *Datapath) pruneENIIDs(ids map[string]uint32) error {
	rec, err := d.eniIDMap()
	if err != nil {
		return err
	}
	recorded, err := readMap[eniIDKey, uint32](rec)
	if err != nil {
		return err
	}
	want := map[eniIDKey]bool{}
	for n := range ids {
		want[eniIDKeyOf(n)] = true
	}
	var errs []error
	for k := range recorded {
		if !want[k] {
			if err := rec.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("ENI index record: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// flushENIIndex deletes every entry an ENI index keys: connections, flow
// counters, fast-path decisions made for or to it, and zeroes its packet,
// flow-loss and usage counters. It runs before the index is given to an
// ENI, when nothing uses it.
func (d *Datapath) flushENIIndex(id uint32) error {
	var errs []error
	errs = append(errs,
		deleteWhere(d.eni.Conntrack, func(k bpf.EniCtKey, _ bpf.EniCtEntry) bool {
			if k.EniId == id {
				d.ctTally.flushed.Add(1) // no eviction (usage.go)
				return true
			}
			return false
		}),
		deleteWhere(d.eni.Flows, func(k bpf.EniFlowKey, _ bpf.EniFlowVal) bool { return k.EniId == id }),
		deleteWhere(d.eni.Fastpath, func(k bpf.EniFastKey, v bpf.EniFastEntry) bool {
			if v.SrcEniId == id || v.DstEniId == id {
				delete(d.fastSeen, k)
				return true
			}
			return false
		}),
	)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for dir := uint32(0); dir < numDirs; dir++ {
		if err := d.eni.EniStats.Put(id*numDirs+dir, make([]bpf.EniEniCounter, ncpu)); err != nil {
			errs = append(errs, fmt.Errorf("zero ENI counters: %w", err))
		}
	}
	if err := d.eni.FlowLost.Put(id, make([]uint64, ncpu)); err != nil {
		errs = append(errs, fmt.Errorf("zero flow losses: %w", err))
	}
	delete(d.lostSeen, id)
	// Usage counts (usage.go); the flow share is the ENI's setting.
	for slot := uint32(0); slot < usageSlots; slot++ {
		if slot == usageFlowShare {
			continue
		}
		if err := d.eni.EniUsage.Put(id*usageSlots+slot, uint64(0)); err != nil {
			errs = append(errs, fmt.Errorf("zero ENI usage: %w", err))
		}
	}
	return errors.Join(errs...)
}

// deleteWhere deletes the entries of m that match.
func deleteWhere[K comparable, V any](m *ebpf.Map, match func(K, V) bool) error {
	var k K
	var v V
	var del []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if match(k, v) {
			del = append(del, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read map %s: %w", m.String(), err)
	}
	var errs []error
	for _, k := range del {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete from map %s: %w", m.String(), err))
		}
	}
	return errors.Join(errs...)
}
