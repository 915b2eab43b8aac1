package lab

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// eniMTU is the MTU of both ends of an ENI's veth pair.
const eniMTU = 1500

// rackPort is the name of host's port on the rack bridge.
func rackPort(host string) string { return cut15("r-" + host) }

func cut15(s string) string {
	if len(s) > 15 {
		return s[:15]
	}
	return s
}

func underlayIf(h *topology.Host) string {
	if h.UnderlayInterface != "" {
		return h.UnderlayInterface
	}
	return "eth0"
}

func hostMTU(h *topology.Host) int {
	if h.MTU > 0 {
		return h.MTU
	}
	return 1500
}

func eniIf(e *topology.ENI) string {
	if e.Interface != "" {
		return e.Interface
	}
	return topology.DefaultInterface(e.Name)
}

// eniMAC returns the ENI's MAC, defaulting to 02:00 + the four bytes of its IP.
func eniMAC(e *topology.ENI) net.HardwareAddr {
	if len(e.MAC) == 6 {
		return e.MAC
	}
	return topology.DefaultMAC(e.IP)
}

// findHost, findENI and findSubnet look names up in a topology.
func findHost(t *topology.Topology, name string) *topology.Host {
	for i := range t.Hosts {
		if t.Hosts[i].Name == name {
			return &t.Hosts[i]
		}
	}
	return nil
}

func findENI(t *topology.Topology, name string) *topology.ENI {
	for i := range t.ENIs {
		if t.ENIs[i].Name == name {
			return &t.ENIs[i]
		}
	}
	return nil
}

func findSubnet(t *topology.Topology, name string) *topology.Subnet {
	for i := range t.VPCs {
		for j := range t.VPCs[i].Subnets {
			if t.VPCs[i].Subnets[j].Name == name {
				return &t.VPCs[i].Subnets[j]
			}
		}
	}
	return nil
}

// checkLabTopology checks what the lab needs beyond a valid topology:
// names usable in namespace names and interface names that do not collide.
func checkLabTopology(t *topology.Topology) error {
	var errs []error
	ports := map[string]string{}
	underlay := map[netip.Addr]string{}
	hostIfs := map[string]map[string]string{}
	for i := range t.Hosts {
		h := &t.Hosts[i]
		if err := checkName("host", h.Name); err != nil {
			errs = append(errs, err)
		}
		if !h.UnderlayIP.Is4() {
			errs = append(errs, fmt.Errorf("host %s: underlay_ip %s is not IPv4", h.Name, h.UnderlayIP))
		}
		if o, dup := underlay[h.UnderlayIP]; dup {
			errs = append(errs, fmt.Errorf("hosts %s and %s: same underlay_ip %s", o, h.Name, h.UnderlayIP))
		}
		underlay[h.UnderlayIP] = h.Name
		p := rackPort(h.Name)
		if o, dup := ports[p]; dup {
			errs = append(errs, fmt.Errorf("hosts %s and %s: rack port name %s collides (host names agree in their first 13 characters)", o, h.Name, p))
		}
		ports[p] = h.Name
		hostIfs[h.Name] = map[string]string{
			"lo":                      "the loopback",
			underlayIf(h):             "the underlay interface",
			tunnel.DeviceName(h.Name): "the tunnel device",
		}
	}
	for i := range t.ENIs {
		e := &t.ENIs[i]
		if err := checkName("eni", e.Name); err != nil {
			errs = append(errs, err)
		}
		ifs, ok := hostIfs[e.Host]
		if !ok {
			errs = append(errs, fmt.Errorf("eni %s: unknown host %s", e.Name, e.Host))
			continue
		}
		if findSubnet(t, e.Subnet) == nil {
			errs = append(errs, fmt.Errorf("eni %s: unknown subnet %s", e.Name, e.Subnet))
		}
		n := eniIf(e)
		if o, dup := ifs[n]; dup {
			errs = append(errs, fmt.Errorf("eni %s: interface %s on host %s collides with %s", e.Name, n, e.Host, o))
		}
		ifs[n] = "eni " + e.Name
	}
	return errors.Join(errs...)
}

// prepareKeys gives every host of t a private key in its state directory
// (generated unless one is already there) and sets the host's public key
// from it, so that the key the daemon uses and the key its peers expect
// always agree.
func prepareKeys(t *topology.Topology, dir string) error {
	for i := range t.Hosts {
		h := &t.Hosts[i]
		sd := filepath.Join(dir, hostsDir, h.Name)
		k, err := tunnel.LoadOrCreateKey(sd)
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		h.PublicKey = k.PublicKey().String()
	}
	return nil
}

// resolvePaths makes the relative file paths of t absolute inside the lab
// directory dir. A relative preshared key file that is not in dir is copied
// from srcDir (the directory of the given topology file) when it exists
// there, and generated otherwise.
func resolvePaths(t *topology.Topology, dir, srcDir string) error {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if p := t.Tunnel.PresharedKeyFile; p != "" && !filepath.IsAbs(p) {
		dst := abs(p)
		t.Tunnel.PresharedKeyFile = dst
		if err := ensurePSK(dst, filepath.Join(srcDir, p)); err != nil {
			return err
		}
	}
	for i := range t.FlowLogs {
		kind, target, err := topology.SplitDestination(t.FlowLogs[i].Destination)
		if err == nil && (kind == topology.DestFile || kind == topology.DestJSONL) {
			p := abs(target)
			t.FlowLogs[i].Destination = kind + "://" + p
			mkParent(p)
		}
	}
	for i := range t.MirrorSessions {
		if p := t.MirrorSessions[i].Target.Pcap; p != "" {
			t.MirrorSessions[i].Target.Pcap = abs(p)
			mkParent(abs(p))
		}
	}
	return nil
}

// mkParent creates the directory of an output file when its path names no
// per-host placeholder; the daemon creates what it needs anyway.
func mkParent(p string) {
	if d := filepath.Dir(p); !strings.Contains(d, "{") {
		_ = os.MkdirAll(d, 0o755)
	}
}

// ensurePSK makes sure the preshared key file dst exists (mode 0600).
func ensurePSK(dst, src string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("preshared key %s: %w", dst, err)
	}
	if k, err := tunnel.ReadKeyFile(src); err == nil {
		return tunnel.WriteKeyFile(dst, k)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("preshared key %s: %w", src, err)
	}
	var k tunnel.Key
	if _, err := rand.Read(k[:]); err != nil {
		return err
	}
	if err := tunnel.WriteKeyFile(dst, k); err != nil {
		return fmt.Errorf("preshared key %s: %w", dst, err)
	}
	return nil
}

// writeTopology writes the daemons' copy of the topology atomically.
func writeTopology(path string, t *topology.Topology) error {
	data, err := topology.Marshal(t)
	if err != nil {
		return fmt.Errorf("marshal topology: %w", err)
	}
	return writeAtomic(path, data, 0o644)
}

// buildRack creates the rack namespace with its bridge.
func buildRack(ns string) error {
	if err := createNS(ns); err != nil {
		return err
	}
	h, nsh, err := nsHandle(ns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	if err := linkUp(h, ns, "lo"); err != nil {
		return err
	}
	la := netlink.NewLinkAttrs()
	la.Name = bridgeName
	// A rack switch, not a multicast router: without snooping the bridge
	// sends no IGMP/MLD of its own onto the underlay.
	snooping := false
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la, MulticastSnooping: &snooping}); err != nil {
		return fmt.Errorf("add bridge %s in netns %s: %w", bridgeName, ns, err)
	}
	return linkUp(h, ns, bridgeName)
}

// buildHost creates host's namespace and its underlay interface, plugged
// into the rack bridge in rackNS, with a /32 address and a link-scope route
// to every other host.
func buildHost(rackNS, ns string, t *topology.Topology, host *topology.Host) error {
	if err := createNS(ns); err != nil {
		return err
	}
	hh, hns, err := nsHandle(ns)
	if err != nil {
		return err
	}
	defer hns.Close()
	defer hh.Close()
	if err := linkUp(hh, ns, "lo"); err != nil {
		return err
	}

	rh, br, done, err := rackBridge(rackNS)
	if err != nil {
		return err
	}
	defer done()

	port, under, mtu := rackPort(host.Name), underlayIf(host), hostMTU(host)
	la := netlink.NewLinkAttrs()
	la.Name = port
	la.MTU = mtu
	la.MasterIndex = br.Attrs().Index
	veth := netlink.NewVeth(la)
	veth.PeerName = under
	veth.PeerMTU = uint32(mtu)
	veth.PeerNamespace = netlink.NsFd(hns)
	if err := rh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s (netns %s) / %s (netns %s): %w", port, rackNS, under, ns, err)
	}
	if err := linkUp(rh, rackNS, port); err != nil {
		return err
	}

	link, err := hh.LinkByName(under)
	if err != nil {
		return fmt.Errorf("interface %s in netns %s: %w", under, ns, err)
	}
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(host.UnderlayIP, 32))}
	if err := hh.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s to %s in netns %s: %w", addr.IPNet, under, ns, err)
	}
	if err := hh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", under, ns, err)
	}
	for i := range t.Hosts {
		peer := &t.Hosts[i]
		if peer.Name == host.Name {
			continue
		}
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       ipNet(netip.PrefixFrom(peer.UnderlayIP, 32)),
			Scope:     netlink.SCOPE_LINK,
		}
		if err := hh.RouteAdd(r); err != nil {
			return fmt.Errorf("route %s dev %s in netns %s: %w", r.Dst, under, ns, err)
		}
	}
	return nil
}

// buildENI creates the workload namespace of e with eth0 (the ENI's MAC and
// address, MTU 1500, default route via the subnet's .1, IPv6 off), joined by
// a veth pair to e's interface in the host namespace hostNS, which is left
// down for the daemon to bring up after attaching.
func buildENI(hostNS, ns string, t *topology.Topology, e *topology.ENI) error {
	sub := findSubnet(t, e.Subnet)
	if sub == nil {
		return fmt.Errorf("eni %s: unknown subnet %s", e.Name, e.Subnet)
	}
	if err := createNS(ns); err != nil {
		return err
	}
	// Before any interface appears, so that none ever gets an IPv6 address.
	if err := inNS(ns, disableIPv6); err != nil {
		return fmt.Errorf("disable IPv6 in netns %s: %w", ns, err)
	}
	eh, ens, err := nsHandle(ns)
	if err != nil {
		return err
	}
	defer ens.Close()
	defer eh.Close()
	if err := linkUp(eh, ns, "lo"); err != nil {
		return err
	}
	hh, hns, err := nsHandle(hostNS)
	if err != nil {
		return err
	}
	defer hns.Close()
	defer hh.Close()

	if e.IsTap() {
		// The daemon makes the tap; the workload side is a veth pair
		// inside the namespace whose other end a frame pump (or a VM)
		// joins to the tap (tap.go).
		if err := buildTapWorkload(eh, ns, e); err != nil {
			return err
		}
	} else {
		hostIf := eniIf(e)
		la := netlink.NewLinkAttrs()
		la.Name = hostIf
		la.MTU = eniMTU
		veth := netlink.NewVeth(la)
		veth.PeerName = "eth0"
		veth.PeerMTU = eniMTU
		veth.PeerHardwareAddr = eniMAC(e)
		veth.PeerNamespace = netlink.NsFd(ens)
		if err := hh.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s (netns %s) / eth0 (netns %s): %w", hostIf, hostNS, ns, err)
		}
		// The host side stays down: the host's daemon brings it up once the
		// ENI program is attached, so the workload's frames never reach the
		// host's stack unchecked (SPEC §10, ordering).
	}

	link, err := eh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("interface eth0 in netns %s: %w", ns, err)
	}
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(e.IP, sub.CIDR.Bits()))}
	if err := eh.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s to eth0 in netns %s: %w", addr.IPNet, ns, err)
	}
	if err := eh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set eth0 up in netns %s: %w", ns, err)
	}
	gw := sub.CIDR.Masked().Addr().Next()
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
	if !sub.CIDR.Contains(gw) || sub.CIDR.Bits() >= 31 {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := eh.RouteAdd(r); err != nil {
		return fmt.Errorf("default route via %s dev eth0 in netns %s: %w", gw, ns, err)
	}
	return nil
}

// deleteENI removes an ENI's veth pair (through its host side) and namespace.
func deleteENI(hostNS, ns, hostIf string) error {
	var errs []error
	if hh, hns, err := nsHandle(hostNS); err == nil {
		if l, err := hh.LinkByName(hostIf); err == nil {
			if err := hh.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete %s in netns %s: %w", hostIf, hostNS, err))
			}
		}
		hh.Close()
		hns.Close()
	}
	if err := deleteNS(ns); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// disableIPv6 turns IPv6 off in the calling thread's network namespace, for
// existing and future interfaces.
func disableIPv6() error {
	for _, p := range []string{
		"/proc/sys/net/ipv6/conf/all/disable_ipv6",
		"/proc/sys/net/ipv6/conf/default/disable_ipv6",
	} {
		err := os.WriteFile(p, []byte("1\n"), 0o644)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // kernel without IPv6
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func linkUp(h *netlink.Handle, ns, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s in netns %s: %w", name, ns, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", name, ns, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// sameENI reports whether two ENIs need the same lab plumbing.
func sameENI(a, b *topology.ENI, ta, tb *topology.Topology) bool {
	sa, sb := findSubnet(ta, a.Subnet), findSubnet(tb, b.Subnet)
	if sa == nil || sb == nil {
		return false
	}
	return a.Host == b.Host && a.IP == b.IP && bytes.Equal(eniMAC(a), eniMAC(b)) &&
		eniIf(a) == eniIf(b) && sa.CIDR == sb.CIDR && a.IsTap() == b.IsTap() && a.TapMultiQueue == b.TapMultiQueue
}
