// Command vpcd-cni is vpcd's CNI plugin (SPEC §12; CNI spec 1.0.0 and
// 1.1.0: ADD, DEL, CHECK, VERSION, STATUS, GC). A container runtime runs
// it to join a container to a VPC subnet: the plugin asks the vpcd daemon
// of its host, over the daemon's control socket, for a dynamic ENI (the
// daemon makes the veth pair, gives the ENI the lowest free address of
// the subnet through the etcd control plane, attaches the ENI's program
// and publishes it to every host), then moves the veth's peer into the
// container's network namespace and configures it there.
//
// Network configuration:
//
//	{"cniVersion": "1.0.0", "name": "blue-web", "type": "vpcd-cni",
//	 "subnet": "blue-web", "security_groups": ["web"],
//	 "socket": "/run/vpcd/vpcd.sock"}
//
// Errors are CNI error JSON on stdout with a non-zero exit; the codes of
// this plugin are the Code* constants below.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.PluginSupports("1.0.0", "1.1.0"), "vpcd-cni: containers join a vpcd VPC subnet")
}
