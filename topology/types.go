// Package topology defines the vpcd topology file (SPEC §2): its Go types,
// parsing with YAML-path error locations, defaults and validation.
package topology

import (
	"net"
	"net/netip"
	"time"
)

// ProtoAll is the Protocol value of "all" (AWS's -1).
const ProtoAll = -1

// AnyICMP is the ICMPType/ICMPCode value meaning "any".
const AnyICMP = -1

// Topology is the desired state of every host, as read from one file.
// After a successful Parse all defaults are filled in.
type Topology struct {
	Version        int
	AccountID      string // "" when absent
	Tunnel         Tunnel
	Hosts          []Host
	VPCs           []VPC
	SecurityGroups []SecurityGroup
	NetworkACLs    []NetworkACL
	ENIs           []ENI
	FlowLogs       []FlowLog
	MirrorFilters  []MirrorFilter
	MirrorSessions []MirrorSession
	// VMs are the Linux guests `vpcd lab up` boots on tap ENIs (SPEC §12);
	// a daemon ignores them.
	VMs []VM
}

// VM is a guest the lab boots on a tap ENI, one per ENI: in the file an
// ENI's name ("vms: [m1]") or a mapping ("vms: [{eni: m1}]").
type VM struct {
	ENI string
}

// Tunnel holds settings shared by every host pair.
type Tunnel struct {
	PresharedKeyFile string // "" when absent
}

// Host is one machine running one vpcd.
type Host struct {
	Name              string
	UnderlayIP        netip.Addr
	UnderlayInterface string // default "eth0"
	ListenPort        uint16 // default 51820
	PublicKey         string // base64 of 32 bytes; "" when absent
	MTU               int    // underlay MTU, default 1500
	UnderlayAllow     []UnderlayAllow
}

// UnderlayAllow lets the underlay deliver one more kind of traffic to the host.
type UnderlayAllow struct {
	Protocol int    // IP protocol number (tcp=6, udp=17, icmp=1); ProtoAll for all
	Port     uint16 // 0 = any port (or not applicable)
}

// VPC is an isolated tenant network.
type VPC struct {
	Name    string
	VNI     uint32
	CIDR    netip.Prefix
	Subnets []Subnet
}

// Subnet is a CIDR inside a VPC.
type Subnet struct {
	Name       string
	CIDR       netip.Prefix
	NetworkACL string // "" = default NACL (allow all)
	VPC        string // name of the VPC that holds it (filled by Parse)
}

// SGRule is one allow rule of a security group.
type SGRule struct {
	Protocol int // 0..255 or ProtoAll
	FromPort int // tcp/udp only; 0..65535; both 0 and 65535 when omitted
	ToPort   int
	ICMPType int          // icmp only; AnyICMP when omitted
	ICMPCode int          // icmp only; AnyICMP when omitted
	CIDR     netip.Prefix // valid when the rule names a CIDR
	Group    string       // source_group (ingress) / destination_group (egress)
}

// SecurityGroup is a stateful set of allow rules.
type SecurityGroup struct {
	Name          string
	VPC           string
	Ingress       []SGRule
	Egress        []SGRule
	EgressOmitted bool // true when the file had no egress key: allow all out
}

// ACLRule is one numbered rule of a network ACL.
type ACLRule struct {
	RuleNumber int    // 1..32766
	Action     string // "allow" or "deny"
	Protocol   int
	FromPort   int
	ToPort     int
	ICMPType   int
	ICMPCode   int
	CIDR       netip.Prefix
}

// NetworkACL is a stateless, ordered rule list applied at a subnet boundary.
// Ingress and Egress are sorted by RuleNumber after Parse.
type NetworkACL struct {
	Name    string
	VPC     string
	Ingress []ACLRule
	Egress  []ACLRule
}

// ENI is a workload's network interface.
type ENI struct {
	Name            string
	Host            string
	Subnet          string
	IP              netip.Addr
	Instance        string // "" when absent
	MAC             net.HardwareAddr
	SecurityGroups  []string
	SourceDestCheck bool   // default true
	Interface       string // default "vpc-"+Name cut to 15 characters
	// MaxConnections is how many connections the ENI may track at once
	// (SPEC §10); 0 when absent: its host's default share (see
	// Topology.MaxConnections).
	MaxConnections int
	// InterfaceType is what the host-side device is (SPEC §12): "" for
	// a veth (the default; Parse leaves "veth" as "") or InterfaceTap, a
	// persistent tap the daemon creates for a VMM to open.
	InterfaceType string
	// TapOwner is the uid that may open a tap ENI's device without
	// CAP_NET_ADMIN; 0 (root only) when absent.
	TapOwner uint32
	// TapMultiQueue makes a tap ENI's device multi-queue (IFF_MULTI_QUEUE),
	// for a VMM that opens one queue per vCPU (QEMU with queues=N). A VMM
	// must open a tap with the same setting, and Firecracker (and QEMU's
	// default of one queue) open it single-queue: false when absent.
	TapMultiQueue bool
}

// Interface types of an ENI.
const (
	InterfaceVeth = "veth"
	InterfaceTap  = "tap"
)

// IsTap reports whether the ENI's host-side device is a tap the daemon
// creates.
func (e *ENI) IsTap() bool { return e.InterfaceType == InterfaceTap }

// FlowLog describes one flow-log subscription.
type FlowLog struct {
	Name                string
	Resource            string // as written, e.g. "vpc:blue"
	ResourceKind        string // "vpc", "subnet" or "eni"
	ResourceName        string
	TrafficType         string // ALL, ACCEPT or REJECT
	AggregationInterval time.Duration
	Format              string // "default" or a ${field} string
	Destination         string
}

// PortRange is an inclusive port range; From=0,To=65535 when omitted.
type PortRange struct {
	From, To int
}

// MirrorFilterRule is one numbered rule of a mirror filter.
type MirrorFilterRule struct {
	RuleNumber           int
	Action               string // "accept" or "reject"
	Protocol             int
	SourceCIDR           netip.Prefix
	DestinationCIDR      netip.Prefix
	SourcePortRange      PortRange
	DestinationPortRange PortRange
}

// MirrorFilter selects packets to mirror. Rules are sorted by RuleNumber after Parse.
type MirrorFilter struct {
	Name    string
	Ingress []MirrorFilterRule
	Egress  []MirrorFilterRule
}

// MirrorTarget is where mirrored packets go: exactly one field is set.
type MirrorTarget struct {
	ENI  string
	Pcap string
}

// MirrorSession copies filtered traffic of a source ENI to a target.
type MirrorSession struct {
	Name             string
	SourceENI        string
	Filter           string
	SessionNumber    int
	VirtualNetworkID uint32
	PacketLength     int // 0 = whole frame
	Target           MirrorTarget
}
