package agent

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/dataplane"
)

// Status builds the current status (control.Daemon).
func (a *Agent) Status(withConntrack bool) *control.Status {
	s := &control.Status{Host: a.opts.Host, BPFFS: a.opts.BPFFS, Drops: map[string]uint64{}}
	a.state.Lock()
	p := a.state.plan
	s.Tunnel = control.TunnelStatus{Device: a.tun.Name(), PublicKey: a.publicKey(), ListenPort: p.Datapath.ListenPort}
	for _, e := range p.ENIs {
		es := control.ENIStatus{Name: e.Name, Interface: e.Interface, IP: e.IP.String(), MAC: e.MAC.String(),
			Subnet: e.Subnet, SecurityGroups: e.SecurityGroups, VPC: e.VPC, VNI: e.VNI, NetworkACL: e.NetworkACL,
			IngressRules: e.IngressRules, EgressRules: e.EgressRules}
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
	s.Mirrors = a.mirrorStatuses()
	s.MapMemory, s.MapMemoryBytes = a.dp.MapMemory()
	a.state.Unlock()
	s.FlowLogs = a.flowLogStatuses()
	s.ResidentBytes = residentBytes()
	s.CPUs, s.HostCPUs = runtime.GOMAXPROCS(0), runtime.NumCPU()
	s.ControlPlane = a.controlPlaneStatus()
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
// and metrics alike. It takes a.flowLogs.
func (a *Agent) flowLogStatuses() []control.FlowLogStatus {
	fl := &a.flowLogs
	fl.Lock()
	defer fl.Unlock()
	if fl.agg == nil {
		return nil
	}
	stats := fl.agg.Stats()
	out := make([]control.FlowLogStatus, 0, len(fl.specs))
	for _, sp := range fl.specs {
		st := stats[sp.Name]
		r := fl.retired[sp.Name]
		out = append(out, control.FlowLogStatus{Name: sp.Name, Destination: fl.plans[sp.Name].Destination, ENIs: len(sp.ENIs),
			Records: st.Records + r.records, Lost: st.Lost + sp.Sink.Lost() + r.lost, Errors: sp.Sink.Errors() + r.errors})
	}
	return out
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
