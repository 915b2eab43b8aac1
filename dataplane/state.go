package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/encap"
)

// GatewayMAC is the fixed MAC of the VPC router that answers every ARP of a
// workload: encap.GatewayMAC, given to the datapath in its configuration.
var GatewayMAC = encap.GatewayMAC

// cfgTunnelBatches is CFG_TUNNEL_BATCHES in bpf/lib/common.h.
const cfgTunnelBatches = 0x1

// WireGuardOverhead is what WireGuard over IPv4 adds to a packet: IPv4 (20),
// UDP (8), the message header (16) and the authentication tag (16).
const WireGuardOverhead = 60

// VXLANOverhead is what the VPC header adds inside the tunnel: IPv4 (20),
// UDP (8), VXLAN (8) and the inner Ethernet header (14).
const VXLANOverhead = encap.EncapLen

// TunnelMTU is the MTU of the tunnel device for an underlay MTU.
func TunnelMTU(underlayMTU int) int { return underlayMTU - WireGuardOverhead }

// InnerMTU is the largest workload IP packet that crosses the tunnel whole.
func InnerMTU(underlayMTU int) int { return TunnelMTU(underlayMTU) - VXLANOverhead }

// ENI is one local ENI in the desired state.
type ENI struct {
	Name            string
	Interface       string
	VNI             uint32
	IP              netip.Addr
	Gateway         netip.Addr
	VPC             netip.Prefix
	MAC             net.HardwareAddr
	SourceDestCheck bool
	Subnet          netip.Prefix
	Groups          []string // security group names, for status
	// FlowLog makes the datapath count the ENI's flows (a flow log covers
	// it); without one, flows cost nothing.
	FlowLog bool
	// MaxConnections is how many connections the ENI may track; 0 = its
	// share of the table (DefaultMaxConnections).
	MaxConnections uint32
	// Tap says the interface is a tap (a VMM reads it): the datapath
	// delivers to it by transmitting on it, not into a veth's peer.
	// TapOwner is the uid the tap is created for (the daemon creates it).
	Tap      bool
	TapOwner uint32
	// TapMultiQueue makes the tap multi-queue (topology.ENI).
	TapMultiQueue bool

	// SGIngress and SGEgress are the union of the ENI's security groups'
	// rules (an empty list denies). HasNACL is false for the default
	// network ACL (allow all); otherwise NACLIngress and NACLEgress are
	// the subnet's ACL rules in rule-number order.
	SGIngress   []Rule
	SGEgress    []Rule
	HasNACL     bool
	NACLIngress []Rule
	NACLEgress  []Rule
}

// Route says where an address of a VPC lives: on a local ENI (ENI set) or
// on another host (Remote set to that host's underlay address).
type Route struct {
	VNI    uint32
	IP     netip.Addr
	MAC    net.HardwareAddr
	ENI    string     // local ENI name, "" when remote
	Remote netip.Addr // underlay address of the host, invalid when local
}

// AllowRule lets the underlay deliver one more protocol/port to the host.
type AllowRule struct {
	Protocol uint8
	Port     uint16
}

// State is the desired content of every map for one host.
type State struct {
	UnderlayIP    netip.Addr
	ListenPort    uint16
	UnderlayMTU   int
	TunnelIfindex int // 0 when the tunnel is down: remote traffic drops
	// TunnelBatches: the tunnel makes the batches of mirror copies of the
	// super-packets it carries (tunnel.Tunnel.MakesBatches).
	TunnelBatches bool
	ENIs          []ENI
	Routes        []Route
	Peers         []netip.Addr // underlay addresses of the other hosts
	// PeerPorts holds each peer's WireGuard port (the underlay filter
	// believes ICMP errors about datagrams to it only); a peer that is not
	// in it listens on ListenPort.
	PeerPorts     map[netip.Addr]uint16
	Substrate     []netip.Prefix
	UnderlayAllow []AllowRule
	// UnderlayReplies are remote TCP endpoints (address and port) whose
	// replies the underlay filter lets in, bare SYNs excepted: the etcd
	// servers of a daemon in etcd mode.
	UnderlayReplies []netip.AddrPort
	// Mirror holds the mirror sessions whose source ENI is on this host.
	Mirror []MirrorSession
	// UncheckedFrom are the other hosts' VPCs (VNI and underlay address)
	// where that host has an ENI without the source/destination check:
	// their packets may carry any source of the VPC (ROUTE_UNCHECKED_FROM).
	UncheckedFrom []HostVNI
}

// HostVNI is one VPC (by VNI) on one host (by underlay address).
type HostVNI struct {
	VNI  uint32
	Host netip.Addr
}

// routeUncheckedFrom marks a routes key as a HostVNI (ROUTE_UNCHECKED_FROM).
const routeUncheckedFrom = 0x80000000

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func mask32(p netip.Prefix) uint32 {
	m := net.CIDRMask(p.Bits(), 32)
	return binary.NativeEndian.Uint32(m)
}

func mac6(m net.HardwareAddr) (out [6]uint8) {
	copy(out[:], m)
	return out
}

// Reconcile brings every map to the desired state by diff: entries that
// are already right are not touched, so traffic never sees a gap.
// ifindexOf resolves interface names in the host's namespace.
func (d *Datapath) Reconcile(s *State, ifindexOf func(string) (int, error)) error {
	var errs []error

	// The generation is bumped at the end (retire), once the maps are
	// changed: fast-path entries made from the old maps until then are
	// retired with it.
	var old bpf.EniVpcdConfig
	d.eni.Config.Lookup(uint32(0), &old)
	cfg := bpf.EniVpcdConfig{
		Monitor:    old.Monitor,
		Gen:        old.Gen,
		TunIfindex: uint32(s.TunnelIfindex),
		UnderlayIp: be32(s.UnderlayIP),
		WgPort:     be16(s.ListenPort),
		InnerMtu:   uint16(InnerMTU(s.UnderlayMTU)),
		GwMac:      mac6(GatewayMAC),
	}
	if s.TunnelBatches {
		cfg.Flags |= cfgTunnelBatches
	}
	if err := d.eni.Config.Put(uint32(0), &cfg); err != nil {
		errs = append(errs, fmt.Errorf("config map: %w", err))
	}

	ifindexes := map[string]int{}
	for _, e := range s.ENIs {
		idx, err := ifindexOf(e.Interface)
		if err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: interface %s: %w", e.Name, e.Interface, err))
			continue
		}
		ifindexes[e.Name] = idx
	}
	ids, idErrs := d.assignENIIDs(s.ENIs, ifindexes)
	errs = append(errs, idErrs...)
	enis := map[uint32]bpf.EniEniInfo{}
	flowLogged := false
	for _, e := range s.ENIs {
		idx, ok := ifindexes[e.Name]
		if _, hasID := ids[e.Name]; !ok || !hasID {
			continue // reported above
		}
		var sdc uint8
		if e.SourceDestCheck {
			sdc = 1
		}
		info := bpf.EniEniInfo{
			Vni:             e.VNI,
			Ip:              be32(e.IP),
			Gateway:         be32(e.Gateway),
			VpcNet:          be32(e.VPC.Masked().Addr()),
			VpcMask:         mask32(e.VPC),
			SubnetNet:       be32(e.Subnet.Masked().Addr()),
			SubnetMask:      mask32(e.Subnet),
			EniId:           ids[e.Name],
			Ifindex:         uint32(idx),
			Mac:             mac6(e.MAC),
			SourceDestCheck: sdc,
		}
		if e.Tap {
			info.Tap = 1
		}
		// Rule sets: syncPolicy.
		if e.FlowLog {
			info.FlowLog = 1
			flowLogged = true
		}
		if err := d.setLimits(ids[e.Name], e, len(s.ENIs), &info); err != nil {
			errs = append(errs, err)
		}
		enis[uint32(idx)] = info
	}

	msessions, msets, mbits, merrs := d.mirrorEntries(s.Mirror, ifindexes)
	errs = append(errs, merrs...)
	for name, b := range mbits {
		if idx, ok := ifindexes[name]; ok {
			info, ok := enis[uint32(idx)]
			if !ok {
				continue
			}
			info.Mirror = b
			enis[uint32(idx)] = info
		}
	}
	for _, id := range d.mirrorFresh {
		if err := d.ResetMirrorCounters(id); err != nil {
			errs = append(errs, fmt.Errorf("mirror counters: %w", err))
		}
	}
	d.mirrorFresh = nil

	routes := map[bpf.EniRouteKey]bpf.EniRoute{}
	for _, r := range s.Routes {
		v := bpf.EniRoute{Mac: mac6(r.MAC)}
		if r.ENI != "" {
			idx, ok := ifindexes[r.ENI]
			id, hasID := ids[r.ENI]
			if !ok || !hasID {
				continue // its interface or index is missing: reported above
			}
			v.Ifindex = uint32(idx)
			v.EniId = id
		} else {
			v.RemoteIp = be32(r.Remote)
		}
		routes[bpf.EniRouteKey{Vni: r.VNI, Ip: be32(r.IP)}] = v
	}
	for _, u := range s.UncheckedFrom {
		routes[bpf.EniRouteKey{Vni: u.VNI | routeUncheckedFrom, Ip: be32(u.Host)}] = bpf.EniRoute{RemoteIp: be32(u.Host)}
	}

	peers := map[uint32]bpf.EniPeerInfo{}
	for i, p := range s.Peers {
		port, ok := s.PeerPorts[p]
		if !ok {
			port = s.ListenPort
		}
		peers[be32(p)] = bpf.EniPeerInfo{Id: uint32(i + 1), Port: be16(port)}
	}
	substrate := map[bpf.EniLpmV4Key]uint8{}
	for _, p := range s.Substrate {
		substrate[bpf.EniLpmV4Key{Prefixlen: uint32(p.Bits()), Addr: be32(p.Masked().Addr())}] = 1
	}
	allow := map[bpf.EniUnderlayAllowKey]uint8{}
	for _, a := range s.UnderlayAllow {
		allow[bpf.EniUnderlayAllowKey{Protocol: a.Protocol, Port: be16(a.Port)}] = 1
	}
	replies := map[bpf.EniUnderlayFromKey]uint8{}
	for _, a := range s.UnderlayReplies {
		if a.Addr().Is4() {
			replies[bpf.EniUnderlayFromKey{Addr: be32(a.Addr()), Port: be16(a.Port()), Protocol: 6}] = 1
		}
	}

	d.flowLogged = flowLogged

	// Rule sets change atomically per ENI, before the ENI entries are
	// written (a new ENI's sets exist before it does).
	lp, perrs := d.syncPolicy(s.ENIs, ids, ifindexes, enis)
	errs = append(errs, perrs...)

	// Order matters for a consistent datapath: the rule sets an ENI names
	// exist before the ENI does, and routes reference ENIs. syncMap writes
	// before it deletes, per map.
	errs = append(errs,
		syncArray(d.eni.MirrorSessions, msessions),
		syncMap(d.eni.MirrorSets, msets),
		syncMapStep(d.eni.Enis, enis, d.afterWrite),
		syncMap(d.eni.Routes, routes),
		syncMap(d.eni.Peers, peers),
		syncMap(d.eni.Substrate, substrate),
		syncMap(d.eni.UnderlayAllow, allow),
		syncMap(d.eni.UnderlayFrom, replies),
	)
	// Removed ENIs are out of the enis map: their indexes may be reused
	// (and are flushed then) from the next reconcile on.
	if err := d.pruneENIIDs(ids); err != nil {
		errs = append(errs, err)
	}
	// Every program now runs with the new maps; a new generation retires
	// the fast-path decisions made from the old ones. Then the rule sets
	// no ENI names any more go.
	if err := d.retire(); err != nil {
		errs = append(errs, err)
	}
	if lp != nil {
		if err := d.gcPolicy(lp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// retire waits until no eBPF program still runs with what the maps held
// before (waitPrograms), then bumps the generation, so that no fast-path
// entry made from the old maps is used again.
func (d *Datapath) retire() error {
	if err := waitPrograms(); err != nil {
		return err
	}
	var cfg bpf.EniVpcdConfig
	if err := d.eni.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("config map: %w", err)
	}
	cfg.Gen++
	if err := d.eni.Config.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("config map: %w", err)
	}
	d.stepped()
	return nil
}

// waitPrograms returns once every eBPF program that was running when it
// was called has finished. Programs run inside RCU read-side sections, and
// the kernel waits for an RCU grace period (synchronize_rcu) before an
// update of a map of maps returns: one such update on a throwaway map is
// the barrier.
func waitPrograms() error {
	inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	in, err := ebpf.NewMap(inner)
	if err != nil {
		return fmt.Errorf("grace period: %w", err)
	}
	defer in.Close()
	outer, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
	if err != nil {
		return fmt.Errorf("grace period: %w", err)
	}
	defer outer.Close()
	if err := outer.Put(uint32(0), in); err != nil {
		return fmt.Errorf("grace period: %w", err)
	}
	return nil
}

// assignIDs gives each of names a dense index in ids: a name keeps the one
// it has, names gone lose theirs, and new names take the lowest free
// indexes in name order, below limit (names beyond it get none). It
// returns the indexes given now.
func assignIDs(ids map[string]uint32, names []string, limit uint32) []uint32 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for name := range ids {
		if !want[name] {
			delete(ids, name)
		}
	}
	used := map[uint32]bool{}
	for _, id := range ids {
		used[id] = true
	}
	sorted := slices.Sorted(maps.Keys(want))
	var fresh []uint32
	var next uint32
	for _, n := range sorted {
		if _, ok := ids[n]; ok {
			continue
		}
		for used[next] {
			next++
		}
		if next >= limit {
			break
		}
		ids[n] = next
		used[next] = true
		fresh = append(fresh, next)
	}
	return fresh
}

// eniNames maps counter indexes back to ENI names.
func (d *Datapath) eniNames() map[uint32]string {
	out := make(map[uint32]string, len(d.eniIDs))
	for name, id := range d.eniIDs {
		out[id] = name
	}
	return out
}

// ENIID returns the counter index of a local ENI.
func (d *Datapath) ENIID(name string) (uint32, bool) {
	id, ok := d.eniIDs[name]
	return id, ok
}

// readMap reads every entry of m.
func readMap[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	have := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read map %s: %w", m.String(), err)
	}
	return have, nil
}

// syncMap makes m hold exactly want: it writes missing or different
// entries, then deletes the rest.
func syncMap[K comparable, V comparable](m *ebpf.Map, want map[K]V) error {
	return syncMapStep(m, want, nil)
}

// syncMapStep is syncMap that runs step (when not nil) after every write.
func syncMapStep[K comparable, V comparable](m *ebpf.Map, want map[K]V, step func()) error {
	if step == nil {
		step = func() {}
	}
	have, err := readMap[K, V](m)
	if err != nil {
		return err
	}
	var errs []error
	for k, v := range want {
		if old, ok := have[k]; ok && old == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			errs = append(errs, fmt.Errorf("update map %s: %w", m.String(), err))
		}
		step()
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete from map %s: %w", m.String(), err))
			}
			step()
		}
	}
	return errors.Join(errs...)
}

// SetTunnelIfindex points remote traffic at the tunnel device (0: none, so
// remote traffic is dropped and counted as no_tunnel).
func (d *Datapath) SetTunnelIfindex(idx int) error {
	var cfg bpf.EniVpcdConfig
	if err := d.eni.Config.Lookup(uint32(0), &cfg); err != nil {
		return err
	}
	cfg.TunIfindex = uint32(idx)
	cfg.Gen++
	return d.eni.Config.Put(uint32(0), &cfg)
}
