package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/topology"
)

// Error codes of this plugin (CNI reserves 0–99; see also the spec's
// 7 invalid configuration, 8 invalid netns, 11 try again later and 50
// plugin not available, which it uses as the spec means them).
const (
	CodeUnknownSubnet = 100
	CodeUnknownGroup  = 101
	CodeSubnetFull    = 102
	CodeFileMode      = 103
	CodeNameTaken     = 104
	CodeExists        = 105
)

// netConf is the network configuration.
type netConf struct {
	types.PluginConf
	Subnet         string   `json:"subnet"`
	SecurityGroups []string `json:"security_groups"`
	Socket         string   `json:"socket"`
}

func loadConf(args *skel.CmdArgs) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(args.StdinData, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "malformed network configuration", err.Error())
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "malformed prevResult", err.Error())
	}
	if c.Socket == "" {
		c.Socket = control.DefaultSocket
	}
	return c, nil
}

// needSubnet checks what ADD needs beyond the common fields.
func (c *netConf) needSubnet() error {
	if c.Subnet == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, `network configuration: "subnet" is required`, "")
	}
	for _, g := range c.SecurityGroups {
		if g == "" {
			return types.NewError(types.ErrInvalidNetworkConfig, `network configuration: empty name in "security_groups"`, "")
		}
	}
	return nil
}

// eniName names the dynamic ENI of one container interface after the
// container (SPEC 12): the container ID itself for the usual interface,
// eth0, when the ID is a name a topology could hold (containerd's and
// CRI-O's 64 hex digits are). Otherwise the ID with what a name may not
// hold left out, the interface, and a hash of both, so that the same pair
// always gets the same name (DEL and CHECK find it again without state)
// and no two pairs share one.
func eniName(containerID, ifname string) string {
	// (An ID that starts "cni-" takes the other form, which such names
	// are kept for.)
	if ifname == "eth0" && topology.ValidName(containerID) && !strings.HasPrefix(containerID, "cni-") {
		return containerID
	}
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	keep := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
				return r
			}
			return -1
		}, s)
	}
	return "cni-" + keep(containerID) + "-" + keep(ifname) + "-" + hex.EncodeToString(sum[:4])
}

// cniError turns a daemon error into a CNI error.
func cniError(what string, err error) error {
	var code uint
	switch control.ENIErrorCode(err) {
	case control.CodeUnknownSubnet:
		code = CodeUnknownSubnet
	case control.CodeUnknownGroup:
		code = CodeUnknownGroup
	case control.CodeSubnetFull:
		code = CodeSubnetFull
	case control.CodeFileMode:
		code = CodeFileMode
	case control.CodeNameTaken:
		code = CodeNameTaken
	case control.CodeExists:
		code = CodeExists
	case control.CodeNoDaemon, control.CodeNotReady:
		code = types.ErrTryAgainLater
	case control.CodeInvalid:
		code = types.ErrInvalidNetworkConfig
	default:
		code = types.ErrInternal
	}
	msg := what + ": " + err.Error()
	switch code {
	case CodeFileMode:
		msg = what + ": dynamic ENIs need the etcd control plane"
	case types.ErrTryAgainLater:
		if control.ENIErrorCode(err) == control.CodeNoDaemon {
			msg = what + ": the vpcd daemon is not running"
		}
	}
	return types.NewError(code, msg, err.Error())
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := conf.needSubnet(); err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "open "+args.Netns, err.Error())
	}
	defer netns.Close()

	name := eniName(args.ContainerID, args.IfName)
	e, err := control.AddENI(conf.Socket, control.DynamicENI{
		Name: name, Subnet: conf.Subnet, SecurityGroups: conf.SecurityGroups,
		Attachment: control.ENIAttachment{Network: conf.Name, ContainerID: args.ContainerID, IfName: args.IfName},
	})
	if err != nil {
		return cniError("add ENI", err)
	}
	addr, gw, mac, err := parseENI(e)
	if err == nil {
		err = plumb(netns, e, args.IfName, addr, gw, mac)
	}
	if err != nil {
		// Leave nothing behind: the daemon deletes the ENI, its address
		// and the veth pair, both ends wherever they are (the container's
		// end too, if it got there). Nothing else in the container is
		// touched: an interface of that name there is not ours.
		if derr := control.DeleteENI(conf.Socket, name); derr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", derr))
		}
		return types.NewError(types.ErrInternal, "set up "+args.IfName+" in "+args.Netns, err.Error())
	}

	hostMAC := ""
	if l, err := netlink.LinkByName(e.Interface); err == nil {
		hostMAC = l.Attrs().HardwareAddr.String()
	}
	result := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
		}
		result = prev
	}
	base := len(result.Interfaces)
	result.Interfaces = append(result.Interfaces,
		&current.Interface{Name: e.Interface, Mac: hostMAC},
		&current.Interface{Name: args.IfName, Mac: mac.String(), Mtu: e.MTU, Sandbox: args.Netns})
	result.IPs = append(result.IPs, &current.IPConfig{Interface: current.Int(base + 1), Address: *addr, Gateway: gw})
	result.Routes = append(result.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw})
	return types.PrintResult(result, conf.CNIVersion)
}

func parseENI(e *control.DynamicENI) (*net.IPNet, net.IP, net.HardwareAddr, error) {
	ip, addr, err := net.ParseCIDR(e.Address)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("daemon's address %q: %w", e.Address, err)
	}
	addr.IP = ip.To4()
	gw := net.ParseIP(e.Gateway).To4()
	if gw == nil {
		return nil, nil, nil, fmt.Errorf("daemon's gateway %q", e.Gateway)
	}
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("daemon's MAC %q: %w", e.MAC, err)
	}
	return addr, gw, mac, nil
}

// plumb moves the veth's peer into netns as ifname and configures it: the
// ENI's MAC, MTU, IPv6 off, the address, up, the default route via the
// subnet's router.
func plumb(netns ns.NetNS, e *control.DynamicENI, ifname string, addr *net.IPNet, gw net.IP, mac net.HardwareAddr) error {
	peer, err := netlink.LinkByName(e.Peer)
	if err != nil {
		return fmt.Errorf("veth peer %s: %w", e.Peer, err)
	}
	if err := netlink.LinkSetNsFd(peer, int(netns.Fd())); err != nil {
		return fmt.Errorf("move %s into %s: %w", e.Peer, netns.Path(), err)
	}
	return netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(e.Peer)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, ifname); err != nil {
			return fmt.Errorf("rename %s to %s: %w", e.Peer, ifname, err)
		}
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("MAC of %s: %w", ifname, err)
		}
		if err := netlink.LinkSetMTU(l, e.MTU); err != nil {
			return fmt.Errorf("MTU of %s: %w", ifname, err)
		}
		// IPv6 stays off until vpcd is dual-stack: no link-local address,
		// no router solicitations.
		err = os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6", []byte("1\n"), 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disable IPv6 on %s: %w", ifname, err)
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: addr}); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr, ifname, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", ifname, err)
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}
		if ones, _ := addr.Mask.Size(); ones >= 31 {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s dev %s: %w", gw, ifname, err)
		}
		return nil
	})
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	// The daemon deletes the ENI, waits until its datapath let it go,
	// and deletes the veth pair: both ends, so the container's interface
	// too (the namespace may be gone already; it is not needed). Deleting
	// the container's end first would pull the interface from under an
	// ENI the daemon still runs.
	name := eniName(args.ContainerID, args.IfName)
	if l, err := control.ListENIs(conf.Socket, conf.Name); err == nil {
		if i := findENI(l, args.ContainerID, args.IfName); i >= 0 {
			name = l[i].Name // made under another name (an older plugin's)
		}
	}
	if err := control.DeleteENI(conf.Socket, name); err != nil {
		return cniError("delete ENI", err)
	}
	return nil
}

// findENI returns the index in l of the ENI of container interface
// (id, ifname): by the attachment the daemon recorded, whatever name the
// ENI got, else by the name eniName gives; -1 when there is none.
func findENI(l []control.DynamicENI, id, ifname string) int {
	if i := slices.IndexFunc(l, func(e control.DynamicENI) bool {
		return e.Attachment.ContainerID == id && e.Attachment.IfName == ifname
	}); i >= 0 {
		return i
	}
	name := eniName(id, ifname)
	return slices.IndexFunc(l, func(e control.DynamicENI) bool { return e.Name == name })
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := conf.needSubnet(); err != nil {
		return err
	}
	name := eniName(args.ContainerID, args.IfName)
	l, err := control.ListENIs(conf.Socket, conf.Name)
	if err != nil {
		return cniError("check", err)
	}
	i := findENI(l, args.ContainerID, args.IfName)
	if i < 0 {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("check: the daemon has no ENI %s for %s/%s", name, args.ContainerID, args.IfName), "")
	}
	e := &l[i]
	if !e.Attached {
		return types.NewError(types.ErrInternal, fmt.Sprintf("check: ENI %s is not attached on this host", name), "")
	}
	if e.Subnet != conf.Subnet || !slices.Equal(e.SecurityGroups, conf.SecurityGroups) {
		return types.NewError(types.ErrInternal, fmt.Sprintf("check: ENI %s is in subnet %s with groups %v, the configuration says %s and %v",
			name, e.Subnet, e.SecurityGroups, conf.Subnet, conf.SecurityGroups), "")
	}
	addr, gw, mac, err := parseENI(e)
	if err != nil {
		return types.NewError(types.ErrInternal, "check", err.Error())
	}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
		}
		if !slices.ContainsFunc(prev.IPs, func(c *current.IPConfig) bool { return c.Address.String() == addr.String() }) {
			return types.NewError(types.ErrInternal, fmt.Sprintf("check: prevResult does not hold %s", addr), "")
		}
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "open "+args.Netns, err.Error())
	}
	defer netns.Close()
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("interface %s: %w", args.IfName, err)
		}
		if l.Attrs().HardwareAddr.String() != mac.String() {
			return fmt.Errorf("%s has MAC %s, the ENI %s", args.IfName, l.Attrs().HardwareAddr, mac)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("%s is down", args.IfName)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == addr.String() }) {
			return fmt.Errorf("%s lacks %s", args.IfName, addr)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			ones := 0
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			return ones == 0 && r.Gw.Equal(gw)
		}) {
			return fmt.Errorf("no default route via %s on %s", gw, args.IfName)
		}
		return nil
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "check", err.Error())
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	// An ENI is valid when its attachment is one the runtime lists, by
	// the container and interface the daemon recorded for it (whatever
	// name it was made under), or, without one, by name.
	valid, validName := map[[2]string]bool{}, map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[[2]string{a.ContainerID, a.IfName}] = true
		validName[eniName(a.ContainerID, a.IfName)] = true
	}
	l, err := control.ListENIs(conf.Socket, conf.Name)
	if err != nil {
		return cniError("gc", err)
	}
	var errs []error
	for _, e := range l {
		if at := e.Attachment; at.ContainerID != "" && valid[[2]string{at.ContainerID, at.IfName}] || at.ContainerID == "" && validName[e.Name] {
			continue
		}
		if err := control.DeleteENI(conf.Socket, e.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrInternal, "gc", err.Error())
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	st, err := control.QueryStatus(conf.Socket)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the vpcd daemon is not running", err.Error())
	}
	switch cp := st.ControlPlane; {
	case cp == nil:
		return types.NewError(types.ErrPluginNotAvailable, "dynamic ENIs need the etcd control plane", "the daemon runs from a topology file")
	case !cp.Connected:
		return types.NewError(types.ErrPluginNotAvailable, "the vpcd daemon is not connected to etcd", strings.Join(cp.Endpoints, ","))
	case !cp.Registered:
		return types.NewError(types.ErrPluginNotAvailable, "the vpcd daemon is not registered in etcd yet", "")
	}
	return nil
}
