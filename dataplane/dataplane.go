// Package dataplane loads vpcd's eBPF programs with cilium/ebpf, pins their
// maps and links under bpffs so that they outlive the daemon, attaches them
// to interfaces and reconciles the maps against the desired state by diff.
package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/bpf"
)

// DefaultBPFFS is where a daemon on a real host pins its objects.
const DefaultBPFFS = "/sys/fs/bpf/vpcd"

// Datapath is the loaded set of programs and maps of one host.
//
// Its methods are not safe for concurrent use except the read-only counter
// methods (Drops, ENICounters), which only read maps.
type Datapath struct {
	dir         string
	log         *slog.Logger
	eni         bpf.EniObjects
	eniXDP      bpf.EniXdpObjects
	tunnel      bpf.TunnelObjects
	underlay    bpf.UnderlayObjects
	underlayXDP bpf.UnderlayXdpObjects

	// tunnelLink is not pinned: the tunnel device dies with the daemon.
	tunnelLink link.Link
	attached   map[string]Attachment // by pin name
	// eniIDs remembers the dense counter index given to each ENI name.
	eniIDs map[string]uint32
	// usageTop bounds the ENI indexes this daemon has given (one past
	// the highest): readUsage reads eni_usage no further.
	usageTop uint32
	// groHeld is the mirror pair's ifindex once its GRO holds copies
	// (EnsureMirrorInject).
	groHeld int
	// mirrorIDs remembers the index given to each mirror session name;
	// mirrorFresh lists indexes given since the last reconcile, whose
	// counters start from zero.
	mirrorIDs   map[string]uint32
	mirrorFresh []uint32
	// monitor mirrors the config map's monitor flag across reconciles.
	monitor bool
	// fastSeen is what the last flow drain read of each fast-path entry
	// that counts flows; fastEvicted counts such entries that vanished
	// (LRU evictions) between drains.
	fastSeen    map[bpf.EniFastKey]fastSeen
	fastEvicted uint64
	// flowLogged is whether a flow log covers any local ENI.
	flowLogged bool
	// connLimits is the max_connections the last reconcile gave each ENI
	// index (usage.go).
	connLimits map[uint32]uint32
	// lostSeen is the flow_lost total per ENI index already reported.
	lostSeen map[uint32]uint64
	// ctTally is what the conntrack sweeps have seen, for the LRU's
	// evictions (usage.go).
	ctTally ctTally
	// eniIDRecord is the pinned record of each ENI name's index
	// (identity.go); nil until the first reconcile opens it.
	eniIDRecord *ebpf.Map
	// afterWrite, when set (tests), runs after each write a reconcile
	// makes to the policy, ENI and config maps: packets run from it see
	// every intermediate state of a reload.
	afterWrite func()
}

// Attachment describes one program attached by vpcd.
type Attachment struct {
	Interface string         `json:"interface"`
	Ifindex   int            `json:"ifindex"`
	Program   string         `json:"program"`
	Hook      string         `json:"hook"` // "tcx-ingress" or "xdp"
	ProgramID ebpf.ProgramID `json:"program_id"`
	Pinned    string         `json:"pinned"`
}

// EnsureBPFFS mounts bpffs at /sys/fs/bpf when nothing is mounted there and
// checks that dir lies on a bpffs.
func EnsureBPFFS(dir string) error {
	const root = "/sys/fs/bpf"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return fmt.Errorf("bpffs: %w", err)
		}
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("bpffs not mounted at %s and mounting it failed: %w", root, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs dir %s: %w", dir, err)
	}
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("bpffs dir %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("bpffs dir %s is not on a bpf filesystem", dir)
	}
	return nil
}

// Open loads (or adopts, from the pins under dir) the datapath's maps and
// loads its programs. Nothing is attached yet.
func Open(dir string, log *slog.Logger) (*Datapath, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := EnsureBPFFS(dir); err != nil {
		return nil, err
	}
	mapDir := filepath.Join(dir, "maps")
	if err := os.MkdirAll(mapDir, 0o700); err != nil {
		return nil, err
	}
	d := &Datapath{dir: dir, log: log, attached: map[string]Attachment{}, eniIDs: map[string]uint32{}, mirrorIDs: map[string]uint32{}}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapDir}}

	if err := loadAdopting(mapDir, log, func() error { return bpf.LoadEniObjects(&d.eni, opts) }); err != nil {
		return nil, fmt.Errorf("load ENI program: %w", err)
	}
	if err := loadAdopting(mapDir, log, func() error { return bpf.LoadEniXdpObjects(&d.eniXDP, opts) }); err != nil {
		d.eni.Close()
		return nil, fmt.Errorf("load ENI program (XDP): %w", err)
	}
	if err := loadAdopting(mapDir, log, func() error { return bpf.LoadTunnelObjects(&d.tunnel, opts) }); err != nil {
		d.eni.Close()
		d.eniXDP.Close()
		return nil, fmt.Errorf("load tunnel program: %w", err)
	}
	if err := loadAdopting(mapDir, log, func() error { return bpf.LoadUnderlayObjects(&d.underlay, opts) }); err != nil {
		d.eni.Close()
		d.eniXDP.Close()
		d.tunnel.Close()
		return nil, fmt.Errorf("load underlay program: %w", err)
	}
	if err := loadAdopting(mapDir, log, func() error { return bpf.LoadUnderlayXdpObjects(&d.underlayXDP, opts) }); err != nil {
		d.eni.Close()
		d.eniXDP.Close()
		d.tunnel.Close()
		d.underlay.Close()
		return nil, fmt.Errorf("load underlay program (XDP): %w", err)
	}
	return d, nil
}

// loadAdopting loads a collection. When pinned maps left by an older
// version no longer match the programs, it removes the map pins and loads
// again: the daemon then refills every map from the topology.
func loadAdopting(mapDir string, log *slog.Logger, load func() error) error {
	err := load()
	if !errors.Is(err, ebpf.ErrMapIncompatible) {
		return err
	}
	log.Warn("pinned maps do not match this version; recreating them", "dir", mapDir, "err", err)
	entries, rerr := os.ReadDir(mapDir)
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	for _, e := range entries {
		os.Remove(filepath.Join(mapDir, e.Name()))
	}
	return load()
}

// Dir is the bpffs directory of this datapath.
func (d *Datapath) Dir() string { return d.dir }

// Close releases the daemon's handles. Pinned maps and links stay, so
// traffic keeps flowing while no daemon runs.
func (d *Datapath) Close() error {
	if d.tunnelLink != nil {
		d.tunnelLink.Close()
	}
	if d.eniIDRecord != nil {
		d.eniIDRecord.Close()
	}
	return errors.Join(d.underlayXDP.Close(), d.underlay.Close(), d.tunnel.Close(), d.eniXDP.Close(), d.eni.Close())
}

// OwnedAlias starts the alias (IFLA_IFALIAS) of every interface the daemon
// creates for a workload: a tap ENI's tap, a container's veth. Teardown
// removes the interfaces that carry it.
const OwnedAlias = "vpcd-owned: "

// MarkOwned gives the interface name the alias that makes it the daemon's,
// with what it is for (e.g. "tap of an ENI"), unless it has it already
// (one the daemon made before, or an earlier try).
func MarkOwned(name, what string) error {
	l, err := netlink.LinkByName(name)
	if err == nil && strings.HasPrefix(l.Attrs().Alias, OwnedAlias) {
		return nil
	}
	if err == nil {
		err = netlink.LinkSetAlias(l, OwnedAlias+what)
	}
	if err != nil {
		return fmt.Errorf("mark %s as vpcd's: %w", name, err)
	}
	return nil
}

// Teardown removes every pin under dir: links (which detaches their
// programs) and maps; and the interfaces the daemon created (MarkOwned,
// the mirror injection pair). It is the uninstall; it works without a
// daemon.
func Teardown(dir string) error {
	var errs []error
	links, err := netlink.LinkList()
	errs = append(errs, err)
	for _, l := range links {
		if a := l.Attrs(); a.Name == MirrorInjectName || strings.HasPrefix(a.Alias, OwnedAlias) {
			// A veth whose peer went first is gone already.
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", a.Name, err))
			}
		}
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}
