package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Hook is where a program runs on an interface.
type Hook string

const (
	HookTCX Hook = "tcx-ingress"
	HookXDP Hook = "xdp"
)

func (d *Datapath) linkPin(name string) string {
	return filepath.Join(d.dir, "links", name)
}

// attachPinned attaches prog to ifname at hook, reusing a pinned link of
// an earlier daemon when it still points at the same interface (the
// program is then replaced atomically, so traffic never sees a gap).
func (d *Datapath) attachPinned(pinName, ifname string, hook Hook, prog *ebpf.Program) error {
	iface, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", hook, ifname, err)
	}
	ifindex := iface.Attrs().Index
	path := d.linkPin(pinName)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}

	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && linkIfindex(info) == ifindex {
			if uerr := l.Update(prog); uerr == nil {
				var err error
				if hook == HookTCX {
					// Updating keeps the link's place: a program
					// put in front of ours stays in front.
					var nl link.Link
					nl, err = placeFirst(ifindex, prog, l)
					if nl != l {
						l.Unpin()
						l.Close()
						if perr := nl.Pin(path); perr != nil {
							err = errors.Join(err, fmt.Errorf("pin: %w", perr))
						}
						l = nl
					}
				}
				d.record(pinName, ifname, ifindex, hook, prog, path)
				l.Close()
				return wrapIf(err, "make %s program first on %s", hook, ifname)
			}
		}
		// Stale (interface recreated) or not updatable: replace it.
		l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		os.Remove(path)
	}

	var l link.Link
	switch hook {
	case HookTCX:
		// First in line: a program before ours could pass packets
		// around every check.
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
	case HookXDP:
		l, err = link.AttachXDP(link.XDPOptions{Interface: ifindex, Program: prog})
	default:
		err = fmt.Errorf("unknown hook %q", hook)
	}
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", hook, ifname, err)
	}
	defer l.Close()
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pin %s link of %s: %w", hook, ifname, err)
	}
	d.record(pinName, ifname, ifindex, hook, prog, path)
	return nil
}

// tcxFirst reports whether prog is the first program at ifindex's tcx
// ingress.
func tcxFirst(ifindex int, prog *ebpf.Program) (bool, error) {
	info, err := prog.Info()
	if err != nil {
		return false, err
	}
	id, _ := info.ID()
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return false, err
	}
	return len(res.Programs) > 0 && res.Programs[0].ID == id, nil
}

// placeFirst makes prog, which l runs at ifindex's tcx ingress, the first
// program there again, and returns the link that runs it then: l itself
// when it already was first, else a new link whose pin and handle the
// caller owns (l is then detached and only needs closing).
//
// A tcx link keeps its place when its program is updated, and a hook holds
// one program only once, so prog cannot be attached again at the head
// while l runs it. Instead a guard that drops everything goes to the head,
// l is detached behind it, and the guard's link is updated to prog: for
// that moment packets are dropped, none passes unchecked. When the update
// fails the guard's link is returned with the error, still dropping
// everything; a later repair updates it to prog in place.
func placeFirst(ifindex int, prog *ebpf.Program, l link.Link) (link.Link, error) {
	first, err := tcxFirst(ifindex, prog)
	if err != nil {
		return l, err
	}
	if first {
		return l, nil
	}
	guard, err := dropAllProgram()
	if err != nil {
		return l, fmt.Errorf("guard program: %w", err)
	}
	defer guard.Close() // the link keeps what it runs
	gl, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: guard, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
	if err != nil {
		return l, fmt.Errorf("attach guard: %w", err)
	}
	if err := l.Detach(); err != nil {
		gl.Close()
		return l, fmt.Errorf("detach the displaced link: %w", err)
	}
	if err := gl.Update(prog); err != nil {
		return gl, fmt.Errorf("update guard to program: %w", err)
	}
	return gl, nil
}

// dropAllProgram loads a tc program that drops every packet: the stand-in
// that keeps a hook closed while vpcd's program moves.
func dropAllProgram() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "vpcd_guard",
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, guardVerdict), asm.Return()},
	})
}

// guardVerdict is TC_ACT_SHOT: drop.
const guardVerdict = 2

func wrapIf(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

func linkIfindex(info *link.Info) int {
	if tcx := info.TCX(); tcx != nil {
		return int(tcx.Ifindex)
	}
	if xdp := info.XDP(); xdp != nil {
		return int(xdp.Ifindex)
	}
	return -1
}

func (d *Datapath) record(pinName, ifname string, ifindex int, hook Hook, prog *ebpf.Program, path string) {
	a := Attachment{Interface: ifname, Ifindex: ifindex, Hook: string(hook), Pinned: path}
	if info, err := prog.Info(); err == nil {
		a.Program = info.Name
		a.ProgramID, _ = info.ID()
	}
	d.attached[pinName] = a
}

// AttachENI attaches the ENI program to an ENI's host-side interface at
// hook (chosen with ChooseHook when empty) and returns the hook used. A
// pinned link of an earlier daemon at the other hook is replaced.
func (d *Datapath) AttachENI(ifname string, hook Hook) (Hook, error) {
	if hook == "" {
		h, err := ChooseHook(ifname)
		if err != nil {
			return "", err
		}
		hook = h
	}
	prog := d.eni.FromWorkload
	if hook == HookXDP {
		prog = d.eniXDP.FromWorkloadXdp
		if l, err := netlink.LinkByName(ifname); err == nil && d.attached["eni-"+ifname].Hook != string(HookXDP) {
			// The operator asked for it; say what it costs.
			switch l.Type() {
			case "veth":
				d.log.Warn("XDP on a veth: its redirects reach other veths only when they run XDP too, and bulk TCP loses GSO; tcx is the choice for veths",
					"interface", ifname)
			case "tuntap":
				d.log.Warn("XDP on a tap: it delivers only to taps of this host; frames to veth ENIs and to other hosts (the tunnel is a TUN, without XDP transmit) are dropped; tcx is the choice for taps",
					"interface", ifname)
			}
		}
	}
	return hook, d.attachPinned("eni-"+ifname, ifname, hook, prog)
}

// DetachENI removes the ENI program from ifname (the pin goes too).
func (d *Datapath) DetachENI(ifname string) error {
	delete(d.attached, "eni-"+ifname)
	return unpinLink(d.linkPin("eni-" + ifname))
}

// ENIInterfaceLive reports whether the interface the ENI program was
// attached to as ifname still exists: not gone, not recreated under the
// same name. For a name this daemon attached nothing to yet, whether the
// interface exists. When netlink cannot tell, it answers true.
func (d *Datapath) ENIInterfaceLive(ifname string) bool {
	iface, err := netlink.LinkByName(ifname)
	var missing netlink.LinkNotFoundError
	if errors.As(err, &missing) {
		return false
	}
	if err != nil {
		return true
	}
	a, ok := d.attached["eni-"+ifname]
	return !ok || a.Ifindex == iface.Attrs().Index
}

// ENIHook reports the hook the ENI program of ifname runs at, if attached.
func (d *Datapath) ENIHook(ifname string) (Hook, bool) {
	a, ok := d.attached["eni-"+ifname]
	return Hook(a.Hook), ok
}

// ChooseHook picks where a program runs on ifname when the operator did
// not say (docs/datapath.md has the numbers): tcx on veths, whose native
// XDP turns off GSO on the peer and costs bulk TCP most of its throughput;
// tcx on taps, whose XDP can redirect only to other taps (the tunnel is a
// layer-3 TUN, which has no ndo_xdp_xmit, and a veth takes XDP frames only
// when its peer runs NAPI); XDP, the earliest point, everywhere else
// (physical NICs).
func ChooseHook(ifname string) (Hook, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return "", fmt.Errorf("interface %s: %w", ifname, err)
	}
	switch l.Type() {
	case "veth", "tuntap":
		return HookTCX, nil
	}
	return HookXDP, nil
}

// ParseHook reads a hook flag value: "auto" (empty Hook), "xdp" or "tcx".
func ParseHook(s string) (Hook, error) {
	switch s {
	case "auto", "":
		return "", nil
	case "xdp":
		return HookXDP, nil
	case "tcx", "tc":
		return HookTCX, nil
	}
	return "", fmt.Errorf("hook %q: want auto, xdp or tcx", s)
}

// AttachUnderlay attaches the underlay filter to the underlay interface at
// hook (chosen with ChooseHook when empty), replacing the filter at the
// other hook if an earlier daemon left one there. It returns the hook used.
func (d *Datapath) AttachUnderlay(ifname string, hook Hook) (Hook, error) {
	if hook == "" {
		h, err := ChooseHook(ifname)
		if err != nil {
			return "", err
		}
		hook = h
	}
	prog, stale := d.underlayXDP.FromUnderlayXdp, "underlay-tcx"
	if hook == HookTCX {
		prog, stale = d.underlay.FromUnderlay, "underlay-xdp"
	}
	if err := d.attachPinned("underlay-"+hookShort(hook), ifname, hook, prog); err != nil {
		return "", err
	}
	delete(d.attached, stale)
	return hook, unpinLink(d.linkPin(stale))
}

func hookShort(h Hook) string {
	if h == HookTCX {
		return "tcx"
	}
	return "xdp"
}

// AttachTunnel attaches the tunnel program at tcx ingress of the tunnel
// device. The link is not pinned: the device goes away with the daemon.
func (d *Datapath) AttachTunnel(ifname string) error {
	iface, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("attach tunnel program to %s: %w", ifname, err)
	}
	ifindex, prog := iface.Attrs().Index, d.tunnel.FromTunnel
	if old := d.tunnelLink; old != nil {
		// Still attached to this device: update in place (no gap), and
		// take first place back if a program was put in front.
		if info, err := old.Info(); err == nil && linkIfindex(info) == ifindex && old.Update(prog) == nil {
			nl, err := placeFirst(ifindex, prog, old)
			if nl != old {
				old.Close()
				d.tunnelLink = nl
			}
			d.record("tunnel", ifname, ifindex, HookTCX, prog, "")
			return wrapIf(err, "make tunnel program first on %s", ifname)
		}
		old.Close()
		d.tunnelLink = nil
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
	if err != nil {
		return fmt.Errorf("attach tunnel program to %s: %w", ifname, err)
	}
	d.tunnelLink = l
	d.record("tunnel", ifname, ifindex, HookTCX, prog, "")
	return nil
}

// Attachments lists what this daemon attached.
func (d *Datapath) Attachments() []Attachment {
	out := make([]Attachment, 0, len(d.attached))
	for _, a := range d.attached {
		out = append(out, a)
	}
	return out
}

// PinnedENILinks lists the interface names that have a pinned ENI link,
// including ones a previous daemon left.
func (d *Datapath) PinnedENILinks() []string {
	entries, _ := os.ReadDir(filepath.Join(d.dir, "links"))
	var out []string
	for _, e := range entries {
		if n := e.Name(); len(n) > 4 && n[:4] == "eni-" {
			out = append(out, n[4:])
		}
	}
	return out
}

func unpinLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return os.Remove(path)
	}
	defer l.Close()
	return l.Unpin()
}

// Programs returns the loaded programs, for BPF_PROG_TEST_RUN in tests and
// benchmarks: the ENI program (tc), the tunnel program (tc) and the underlay
// filter (XDP).
func (d *Datapath) Programs() (eni, tunnel, underlay *ebpf.Program) {
	return d.eni.FromWorkload, d.tunnel.FromTunnel, d.underlayXDP.FromUnderlayXdp
}

// ENIXDP returns the XDP flavour of the ENI program.
func (d *Datapath) ENIXDP() *ebpf.Program { return d.eniXDP.FromWorkloadXdp }

// UnderlayTC returns the tc flavour of the underlay filter.
func (d *Datapath) UnderlayTC() *ebpf.Program { return d.underlay.FromUnderlay }
