package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/bpf/limits"
	"github.com/vpcd/vpcd/encap"
)

// Limits of the mirror datapath (bpf/lib/limits.h).
const (
	// MirrorRules is how many filter rules the sessions of one ENI and
	// direction may have together.
	MirrorRules = limits.MirrorRules
	// MaxMirrorSessions bounds the sessions of one host.
	MaxMirrorSessions = limits.MaxMirrorSessions
	// MirrorSnapMax is the most bytes of a frame a copy holds.
	MirrorSnapMax = limits.MirrorSnapMax
	// MirrorCopyOverhead is what the mirror's VXLAN wrapping adds to a
	// copy: outer IPv4 (20), UDP (8) and VXLAN (8).
	MirrorCopyOverhead = encap.OuterLen
)

// MirrorRule is one rule of a mirror filter in one direction.
type MirrorRule struct {
	Accept   bool
	Protocol int // -1: all
	Source   netip.Prefix
	Dest     netip.Prefix
	SrcPorts [2]uint16 // inclusive; {0, 65535} = any
	DstPorts [2]uint16
}

// MirrorSession is a session whose source ENI is on this host.
type MirrorSession struct {
	Name          string
	SourceENI     string // a local ENI's name
	SessionNumber int
	// Snaplen is how many bytes of each frame to copy (already bounded by
	// the target's needs; the datapath caps it at MirrorSnapMax).
	Snaplen int
	Ingress []MirrorRule
	Egress  []MirrorRule
	// Target is the target ENI's address and VNI the session's
	// virtual_network_id; Target is invalid for a pcap target. With the
	// tc hook the kernel makes and sends the copies to an ENI target
	// itself, through the mirror device (MirrorInjectPeer).
	Target netip.Addr
	VNI    uint32
}

// CopyLen is how many bytes of each frame the session's copies hold.
func (s MirrorSession) CopyLen() int {
	if s.Snaplen <= 0 || s.Snaplen > MirrorSnapMax {
		return MirrorSnapMax
	}
	return s.Snaplen
}

// mirror bits of eni_info.
const (
	mirrorIn  = 1
	mirrorOut = 2
)

func anyPorts(p [2]uint16) bool { return p[0] == 0 && p[1] == 65535 }

// mirrorEntries compiles the sessions, each under its index (stable across
// reconciles while the session exists): the sessions array, the rule sets
// per ENI interface and direction, and the ENIs' mirror bits.
func (d *Datapath) mirrorEntries(sessions []MirrorSession, ifindexes map[string]int) (
	arr map[uint32]bpf.EniMirrorSession, sets map[bpf.EniMirrorKey]bpf.EniMirrorSet,
	bits map[string]uint8, errs []error) {

	idx := d.assignMirrorIDs(sessions)
	arr = map[uint32]bpf.EniMirrorSession{}
	outIfindex := 0
	for _, s := range sessions {
		if s.Target.IsValid() {
			var err error
			if outIfindex, err = d.mirrorDevice(); err != nil {
				errs = append(errs, err) // copies go through the daemon meanwhile
			}
			break
		}
	}
	sets = map[bpf.EniMirrorKey]bpf.EniMirrorSet{}
	bits = map[string]uint8{}

	ordered := append([]MirrorSession(nil), sessions...)
	sort.SliceStable(ordered, func(i, j int) bool { return ordered[i].SessionNumber < ordered[j].SessionNumber })
	for _, s := range ordered {
		ifx, ok := ifindexes[s.SourceENI]
		if !ok {
			continue // the ENI's interface is missing: reported with the ENI
		}
		id, ok := idx[s.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("mirror session %s: more than %d sessions on this host", s.Name, MaxMirrorSessions))
			continue
		}
		ms := bpf.EniMirrorSession{Snaplen: uint32(s.CopyLen()), SrcIfindex: uint32(ifx)}
		if s.Target.Is4() {
			ms.Target, ms.Vni, ms.OutIfindex = be32(s.Target), s.VNI, uint32(outIfindex)
		}
		arr[id] = ms
		for dir, rules := range [2][]MirrorRule{Ingress: s.Ingress, Egress: s.Egress} {
			if len(rules) == 0 {
				continue
			}
			k := bpf.EniMirrorKey{Ifindex: uint32(ifx), Dir: uint32(dir)}
			set := sets[k]
			if int(set.N)+len(rules) > MirrorRules {
				errs = append(errs, fmt.Errorf("mirror session %s: eni %s has more than %d mirror rules in direction %s across its sessions",
					s.Name, s.SourceENI, MirrorRules, Direction(dir)))
				continue
			}
			for _, r := range rules {
				set.Rules[set.N] = compileMirrorRule(r, id)
				set.N++
			}
			sets[k] = set
			if Direction(dir) == Ingress {
				bits[s.SourceENI] |= mirrorIn
			} else {
				bits[s.SourceENI] |= mirrorOut
			}
		}
	}
	return arr, sets, bits, errs
}

func compileMirrorRule(r MirrorRule, session uint32) bpf.EniMirrorRule {
	out := bpf.EniMirrorRule{
		Src: be32(r.Source.Masked().Addr()), SrcMask: mask32(r.Source),
		Dst: be32(r.Dest.Masked().Addr()), DstMask: mask32(r.Dest),
		SportLo: r.SrcPorts[0], SportHi: r.SrcPorts[1],
		DportLo: r.DstPorts[0], DportHi: r.DstPorts[1],
		Session: uint16(session),
	}
	if r.Accept {
		out.Flags |= 1
	}
	if r.Protocol < 0 {
		out.Flags |= 2
	} else {
		out.Proto = uint8(r.Protocol)
	}
	if !anyPorts(r.SrcPorts) || !anyPorts(r.DstPorts) {
		out.Flags |= 4
	}
	return out
}

// assignMirrorIDs gives each session a dense index, keeping the index a
// session already had (assignIDs); the counters of indexes given now start
// from zero at the next reconcile.
func (d *Datapath) assignMirrorIDs(sessions []MirrorSession) map[string]uint32 {
	names := make([]string, 0, len(sessions))
	for _, s := range sessions {
		names = append(names, s.Name)
	}
	d.mirrorFresh = append(d.mirrorFresh, assignIDs(d.mirrorIDs, names, MaxMirrorSessions)...)
	return maps.Clone(d.mirrorIDs)
}

// syncArray makes an array map hold want, with zero values elsewhere,
// writing only what differs.
func syncArray[V comparable](m *ebpf.Map, want map[uint32]V) error {
	have, err := readMap[uint32, V](m)
	if err != nil {
		return err
	}
	var zero V
	var errs []error
	for k, old := range have {
		nv, ok := want[k]
		if !ok {
			nv = zero
		}
		if nv == old {
			continue
		}
		if err := m.Put(k, nv); err != nil {
			errs = append(errs, fmt.Errorf("update map %s: %w", m.String(), err))
		}
	}
	return errors.Join(errs...)
}

// MirrorIndex returns the datapath index of a session, as records and
// counters name it.
func (d *Datapath) MirrorIndex(name string) (uint32, bool) {
	id, ok := d.mirrorIDs[name]
	return id, ok
}

// MirrorCounter is what the datapath counted for a session.
type MirrorCounter struct {
	Packets uint64 // copies handed to the daemon
	Dropped uint64 // copies the full ring or the mirror device's queue refused
	Sent    uint64 // copies the kernel sent to an ENI target itself
	Queued  uint64 // wire packets cloned into the mirror device for an ENI target
	Failed  uint64 // cloned copies the mirror device's program could not wrap
	Batches uint64 // super-packets whose copies the kernel made as one batch
}

// MirrorCounters sums a session's per-CPU counters.
func (d *Datapath) MirrorCounters(index uint32) (MirrorCounter, error) {
	var per []bpf.EniMirrorCounter
	if err := d.eni.MirrorStats.Lookup(index, &per); err != nil {
		return MirrorCounter{}, err
	}
	var out MirrorCounter
	for _, c := range per {
		out.Packets += c.Packets
		out.Dropped += c.Dropped
		out.Sent += c.Sent
		out.Queued += c.Queued
		out.Failed += c.Failed
		out.Batches += c.Batches
	}
	return out, nil
}

// ResetMirrorCounters zeroes a session index's counters (a new session
// that takes over the index of a removed one starts at zero).
func (d *Datapath) ResetMirrorCounters(index uint32) error {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	return d.eni.MirrorStats.Put(index, make([]bpf.EniMirrorCounter, n))
}

// MirrorRecord is one copy from the mirror ring.
type MirrorRecord struct {
	Time    time.Time
	Session uint32
	Ingress bool
	OrigLen int
	Data    []byte // the frame's first bytes; valid until the next Read
}

// mirrorRecordHead is sizeof(struct mirror_record).
const mirrorRecordHead = 24

// MirrorReader reads copies from the mirror ring.
type MirrorReader struct {
	rd   *ringbuf.Reader
	rec  ringbuf.Record
	boot time.Time // wall time of monotonic zero
}

// NewMirrorReader opens the mirror ring.
func (d *Datapath) NewMirrorReader() (*MirrorReader, error) {
	rd, err := ringbuf.NewReader(d.eni.MirrorRing)
	if err != nil {
		return nil, fmt.Errorf("mirror ring: %w", err)
	}
	mono := time.Duration(monotonicNow())
	return &MirrorReader{rd: rd, boot: time.Now().Add(-mono)}, nil
}

// Read waits until deadline (the zero time: until a copy comes or Wake)
// for the next copy; it returns os.ErrDeadlineExceeded when none came,
// ringbuf.ErrFlushed after Wake.
func (r *MirrorReader) Read(deadline time.Time, out *MirrorRecord) error {
	r.rd.SetDeadline(deadline)
	if err := r.rd.ReadInto(&r.rec); err != nil {
		return err
	}
	raw := r.rec.RawSample
	if len(raw) < mirrorRecordHead {
		return fmt.Errorf("mirror ring: short record (%d bytes)", len(raw))
	}
	t := binary.NativeEndian.Uint64(raw[0:])
	orig := binary.NativeEndian.Uint32(raw[8:])
	capLen := int(binary.NativeEndian.Uint16(raw[12:]))
	sess := binary.NativeEndian.Uint16(raw[14:])
	dir := raw[16]
	if mirrorRecordHead+capLen > len(raw) {
		return fmt.Errorf("mirror ring: record of %d bytes claims %d", len(raw), capLen)
	}
	*out = MirrorRecord{
		Time:    r.boot.Add(time.Duration(t)),
		Session: uint32(sess),
		Ingress: Direction(dir) == Ingress,
		OrigLen: int(orig),
		Data:    raw[mirrorRecordHead : mirrorRecordHead+capLen],
	}
	return nil
}

// Close stops the reader; a blocked Read returns.
func (r *MirrorReader) Close() error { return r.rd.Close() }

// Wake makes a blocked Read return (ringbuf.ErrFlushed).
func (r *MirrorReader) Wake() error { return r.rd.Flush() }

// MirrorInjectName and MirrorInjectPeer are the veth pair mirror copies
// enter the VPC through: the daemon writes to the first, the mirror_inject
// program runs at ingress of the second. The ENI and tunnel programs (tc)
// clone frames for ENI targets straight into the ingress of the second.
const (
	MirrorInjectName = "vpcd-mirror"
	MirrorInjectPeer = "vpcd-mirror-in"
)

// EnsureMirrorInject creates the injection veth pair (when missing) and
// attaches mirror_inject to it. It returns the ifindex to write copies to.
func (d *Datapath) EnsureMirrorInject() (int, error) {
	l, err := netlink.LinkByName(MirrorInjectName)
	if err != nil {
		va := netlink.NewLinkAttrs()
		va.Name = MirrorInjectName
		va.MTU = 9000
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: va, PeerName: MirrorInjectPeer}); err != nil {
			return 0, fmt.Errorf("mirror injection interface: %w", err)
		}
		if l, err = netlink.LinkByName(MirrorInjectName); err != nil {
			return 0, fmt.Errorf("mirror injection interface: %w", err)
		}
	}
	peer, err := netlink.LinkByName(MirrorInjectPeer)
	if err != nil {
		return 0, fmt.Errorf("mirror injection interface %s: %w", MirrorInjectPeer, err)
	}
	// The programs first, then the pair up: nothing crosses it unchecked.
	// The peer's program makes copies of the frames cloned out of the
	// first and sends them back; the first's routes them (and the
	// daemon's copies, which enter at the peer, are routed there).
	if err := d.attachPinned("mirror-inject", MirrorInjectPeer, HookTCX, d.eni.MirrorInject); err != nil {
		return 0, err
	}
	if err := d.attachPinned("mirror-route", MirrorInjectName, HookTCX, d.eni.MirrorInject); err != nil {
		return 0, err
	}
	for _, link := range []netlink.Link{l, peer} {
		// Nothing of the host's own may leave through the pair.
		os.WriteFile("/proc/sys/net/ipv6/conf/"+link.Attrs().Name+"/disable_ipv6", []byte("1"), 0o644)
		if err := netlink.LinkSetUp(link); err != nil {
			return 0, fmt.Errorf("mirror injection interface %s up: %w", link.Attrs().Name, err)
		}
	}
	// Offloads, once both ends are up (veth starts its GRO poller only
	// on an up device): neither end segments in hardware nor checksums,
	// so a super-packet cloned out of the first is cut into its wire
	// segments, with their real checksums, as it leaves; the first end
	// batches the copies that come back with UDP GRO.
	noOffload := map[string]bool{
		"tx-checksum-ip-generic":       false,
		"tx-tcp-segmentation":          false,
		"tx-tcp-ecn-segmentation":      false,
		"tx-tcp-mangleid-segmentation": false,
		"tx-tcp6-segmentation":         false,
		"tx-tcp-accecn-segmentation":   false, // 6.18: veth batches (GRO) only from a peer without any TSO
		"tx-udp-segmentation":          false,
	}
	if err := setFeatures(MirrorInjectPeer, noOffload); err != nil {
		return 0, fmt.Errorf("mirror injection interface: %w", err)
	}
	noOffload["rx-gro"] = true
	noOffload["rx-udp-gro-forwarding"] = true
	if err := setFeatures(MirrorInjectName, noOffload); err != nil {
		return 0, fmt.Errorf("mirror injection interface: %w", err)
	}
	// GRO holds what it merges until the poll ends, and copies of single
	// packets (a stream's ACKs) come one per poll: merged with nothing,
	// each left on its own, one tunnel device read each. Held up to
	// mirrorGROHold, they leave in batches. Without it (an old kernel)
	// they still leave, one by one.
	if d.groHeld != l.Attrs().Index {
		if err := writeNetSysfs(MirrorInjectName, "gro_flush_timeout", strconv.FormatInt(mirrorGROHold.Nanoseconds(), 10)); err != nil {
			d.log.Warn("mirror copies of single packets leave one by one", "interface", MirrorInjectName, "err", err)
		} else {
			d.groHeld = l.Attrs().Index
		}
	}
	return l.Attrs().Index, nil
}

// mirrorGROHold is how long the mirror pair's GRO may hold copies: copies
// are not traffic, and an appliance takes a millisecond's delay in its
// stride.
const mirrorGROHold = time.Millisecond

// writeNetSysfs writes value to the attribute attr of interface ifname
// in /sys/class/net as the calling thread's network namespace sees it. The
// daemon may have entered its namespace with setns, keeping the root
// namespace's /sys (the lab does: remounting it would hide bpffs), so the
// write runs on a thread of its own, in the caller's network namespace and
// a mount namespace of its own with sysfs mounted anew; the thread ends
// with it.
func writeNetSysfs(ifname, attr, value string) error {
	netns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer netns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime ends the thread
		errc <- func() error {
			if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter the network namespace: %w", err)
			}
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
				return fmt.Errorf("mount sysfs: %w", err)
			}
			return os.WriteFile(filepath.Join("/sys/class/net", ifname, attr), []byte(value), 0o644)
		}()
	}()
	return <-errc
}

// mirrorDevice returns the ifindex of the interface the datapath clones
// frames for ENI targets out of, creating the pair when missing.
func (d *Datapath) mirrorDevice() (int, error) {
	return d.EnsureMirrorInject()
}

// RemoveMirrorInject deletes the injection pair and its pinned link (no
// session needs it any more, or teardown).
func (d *Datapath) RemoveMirrorInject() error {
	delete(d.attached, "mirror-inject")
	delete(d.attached, "mirror-route")
	err := errors.Join(unpinLink(d.linkPin("mirror-inject")), unpinLink(d.linkPin("mirror-route")))
	if l, lerr := netlink.LinkByName(MirrorInjectName); lerr == nil {
		err = errors.Join(err, netlink.LinkDel(l))
	}
	return err
}

// SetMirrorLimit sets the mirror path's capacity, in copies per second for
// the host (0: no limit), shared out evenly over the CPUs: each CPU's
// bucket holds a tenth of a second of its share (at least 64 copies, so a
// super-packet's copies fit). Copies beyond it are dropped and counted in
// the sessions' dropped counters; traffic is never held up.
func (d *Datapath) SetMirrorLimit(pps int) error {
	var lim bpf.EniMirrorLimit
	if pps > 0 {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			return fmt.Errorf("mirror limit: %w", err)
		}
		lim.Rate = uint64(pps / n)
		if lim.Rate == 0 {
			lim.Rate = 1
		}
		lim.Burst = max(lim.Rate/10, 64)
	}
	if err := d.eni.MirrorLimit.Put(uint32(0), &lim); err != nil {
		return fmt.Errorf("mirror limit: %w", err)
	}
	return nil
}
