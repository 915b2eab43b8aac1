// Package control is the daemon's local control API: the Status and Event
// types, the protocol on its unix socket (one JSON request, then one JSON
// response or a stream of events), the client that `vpcd status`, `vpcd
// monitor`, the lab and tests use, and a server that serves any Daemon.
// Talking to a daemon needs this package only, never the daemon's own.
package control

import (
	"time"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/tunnel"
)

// DefaultSocket is where a daemon on a real host listens.
const DefaultSocket = "/run/vpcd/vpcd.sock"

// Status is what `vpcd status` shows. It never holds key material other
// than public keys.
type Status struct {
	Host        string                 `json:"host"`
	Tunnel      TunnelStatus           `json:"tunnel"`
	ENIs        []ENIStatus            `json:"enis"`
	Drops       map[string]uint64      `json:"drops"`
	Attachments []dataplane.Attachment `json:"attachments"`
	BPFFS       string                 `json:"bpffs"`
	Conntrack   []dataplane.Conn       `json:"conntrack,omitempty"`
	FlowLogs    []FlowLogStatus        `json:"flow_logs,omitempty"`
	Mirrors     []MirrorStatus         `json:"mirror_sessions,omitempty"`
	// MapMemory is the kernel memory of the datapath's maps, in bytes,
	// in all (MapMemoryBytes) and per map.
	MapMemoryBytes uint64                `json:"map_memory_bytes"`
	MapMemory      []dataplane.MapMemory `json:"map_memory"`
	// ResidentBytes is the daemon's resident memory.
	ResidentBytes uint64 `json:"resident_bytes"`
	// CPUs is the daemon's CPU budget (GOMAXPROCS) and HostCPUs the host's.
	CPUs     int `json:"cpus"`
	HostCPUs int `json:"host_cpus"`
	// ControlPlane is the etcd control plane's state; nil in file mode.
	ControlPlane *ControlPlaneStatus `json:"control_plane,omitempty"`
}

// ControlPlaneStatus is the etcd control plane as one daemon sees it.
type ControlPlaneStatus struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	Connected bool     `json:"connected"`
	// Registered is whether this host's registration is written (under
	// a live lease, as far as the daemon knows).
	Registered bool `json:"registered"`
	// Revision is the etcd revision of the last state applied.
	Revision int64 `json:"revision"`
	// LastApplySeconds is how long the last state took from the daemon
	// receiving it to the datapath programmed.
	LastApplySeconds float64 `json:"last_apply_seconds"`
	// Errors counts failed operations by vpcd_controlplane_errors_total's op.
	Errors map[string]float64 `json:"errors,omitempty"`
}

// FlowLogStatus is one flow log's destination and counters.
type FlowLogStatus struct {
	Name        string `json:"name"`
	Destination string `json:"destination"`
	ENIs        int    `json:"enis"`
	Records     uint64 `json:"records"`
	Lost        uint64 `json:"lost"`
	Errors      uint64 `json:"errors"`
}

// TunnelStatus is the tunnel part of Status.
type TunnelStatus struct {
	Device     string                `json:"device"`
	PublicKey  string                `json:"public_key"`
	ListenPort uint16                `json:"listen_port"`
	Peers      []tunnel.PeerStatus   `json:"peers"`
	Counters   tunnel.DeviceCounters `json:"counters"`
}

// ENIStatus is one local ENI.
type ENIStatus struct {
	Name           string   `json:"name"`
	Interface      string   `json:"interface"`
	IngressRules   int      `json:"ingress_rules"`
	EgressRules    int      `json:"egress_rules"`
	NetworkACL     string   `json:"network_acl,omitempty"`
	IP             string   `json:"ip"`
	MAC            string   `json:"mac"`
	Subnet         string   `json:"subnet"`
	VPC            string   `json:"vpc"`
	VNI            uint32   `json:"vni"`
	SecurityGroups []string `json:"security_groups"`
	IngressPackets uint64   `json:"ingress_packets"`
	IngressBytes   uint64   `json:"ingress_bytes"`
	EgressPackets  uint64   `json:"egress_packets"`
	EgressBytes    uint64   `json:"egress_bytes"`
	// Connections the ENI tracks, the most it may (max_connections) and
	// the new ones refused over it (conntrack_allowance).
	Connections             uint64 `json:"connections"`
	MaxConnections          uint32 `json:"max_connections"`
	ConntrackAllowanceDrops uint64 `json:"conntrack_allowance_drops"`
}

// MirrorStatus is a session's state for `vpcd status`.
type MirrorStatus struct {
	Name    string `json:"name"`
	Source  string `json:"source_eni"`
	Target  string `json:"target"`
	VNI     uint32 `json:"virtual_network_id"`
	Packets uint64 `json:"packets"`
	Dropped uint64 `json:"dropped"`
	Errors  uint64 `json:"errors"`
	// Batches counts the super-packets whose copies the kernel made as
	// one batch (ENI targets on other hosts, copies cut by
	// packet_length): one skb per super-packet instead of one per copy.
	Batches uint64 `json:"kernel_batches"`
}

// Event is one line of `vpcd monitor`: a dropped packet or a flow's counts
// from the last drain.
type Event struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`    // "drop" or "flow"
	Verdict   string    `json:"verdict"` // DROP, ACCEPT or REJECT
	Reason    string    `json:"reason,omitempty"`
	ENI       string    `json:"eni,omitempty"`
	Direction string    `json:"direction,omitempty"`
	Hook      string    `json:"hook,omitempty"`
	Protocol  uint8     `json:"protocol"`
	Src       string    `json:"src,omitempty"`
	Dst       string    `json:"dst,omitempty"`
	SrcPort   uint16    `json:"src_port,omitempty"`
	DstPort   uint16    `json:"dst_port,omitempty"`
	Packets   uint64    `json:"packets,omitempty"`
	Bytes     uint64    `json:"bytes,omitempty"`
}

// Commands a Request names.
const (
	CmdStatus  = "status"  // answered by a Response with Status
	CmdMonitor = "monitor" // answered by a stream of Event lines
	CmdReload  = "reload"  // the daemon reads its topology again, then answers as status
	// CmdRotateKey makes the daemon replace its key pair and publish the
	// new public key; answered as status (with the new key) or an error.
	CmdRotateKey = "rotate-key"
)

// Request is what a client writes: one JSON object.
type Request struct {
	Cmd string `json:"cmd"`
	// Conntrack asks status for every tracked connection.
	Conntrack bool `json:"conntrack,omitempty"`
	// ENI is the dynamic ENI of an eni-* request (eni.go).
	ENI *DynamicENI `json:"eni,omitempty"`
}

// Response is the daemon's one JSON answer to status and reload, and to
// any request it refuses (Error set).
type Response struct {
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Code classifies an eni-* request's Error (ENIError); ENI and ENIs
	// answer eni-add and eni-list.
	Code string       `json:"code,omitempty"`
	ENI  *DynamicENI  `json:"eni,omitempty"`
	ENIs []DynamicENI `json:"enis,omitempty"`
}
