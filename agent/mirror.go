package agent

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/mirror"
	"github.com/vpcd/vpcd/plan"
	"github.com/vpcd/vpcd/tunnel"
)

var (
	descMirrorPackets = prometheus.NewDesc("vpcd_mirror_packets_total", "Mirror copies sent to the session's target ENI or written to its pcap file.", []string{"session"}, nil)
	descMirrorBatches = prometheus.NewDesc("vpcd_mirror_kernel_batches_total", "TCP super-packets whose wire segments' copies were made as one batch: by the kernel from a clone, or by the tunnel from the super-packet it carries.", []string{"session"}, nil)
	descMirrorDropped = prometheus.NewDesc("vpcd_mirror_dropped_total", "Mirror copies dropped: the ring to the daemon was full, or the daemon could not send or write them.", []string{"session"}, nil)
)

// mirrorRuntime lists the sessions for the mirror daemon, with their
// datapath indexes, under a.state after a reconcile. needInject reports
// whether a session sends to an ENI.
func (a *Agent) mirrorRuntime(p *plan.Host) (out []mirror.Session, needInject bool) {
	ifname := map[string]string{}
	for _, e := range p.Datapath.ENIs {
		ifname[e.Name] = e.Interface
	}
	for _, s := range p.Mirrors {
		idx, ok := a.dp.MirrorIndex(s.Name)
		if !ok {
			continue
		}
		// The kernel sends an ENI target's copies itself from a source
		// ENI at tc (the tunnel program, for ingress from other hosts,
		// always is); at XDP they come through the ring.
		hook, attached := a.dp.ENIHook(ifname[s.SourceENI])
		ring := s.Pcap != "" || !attached || hook == dataplane.HookXDP
		out = append(out, mirror.Session{Name: s.Name, Index: idx, VNI: s.VNI, Source: s.Source, Pcap: s.Pcap, Target: s.Target, Ring: ring})
		if s.TargetENI != "" {
			needInject = true
		}
	}
	return out, needInject
}

// applyMirror brings the mirror daemon in line with p: the injection
// interface when a session sends to an ENI, the sessions and their pcap
// files. Under a.state, after the datapath's reconcile.
func (a *Agent) applyMirror(p *plan.Host) error {
	ms := &a.mirrors
	if ms.m == nil {
		return nil
	}
	sessions, needInject := a.mirrorRuntime(p)
	ifindex := 0
	if needInject {
		idx, err := a.dp.EnsureMirrorInject()
		if err != nil {
			return err
		}
		ifindex = idx
	} else if ms.injectUp {
		if err := a.dp.RemoveMirrorInject(); err != nil {
			a.log.Warn("remove mirror injection interface", "err", err)
		}
	}
	if needInject && !ms.injectUp {
		a.log.Info("mirror injection interface", "interface", dataplane.MirrorInjectName, "program_on", dataplane.MirrorInjectPeer)
	}
	ms.injectUp = needInject
	if err := ms.m.SetInject(ifindex); err != nil {
		return err
	}
	return ms.m.Update(sessions)
}

// mirrorTargets lists, by datapath index, the sessions whose copies the
// tunnel may make (an ENI target on another host): what the kernel reads
// from its maps to make a batch. Under a.state.
func (a *Agent) mirrorTargets(p *plan.Host) map[uint16]tunnel.MirrorTarget {
	out := map[uint16]tunnel.MirrorTarget{}
	enis := map[string]dataplane.ENI{}
	for _, e := range p.Datapath.ENIs {
		enis[e.Name] = e
	}
	type rk struct {
		vni uint32
		ip  netip.Addr
	}
	routes := map[rk]dataplane.Route{}
	for _, r := range p.Datapath.Routes {
		routes[rk{r.VNI, r.IP}] = r
	}
	for _, s := range p.Datapath.Mirror {
		idx, ok := a.dp.MirrorIndex(s.Name)
		src, known := enis[s.SourceENI]
		r, routed := routes[rk{src.VNI, s.Target}]
		if !ok || !known || !routed || !s.Target.Is4() || r.ENI != "" || !r.Remote.Is4() || len(r.MAC) != 6 {
			continue
		}
		t := tunnel.MirrorTarget{VNI: s.VNI, Snap: s.CopyLen(), Source: src.IP, Target: s.Target, TargetHost: r.Remote}
		copy(t.TargetMAC[:], r.MAC)
		out[uint16(idx)] = t
	}
	return out
}

// startMirror opens the mirror ring and the sessions' targets. The caller
// holds no lock.
func (a *Agent) startMirror(p *plan.Host) error {
	rd, err := a.dp.NewMirrorReader()
	if err != nil {
		return err
	}
	m, err := mirror.Start(rd, 0, a.log)
	if err != nil {
		rd.Close()
		return err
	}
	a.state.Lock()
	defer a.state.Unlock()
	a.mirrors.m = m
	return a.applyMirror(p)
}

// stopMirror closes the mirror daemon. The caller holds no lock.
func (a *Agent) stopMirror() {
	a.state.Lock()
	m := a.mirrors.m
	a.mirrors.m = nil
	a.state.Unlock()
	if m != nil {
		if err := m.Close(); err != nil {
			a.log.Warn("mirror close", "err", err)
		}
	}
}

// mirrorStatuses reports this host's sessions, under a.state.
func (a *Agent) mirrorStatuses() []control.MirrorStatus {
	p := a.state.plan
	if a.mirrors.m == nil || p == nil {
		return nil
	}
	var out []control.MirrorStatus
	for _, s := range p.Mirrors {
		st := control.MirrorStatus{Name: s.Name, Source: s.SourceENI, VNI: s.VNI}
		if s.TargetENI != "" {
			st.Target = "eni:" + s.TargetENI
		} else {
			st.Target = "pcap:" + s.Pcap
		}
		if idx, ok := a.dp.MirrorIndex(s.Name); ok {
			if c, err := a.dp.MirrorCounters(idx); err == nil {
				// Copies the kernel made and sent itself; those the
				// mirror device refused, could not wrap, or lost in
				// its queue (cloned, never seen again) are dropped.
				// Of those the kernel counts sent, the tunnel may
				// have failed to make some (a batch it makes).
				fail := min(a.tun.MirrorFailures(idx), c.Sent)
				st.Packets += c.Sent - fail
				st.Batches = c.Batches
				st.Dropped += c.Dropped + c.Failed + fail + a.mirrors.lost.lost(idx, c, time.Now())
			}
		}
		if ms, ok := a.mirrors.m.Stats(s.Name); ok {
			st.Packets += ms.Sent
			st.Dropped += ms.Dropped
			st.Errors = ms.Errors
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// queueLoss finds the copies a session's mirror device lost in its queue:
// every wire packet cloned into it is wrapped (sent) or fails as soon as
// the CPU gets to it, so what was queued lossSettle ago and is neither
// sent nor failed now was dropped on the way (a full backlog). The count
// only grows (a counter); it is kept per session index and reset with it.
// lossSettle is far longer than a backlog waits on a busy host, so that
// a stall never counts copies still on their way.
const lossSettle = 3 * time.Second

type queueLoss struct {
	mu sync.Mutex
	by map[uint32]*lossState
}

type lossState struct {
	samples []lossSample // queued over the last seconds, oldest first
	lost    uint64
	last    dataplane.MirrorCounter
}

type lossSample struct {
	at     time.Time
	queued uint64
}

func (q *queueLoss) lost(idx uint32, c dataplane.MirrorCounter, now time.Time) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.by == nil {
		q.by = map[uint32]*lossState{}
	}
	st := q.by[idx]
	if st == nil || c.Queued < st.last.Queued || c.Sent < st.last.Sent {
		st = &lossState{} // a new session on this index: counters restarted
		q.by[idx] = st
	}
	st.last = c
	st.samples = append(st.samples, lossSample{at: now, queued: c.Queued})
	// The newest sample at least lossSettle old decides; older ones go.
	ref := -1
	for i, s := range st.samples {
		if now.Sub(s.at) >= lossSettle {
			ref = i
		}
	}
	if ref >= 0 {
		if q := st.samples[ref].queued; q > c.Sent+c.Failed && q-c.Sent-c.Failed > st.lost {
			st.lost = q - c.Sent - c.Failed
		}
		st.samples = st.samples[ref:]
	}
	if len(st.samples) > 64 {
		st.samples = st.samples[len(st.samples)-64:]
	}
	return st.lost
}
