package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/tunnel"
)

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

type request struct {
	Cmd       string `json:"cmd"`
	Conntrack bool   `json:"conntrack,omitempty"`
}

type response struct {
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// status builds the current Status.
func (a *Agent) status(withConntrack bool) *Status {
	s := &Status{Host: a.opts.Host, BPFFS: a.opts.BPFFS, Drops: map[string]uint64{}}
	a.mu.Lock()
	h := a.topo.HostByName(a.opts.Host)
	s.Tunnel = TunnelStatus{Device: a.tun.Name(), PublicKey: a.priv.PublicKey().String(), ListenPort: h.ListenPort}
	for _, e := range a.localENIs() {
		sub, vpc := a.topo.SubnetByName(e.Subnet)
		es := ENIStatus{Name: e.Name, Interface: e.Interface, IP: e.IP.String(), MAC: e.MAC.String(),
			Subnet: e.Subnet, SecurityGroups: e.SecurityGroups}
		if sub != nil && vpc != nil {
			es.VPC, es.VNI = vpc.Name, vpc.VNI
			es.NetworkACL = sub.NetworkACL
		}
		in, out := sgRules(a.topo, e)
		es.IngressRules, es.EgressRules = len(in), len(out)
		if c, err := a.dp.ENICounters(e.Name); err == nil {
			es.IngressPackets, es.IngressBytes = c[dataplane.Ingress].Packets, c[dataplane.Ingress].Bytes
			es.EgressPackets, es.EgressBytes = c[dataplane.Egress].Packets, c[dataplane.Egress].Bytes
		}
		if u, err := a.dp.ENIUsage(e.Name); err == nil {
			es.Connections, es.MaxConnections, es.ConntrackAllowanceDrops = u.Connections, u.MaxConnections, u.Refused
		}
		s.ENIs = append(s.ENIs, es)
	}
	s.Attachments = a.dp.Attachments()
	if withConntrack {
		s.Conntrack, _ = a.dp.Conntrack()
	}
	s.FlowLogs = a.flowLogStatuses()
	s.Mirrors = a.mirrorStatuses()
	s.MapMemory, s.MapMemoryBytes = a.dp.MapMemory()
	a.mu.Unlock()
	s.ResidentBytes = residentBytes()
	s.CPUs, s.HostCPUs = runtime.GOMAXPROCS(0), runtime.NumCPU()
	sort.Slice(s.Attachments, func(i, j int) bool { return s.Attachments[i].Interface < s.Attachments[j].Interface })
	if peers, err := a.tun.Peers(); err == nil {
		s.Tunnel.Peers = peers
	}
	s.Tunnel.Counters = a.tun.Counters()
	if drops, err := a.dp.Drops(); err == nil {
		for r, d := range drops {
			if d[0]+d[1] > 0 {
				s.Drops[r] = d[0] + d[1]
			}
		}
	}
	return s
}

// flowLogStatuses reports every running flow log's counters, for status
// and metrics alike. The caller holds a.mu.
func (a *Agent) flowLogStatuses() []FlowLogStatus {
	if a.flows == nil {
		return nil
	}
	dests := map[string]string{}
	for _, f := range a.topo.FlowLogs {
		dests[f.Name] = f.Destination
	}
	stats := a.flows.Stats()
	out := make([]FlowLogStatus, 0, len(a.flowSpecs))
	for _, sp := range a.flowSpecs {
		st := stats[sp.Name]
		out = append(out, FlowLogStatus{Name: sp.Name, Destination: dests[sp.Name], ENIs: len(sp.ENIs),
			Records: st.Records, Lost: st.Lost + sp.Sink.Lost(), Errors: sp.Sink.Errors()})
	}
	return out
}

// serveControl listens on a root-only unix socket for status requests.
func (a *Agent) serveControl(path string) (net.Listener, error) {
	if err := ensureDir(path); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	os.Remove(path) // a socket a crashed daemon left
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go a.handleControl(c)
		}
	}()
	return l, nil
}

func (a *Agent) handleControl(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req request
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(response{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Cmd {
	case "status":
		json.NewEncoder(c).Encode(response{Status: a.status(req.Conntrack)})
	case "monitor":
		a.serveMonitor(c)
	case "reload":
		a.Reload("control socket")
		json.NewEncoder(c).Encode(response{Status: a.status(false)})
	default:
		json.NewEncoder(c).Encode(response{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
	}
}

// Monitor streams the daemon's events to fn until fn returns false or the
// daemon goes away.
func Monitor(socket string, fn func(Event) bool) error {
	c, err := net.DialTimeout("unix", socket, 3*time.Second)
	if err != nil {
		return fmt.Errorf("no daemon at %s: %w", socket, err)
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(request{Cmd: "monitor"}); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("daemon at %s: %w", socket, err)
		}
		if !fn(ev) {
			return nil
		}
	}
}

// QueryStatus asks the daemon behind socket for its status.
func QueryStatus(socket string) (*Status, error) { return query(socket, request{Cmd: "status"}) }

// QueryConntrack asks for the status with every tracked connection.
func QueryConntrack(socket string) (*Status, error) {
	return query(socket, request{Cmd: "status", Conntrack: true})
}

func query(socket string, req request) (*Status, error) {
	c, err := net.DialTimeout("unix", socket, 3*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no daemon at %s: %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("daemon at %s: %w", socket, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("daemon at %s: %s", socket, resp.Error)
	}
	return resp.Status, nil
}

// residentBytes is this process's resident memory (VmRSS), 0 if unknown.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}
