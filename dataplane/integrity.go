package dataplane

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// IntegrityProblem is one attachment that is not as vpcd made it.
type IntegrityProblem struct {
	Attachment Attachment
	// Reason is "detached" (no program of ours there), "replaced"
	// (another program in its place), "not_first" (ours is there on a
	// tcx hook, but another runs before it) or "interface" (the
	// interface is gone or unreadable).
	Reason string
	Detail string
}

// CheckIntegrity verifies that every program vpcd attached is still
// attached where it belongs and is the program vpcd loaded (by program ID,
// which the kernel never reuses while the program lives; the ID also pins
// the program's tag).
func (d *Datapath) CheckIntegrity() []IntegrityProblem {
	var out []IntegrityProblem
	for _, a := range d.Attachments() {
		if p := checkAttachment(a); p != nil {
			out = append(out, *p)
		}
	}
	return out
}

func checkAttachment(a Attachment) *IntegrityProblem {
	switch Hook(a.Hook) {
	case HookXDP:
		l, err := netlink.LinkByIndex(a.Ifindex)
		if err != nil {
			return &IntegrityProblem{Attachment: a, Reason: "interface", Detail: err.Error()}
		}
		x := l.Attrs().Xdp
		if x == nil || !x.Attached {
			return &IntegrityProblem{Attachment: a, Reason: "detached", Detail: "no XDP program"}
		}
		if ebpf.ProgramID(x.ProgId) != a.ProgramID {
			return &IntegrityProblem{Attachment: a, Reason: "replaced", Detail: fmt.Sprintf("XDP program %d instead of %d", x.ProgId, a.ProgramID)}
		}
	default:
		res, err := link.QueryPrograms(link.QueryOptions{Target: a.Ifindex, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return &IntegrityProblem{Attachment: a, Reason: "interface", Detail: err.Error()}
		}
		if len(res.Programs) == 0 {
			return &IntegrityProblem{Attachment: a, Reason: "detached", Detail: "no tcx program"}
		}
		// Ours must run first: a program before it could pass packets
		// around every check.
		if res.Programs[0].ID != a.ProgramID {
			for _, p := range res.Programs[1:] {
				if p.ID == a.ProgramID {
					return &IntegrityProblem{Attachment: a, Reason: "not_first", Detail: fmt.Sprintf("tcx program %d runs before %d", res.Programs[0].ID, a.ProgramID)}
				}
			}
			return &IntegrityProblem{Attachment: a, Reason: "replaced", Detail: fmt.Sprintf("tcx program %d runs first, not %d", res.Programs[0].ID, a.ProgramID)}
		}
	}
	return nil
}

// Repair attaches a program again where a check found it missing or
// displaced. On tcx it makes the program first again (placeFirst): a
// foreign program put in front of it ends up behind it.
func (d *Datapath) Repair(p IntegrityProblem) error {
	a := p.Attachment
	switch a.Program { // the programs' names in bpf/*.c
	case "from_workload", "from_workload_xdp":
		_, err := d.AttachENI(a.Interface, Hook(a.Hook))
		return err
	case "from_underlay", "from_underlay_xdp":
		_, err := d.AttachUnderlay(a.Interface, Hook(a.Hook))
		return err
	case "from_tunnel":
		return d.AttachTunnel(a.Interface)
	case "mirror_inject":
		_, err := d.EnsureMirrorInject()
		return err
	}
	return fmt.Errorf("unknown program %q on %s", a.Program, a.Interface)
}
