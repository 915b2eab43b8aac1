package agent

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/mirror"
	"github.com/vpcd/vpcd/topology"
)

var (
	descMirrorPackets = prometheus.NewDesc("vpcd_mirror_packets_total", "Mirror copies sent to the session's target ENI or written to its pcap file.", []string{"session"}, nil)
	descMirrorDropped = prometheus.NewDesc("vpcd_mirror_dropped_total", "Mirror copies dropped: the ring to the daemon was full, or the daemon could not send or write them.", []string{"session"}, nil)
)

// localMirrorSessions lists the sessions whose source ENI is on host.
func localMirrorSessions(t *topology.Topology, host string) []*topology.MirrorSession {
	var out []*topology.MirrorSession
	for i := range t.MirrorSessions {
		s := &t.MirrorSessions[i]
		if src := t.ENIByName(s.SourceENI); src != nil && src.Host == host && t.MirrorFilterByName(s.Filter) != nil {
			out = append(out, s)
		}
	}
	return out
}

// mirrorSessions lists the mirror sessions whose source ENI is on host, as
// the datapath takes them.
func mirrorSessions(t *topology.Topology, host string) []dataplane.MirrorSession {
	var out []dataplane.MirrorSession
	mtu := dataplane.InnerMTU(pathMTU(t))
	for _, s := range localMirrorSessions(t, host) {
		f := t.MirrorFilterByName(s.Filter)
		snap := s.PacketLength
		if s.Target.ENI != "" {
			// A copy travels the VPC whole: as AWS does, it is cut to
			// what the path carries.
			if most := mtu - dataplane.MirrorCopyOverhead; snap == 0 || snap > most {
				snap = most
			}
		}
		out = append(out, dataplane.MirrorSession{
			Name: s.Name, SourceENI: s.SourceENI, SessionNumber: s.SessionNumber, Snaplen: snap,
			Ingress: mirrorRules(f.Ingress), Egress: mirrorRules(f.Egress),
		})
	}
	return out
}

func mirrorRules(rules []topology.MirrorFilterRule) []dataplane.MirrorRule {
	out := make([]dataplane.MirrorRule, 0, len(rules))
	for _, r := range rules {
		proto := r.Protocol
		if proto == topology.ProtoAll {
			proto = -1
		}
		out = append(out, dataplane.MirrorRule{
			Accept: r.Action == "accept", Protocol: proto, Source: r.SourceCIDR, Dest: r.DestinationCIDR,
			SrcPorts: [2]uint16{uint16(r.SourcePortRange.From), uint16(r.SourcePortRange.To)},
			DstPorts: [2]uint16{uint16(r.DestinationPortRange.From), uint16(r.DestinationPortRange.To)},
		})
	}
	return out
}

// mirrorRuntime lists the sessions for the mirror daemon, with their
// datapath indexes, under a.mu after a reconcile. needInject reports
// whether a session sends to an ENI.
func (a *Agent) mirrorRuntime(t *topology.Topology) (out []mirror.Session, needInject bool) {
	for _, s := range localMirrorSessions(t, a.opts.Host) {
		src := t.ENIByName(s.SourceENI)
		idx, ok := a.dp.MirrorIndex(s.Name)
		if !ok {
			continue
		}
		ms := mirror.Session{Name: s.Name, Index: idx, VNI: s.VirtualNetworkID, Source: src.IP, Pcap: s.Target.Pcap}
		if s.Target.ENI != "" {
			if dst := t.ENIByName(s.Target.ENI); dst != nil {
				ms.Target = dst.IP
			}
			needInject = true
		}
		out = append(out, ms)
	}
	return out, needInject
}

// applyMirror brings the mirror daemon in line with t: the injection
// interface when a session sends to an ENI, the sessions and their pcap
// files. Under a.mu, after the datapath's reconcile.
func (a *Agent) applyMirror(t *topology.Topology) error {
	if a.mirror == nil {
		return nil
	}
	sessions, needInject := a.mirrorRuntime(t)
	ifindex := 0
	if needInject {
		idx, err := a.dp.EnsureMirrorInject()
		if err != nil {
			return err
		}
		ifindex = idx
	} else if a.injectUp {
		if err := a.dp.RemoveMirrorInject(); err != nil {
			a.log.Warn("remove mirror injection interface", "err", err)
		}
	}
	if needInject && !a.injectUp {
		a.log.Info("mirror injection interface", "interface", dataplane.MirrorInjectName, "program_on", dataplane.MirrorInjectPeer)
	}
	a.injectUp = needInject
	if err := a.mirror.SetInject(ifindex); err != nil {
		return err
	}
	return a.mirror.Update(sessions)
}

// startMirror opens the mirror ring and the sessions' targets. The caller
// holds no lock.
func (a *Agent) startMirror(t *topology.Topology) error {
	rd, err := a.dp.NewMirrorReader()
	if err != nil {
		return err
	}
	m, err := mirror.Start(rd, 0, a.log)
	if err != nil {
		rd.Close()
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mirror = m
	return a.applyMirror(t)
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
}

// mirrorStatuses reports this host's sessions, under a.mu.
func (a *Agent) mirrorStatuses() []MirrorStatus {
	if a.mirror == nil || a.topo == nil {
		return nil
	}
	var out []MirrorStatus
	for _, s := range localMirrorSessions(a.topo, a.opts.Host) {
		st := MirrorStatus{Name: s.Name, Source: s.SourceENI, VNI: s.VirtualNetworkID}
		if s.Target.ENI != "" {
			st.Target = "eni:" + s.Target.ENI
		} else {
			st.Target = "pcap:" + s.Target.Pcap
		}
		if idx, ok := a.dp.MirrorIndex(s.Name); ok {
			if c, err := a.dp.MirrorCounters(idx); err == nil {
				st.Dropped += c.Dropped
			}
		}
		if ms, ok := a.mirror.Stats(s.Name); ok {
			st.Packets = ms.Sent
			st.Dropped += ms.Dropped
			st.Errors = ms.Errors
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
