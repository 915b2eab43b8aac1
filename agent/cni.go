package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/dataplane"
)

// DynamicENIs is the part of a ControlPlane that keeps dynamic ENIs
// (SPEC §12): ENIs the daemon makes for containers at the request of the
// vpcd-cni plugin. Errors carry control.ENIError codes where the plugin
// must tell them apart (unknown subnet or group, subnet full).
type DynamicENIs interface {
	// CreateENI publishes an ENI of this host named e.Name, in e.Subnet
	// with e.SecurityGroups and host-side interface iface, owned by
	// e.Attachment, with the lowest free address of the subnet; it
	// returns the address with the subnet's prefix length. The same
	// request again returns the same ENI.
	CreateENI(ctx context.Context, e control.DynamicENI, iface string) (netip.Prefix, error)
	// DeleteENI removes a dynamic ENI; one that is not there is no error.
	DeleteENI(ctx context.Context, name string) error
	// ListENIs lists this host's dynamic ENIs, with Address, Interface
	// and Host filled.
	ListENIs(ctx context.Context) ([]control.DynamicENI, error)
}

// dynamicMTU is the MTU of both ends of a dynamic ENI's veth pair.
const dynamicMTU = 1500

// errDynamicFileMode is the answer to a dynamic-ENI request in file mode.
var errDynamicFileMode = &control.ENIError{Code: control.CodeFileMode,
	Msg: "dynamic ENIs need the etcd control plane (vpcd run --etcd); this daemon runs from a topology file"}

// DynamicInterfaces are the host-side and peer interface names of the
// dynamic ENI name: "vc" and "vp" and 12 hex digits of its hash (15
// characters at most, the same on every call).
func DynamicInterfaces(name string) (host, peer string) {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:6])
	return "vc" + h, "vp" + h
}

func (a *Agent) dynamicENIs() (DynamicENIs, error) {
	d, ok := a.opts.ControlPlane.(DynamicENIs)
	if !ok {
		return nil, errDynamicFileMode
	}
	return d, nil
}

// AddENI implements control.ENIManager: it makes the veth pair (both ends
// down, in the daemon's namespace), publishes the ENI, and returns once
// this daemon applied the state that holds it, i.e. its program is
// attached and its host side up. Anything failing undoes what was done.
func (a *Agent) AddENI(req control.DynamicENI) (*control.DynamicENI, error) {
	store, err := a.dynamicENIs()
	if err != nil {
		return nil, err
	}
	if req.Name == "" || req.Subnet == "" || req.Attachment.ContainerID == "" {
		return nil, &control.ENIError{Code: control.CodeInvalid, Msg: "eni-add needs name, subnet and attachment.container_id"}
	}
	hostIf, peer := DynamicInterfaces(req.Name)
	if inUse(hostIf, peer) {
		// A second ADD of a live attachment: its peer is in a container.
		// Nothing here is touched; the caller must not undo anything.
		return nil, &control.ENIError{Code: control.CodeExists,
			Msg: fmt.Sprintf("eni %s is attached already (an ADD without DEL before it?)", req.Name)}
	}
	created, err := makeVeth(hostIf, peer)
	if err != nil {
		return nil, &control.ENIError{Code: control.CodeInternal, Msg: err.Error()}
	}
	undo := func() {
		if created {
			deleteLink(hostIf)
		}
	}
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	// One creation at a time per host: this host's requests do not race
	// each other in etcd; other hosts' do, and the store retries.
	a.dynamic.Lock()
	addr, err := store.CreateENI(ctx, req, hostIf)
	a.dynamic.Unlock()
	if err != nil {
		undo()
		return nil, err
	}
	e, err := a.waitENI(ctx, req.Name, hostIf, true)
	if err != nil {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(a.ctx), 10*time.Second)
		store.DeleteENI(dctx, req.Name)
		dcancel()
		undo()
		return nil, &control.ENIError{Code: control.CodeInternal, Msg: fmt.Sprintf("eni %s: %v", req.Name, err)}
	}
	out := req
	out.Host, out.Interface, out.Peer = a.opts.Host, hostIf, peer
	out.Address, out.MAC, out.MTU, out.Attached = addr.String(), e.mac, dynamicMTU, true
	out.Gateway = gateway(addr).String()
	a.log.Info("dynamic ENI added", "eni", req.Name, "address", out.Address, "interface", hostIf,
		"network", req.Attachment.Network, "container", req.Attachment.ContainerID, "ifname", req.Attachment.IfName)
	return &out, nil
}

// DeleteENI implements control.ENIManager: it removes the ENI from the
// control plane, waits until this daemon applied that (its program then
// stays while the interface exists, dropping all), and deletes the veth
// pair. Deleting what is not there succeeds.
func (a *Agent) DeleteENI(name string) error {
	store, err := a.dynamicENIs()
	if err != nil {
		return err
	}
	hostIf, _ := DynamicInterfaces(name)
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	if err := store.DeleteENI(ctx, name); err != nil {
		return err
	}
	if _, err := a.waitENI(ctx, name, hostIf, false); err != nil {
		a.log.Warn("dynamic ENI deleted; the daemon did not apply that in time, deleting its interface anyway", "eni", name, "err", err)
	}
	if err := deleteLink(hostIf); err != nil {
		return &control.ENIError{Code: control.CodeInternal, Msg: err.Error()}
	}
	a.log.Info("dynamic ENI deleted", "eni", name, "interface", hostIf)
	return nil
}

// ListENIs implements control.ENIManager.
func (a *Agent) ListENIs(network string) ([]control.DynamicENI, error) {
	store, err := a.dynamicENIs()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	all, err := store.ListENIs(ctx)
	if err != nil {
		return nil, err
	}
	var out []control.DynamicENI
	a.state.Lock()
	for _, e := range all {
		if network != "" && e.Attachment.Network != network {
			continue
		}
		_, e.Peer = DynamicInterfaces(e.Name)
		e.Attached = a.state.enis[e.Name] == e.Interface
		for _, pe := range a.state.plan.ENIs {
			if pe.Name == e.Name {
				e.MAC = pe.MAC.String()
			}
		}
		if p, err := netip.ParsePrefix(e.Address); err == nil {
			e.Gateway = gateway(p).String()
		}
		e.MTU = dynamicMTU
		out = append(out, e)
	}
	a.state.Unlock()
	return out, nil
}

// reapDynamic deletes this host's dynamic ENIs whose veth pair is gone:
// the container's namespace went away without a DEL (a runtime that
// crashed), and a veth pair dies with either end's namespace. The ENI's
// address is freed and its routes withdrawn everywhere, instead of the
// daemon failing to attach it on every apply until a GC. Runs in the
// background, one at a time.
func (a *Agent) reapDynamic() {
	store, err := a.dynamicENIs()
	if err != nil || !a.reaping.CompareAndSwap(false, true) {
		return
	}
	// Candidates from the plan: ENIs whose interface is the one a dynamic
	// ENI of their name gets, and that does not exist.
	var gone []string
	a.state.Lock()
	for _, e := range a.state.plan.ENIs {
		if hostIf, _ := DynamicInterfaces(e.Name); hostIf == e.Interface {
			if _, err := netlink.LinkByName(hostIf); err != nil {
				gone = append(gone, e.Name)
			}
		}
	}
	a.state.Unlock()
	if len(gone) == 0 {
		a.reaping.Store(false)
		return
	}
	go func() {
		defer a.reaping.Store(false)
		ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
		defer cancel()
		mine, err := store.ListENIs(ctx)
		if err != nil {
			return
		}
		for _, name := range gone {
			hostIf, _ := DynamicInterfaces(name)
			dynamic := slices.ContainsFunc(mine, func(e control.DynamicENI) bool { return e.Name == name && e.Interface == hostIf })
			if _, err := netlink.LinkByName(hostIf); err == nil || !dynamic {
				continue
			}
			if err := store.DeleteENI(ctx, name); err != nil {
				a.log.Warn("dynamic ENI without its interface: delete", "eni", name, "err", err)
				continue
			}
			a.log.Info("dynamic ENI deleted: its interface is gone (the container's namespace went away without a CNI DEL)",
				"eni", name, "interface", hostIf)
		}
	}()
}

type appliedENI struct{ mac string }

// waitENI waits until the daemon's applied state holds the ENI name
// attached on hostIf (present) or no longer holds it (!present).
func (a *Agent) waitENI(ctx context.Context, name, hostIf string, present bool) (appliedENI, error) {
	for {
		a.applied.Lock()
		changed := a.applied.changed
		a.applied.Unlock()
		a.state.Lock()
		ifname, ok := a.state.enis[name]
		var e appliedENI
		for _, pe := range a.state.plan.ENIs {
			if pe.Name == name {
				e.mac = pe.MAC.String()
			}
		}
		a.state.Unlock()
		if present && ok && ifname == hostIf && e.mac != "" {
			return e, nil
		}
		if !present && !ok {
			return e, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if present {
				return e, errors.New("not attached by this daemon in time (is the state that holds it refused? see the daemon's log)")
			}
			return e, ctx.Err()
		}
	}
}

// gateway is the subnet's router: its first address after the network's.
func gateway(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// makeVeth creates the veth pair hostIf/peer, both ends down, MTU 1500,
// IPv6 off on the host side. It reports whether it created it (false: it
// was there, from an earlier try).
func makeVeth(hostIf, peer string) (bool, error) {
	if _, err := netlink.LinkByName(hostIf); err == nil {
		// From an earlier try or an older daemon: ours all the same.
		return false, dataplane.MarkOwned(hostIf, "veth of a container's ENI")
	}
	la := netlink.NewLinkAttrs()
	la.Name = hostIf
	la.MTU = dynamicMTU
	veth := &netlink.Veth{LinkAttrs: la, PeerName: peer, PeerMTU: dynamicMTU}
	if err := netlink.LinkAdd(veth); err != nil {
		return false, fmt.Errorf("add veth %s/%s: %w", hostIf, peer, err)
	}
	if err := dataplane.MarkOwned(hostIf, "veth of a container's ENI"); err != nil {
		deleteLink(hostIf)
		return false, err
	}
	// Before it is ever up: the host side gets no IPv6 address.
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+hostIf+"/disable_ipv6", []byte("1\n"), 0o644)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		deleteLink(hostIf)
		return false, fmt.Errorf("disable IPv6 on %s: %w", hostIf, err)
	}
	return true, nil
}

// inUse reports whether the veth pair hostIf/peer exists with its peer
// gone from this namespace (moved into a container).
func inUse(hostIf, peer string) bool {
	if _, err := netlink.LinkByName(hostIf); err != nil {
		return false
	}
	_, err := netlink.LinkByName(peer)
	return err != nil
}

// deleteLink deletes the interface name (and so its veth peer) if it exists.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
