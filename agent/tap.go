package agent

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/plan"
)

// tapMTU is the MTU of a tap ENI, as of a veth ENI's ends.
const tapMTU = 1500

// ensureTaps creates the persistent tap of every tap ENI that has none yet
// (SPEC §12): with virtio-net headers so a VMM gets the offloads,
// multi-queue when the ENI says tap_multi_queue, owned by its tap_owner, and down: the caller brings it up
// only after the ENI program is attached. A tap that exists is kept (a
// restarted daemon finds its taps, and a VMM may hold them open); an
// interface of that name that is no tap is an error, and left alone.
func ensureTaps(enis []dataplane.ENI) []error {
	var errs []error
	for _, e := range enis {
		if !e.Tap {
			continue
		}
		if err := ensureTap(e.Interface, e.TapOwner, e.TapMultiQueue); err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: %w", e.Name, err))
		}
	}
	return errs
}

func ensureTap(ifname string, owner uint32, multiQueue bool) error {
	l, err := netlink.LinkByName(ifname)
	if err == nil {
		t, ok := l.(*netlink.Tuntap)
		if !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
			return fmt.Errorf("interface %s exists and is a %s, not a tap", ifname, l.Type())
		}
		same := t.Flags&netlink.TUNTAP_VNET_HDR != 0 && (t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0) == multiQueue && t.Owner == owner
		if same {
			return dataplane.MarkOwned(ifname, "tap of an ENI") // one made before the marks
		}
		// Made for other settings (the topology changed, or someone else
		// made it): made again while no VMM holds it, else left alone.
		if t.Queues > 0 {
			return fmt.Errorf("tap %s is open (%d queues) with other settings than the ENI's (vnet headers, tap_multi_queue %v, tap_owner %d); it is made again once its VMM closes it",
				ifname, t.Queues, multiQueue, owner)
		}
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("delete tap %s to make it again: %w", ifname, err)
		}
	} else {
		var missing netlink.LinkNotFoundError
		if !errors.As(err, &missing) {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = ifname
	la.MTU = tapMTU
	// A VMM opens the tap with the same queue setting (TUNSETIFF refuses
	// a mismatch): Firecracker and QEMU with one queue open it without
	// IFF_MULTI_QUEUE.
	flags := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR
	if multiQueue {
		flags |= netlink.TUNTAP_MULTI_QUEUE
	}
	tap := &netlink.Tuntap{
		LinkAttrs: la,
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     flags,
		Queues:    1, // netlink opens one queue to create it; closed below
		Owner:     owner,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create tap %s: %w", ifname, err)
	}
	for _, f := range tap.Fds {
		f.Close() // persistent: the tap stays for a VMM to open
	}
	if err := dataplane.MarkOwned(ifname, "tap of an ENI"); err != nil {
		return err
	}
	// netlink.LinkAdd sets the MTU only through attributes a tuntap add
	// does not send.
	if l, err := netlink.LinkByName(ifname); err == nil && l.Attrs().MTU != tapMTU {
		if err := netlink.LinkSetMTU(l, tapMTU); err != nil {
			return fmt.Errorf("set MTU of tap %s: %w", ifname, err)
		}
	}
	return nil
}

// removeTap deletes the tap the daemon made for a removed ENI; a VMM that
// still holds it open loses its queues. Anything else of that name is left.
func removeTap(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil || l.Type() != "tuntap" {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete tap %s: %w", ifname, err)
	}
	return nil
}

// tapInterfaces lists the interfaces of p's tap ENIs (none for nil).
func tapInterfaces(p *plan.Host) map[string]bool {
	out := map[string]bool{}
	if p == nil || p.Datapath == nil {
		return out
	}
	for _, e := range p.Datapath.ENIs {
		if e.Tap {
			out[e.Interface] = true
		}
	}
	return out
}

// eniHook is the hook an ENI's program goes to: the operator's for taps
// (--tap-hook) or for all ENIs (--eni-hook), else by interface type
// (dataplane.ChooseHook).
func (a *Agent) eniHook(e dataplane.ENI) dataplane.Hook {
	if e.Tap && a.opts.TapHook != "" {
		return a.opts.TapHook
	}
	return a.opts.ENIHook
}
