package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

var (
	descENIPackets = prometheus.NewDesc("vpcd_eni_packets_total", "Packets seen at an ENI, by direction as seen by the workload.", []string{"eni", "direction"}, nil)
	descENIBytes   = prometheus.NewDesc("vpcd_eni_bytes_total", "IP bytes seen at an ENI, by direction as seen by the workload.", []string{"eni", "direction"}, nil)
	descDrops      = prometheus.NewDesc("vpcd_drops_total", "Packets the datapath dropped, by reason.", []string{"reason"}, nil)
	descHandshake  = prometheus.NewDesc("vpcd_tunnel_peer_last_handshake_seconds", "Unix time of the last WireGuard handshake with a peer host (0: never).", []string{"peer"}, nil)
	descFlowRecs   = prometheus.NewDesc("vpcd_flowlog_records_total", "Flow-log records handed to the log's destination.", []string{"flow_log"}, nil)
	descFlowLost   = prometheus.NewDesc("vpcd_flowlog_records_lost_total", "Flow-log packets (records) lost: flows the datapath had no room for, or records the destination did not take.", []string{"flow_log"}, nil)
	descFlowErrs   = prometheus.NewDesc("vpcd_flowlog_sink_errors_total", "Failed writes or sends to a flow log's destination.", []string{"flow_log"}, nil)
	descCTEntries  = prometheus.NewDesc("vpcd_conntrack_entries", "Connections the conntrack table holds (sampled every 2 s).", nil, nil)
	descCTEvicted  = prometheus.NewDesc("vpcd_conntrack_evictions_total", "Connections the full conntrack table evicted to make room.", nil, nil)
	descENIConns   = prometheus.NewDesc("vpcd_eni_conntrack_entries", "Connections an ENI tracks (closed and expired ones until the next sweep, every 2 s).", []string{"eni"}, nil)
	descENIMaxConn = prometheus.NewDesc("vpcd_eni_max_connections", "Connections an ENI may track (max_connections); a new one over it is dropped as conntrack_allowance.", []string{"eni"}, nil)
	descENIRefused = prometheus.NewDesc("vpcd_eni_conntrack_allowance_drops_total", "New connections of an ENI dropped because it tracked max_connections already.", []string{"eni"}, nil)
	descFastEvict  = prometheus.NewDesc("vpcd_flowlog_fastpath_evictions_total", "Fast-path entries with flow counters the full table evicted before their last counts were read (those packets are missing from flow logs).", nil, nil)
	descPeerBytes  = prometheus.NewDesc("vpcd_tunnel_peer_bytes_total", "Encrypted bytes exchanged with a peer host (ingress: received).", []string{"peer", "direction"}, nil)
	descTunCalls   = prometheus.NewDesc("vpcd_tunnel_device_syscalls_total", "System calls on the tunnel device (egress: reads of packets bound for peers; ingress: writes of packets from them).", []string{"direction"}, nil)
	descTunPackets = prometheus.NewDesc("vpcd_tunnel_device_packets_total", "Packets through the tunnel device; per system call, the batching the offloads achieve.", []string{"direction"}, nil)
	descTunDrops   = prometheus.NewDesc("vpcd_tunnel_device_dropped_total", "Packets lost at the tunnel device: egress, bound for a peer but the device's queue was full (the daemon fell behind) or the frame was malformed; ingress, written by the daemon and dropped by the kernel.", []string{"direction"}, nil)
)

func (a *Agent) initMetrics() {
	a.registry = prometheus.NewRegistry()
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcd_config_reloads_total", Help: "Topology reloads by result.",
	}, []string{"result"})
	a.integrity = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcd_datapath_integrity_failures_total", Help: "Datapath integrity check failures by reason.",
	}, []string{"reason"})
	a.reloads.WithLabelValues("success")
	a.reloads.WithLabelValues("error")
	for _, r := range []string{"detached", "replaced", "not_first", "interface", "repair_failed"} {
		a.integrity.WithLabelValues(r)
	}
	a.registry.MustRegister(a.reloads, a.integrity, (*datapathCollector)(a),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// datapathCollector reads the BPF maps and the tunnel at scrape time.
type datapathCollector Agent

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descENIPackets
	ch <- descENIBytes
	ch <- descDrops
	ch <- descHandshake
	ch <- descPeerBytes
	ch <- descFlowRecs
	ch <- descFlowLost
	ch <- descFlowErrs
	ch <- descCTEntries
	ch <- descCTEvicted
	ch <- descFastEvict
	ch <- descENIConns
	ch <- descENIMaxConn
	ch <- descENIRefused
	ch <- descMirrorPackets
	ch <- descMirrorDropped
	ch <- descMirrorBatches
	ch <- descTunCalls
	ch <- descTunPackets
	ch <- descTunDrops
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	a := (*Agent)(c)
	a.state.Lock()
	for _, e := range a.state.plan.ENIs {
		cnt, err := a.dp.ENICounters(e.Name)
		if err != nil {
			continue
		}
		for dir, name := range []string{"ingress", "egress"} {
			ch <- prometheus.MustNewConstMetric(descENIPackets, prometheus.CounterValue, float64(cnt[dir].Packets), e.Name, name)
			ch <- prometheus.MustNewConstMetric(descENIBytes, prometheus.CounterValue, float64(cnt[dir].Bytes), e.Name, name)
		}
		if u, err := a.dp.ENIUsage(e.Name); err == nil {
			ch <- prometheus.MustNewConstMetric(descENIConns, prometheus.GaugeValue, float64(u.Connections), e.Name)
			ch <- prometheus.MustNewConstMetric(descENIMaxConn, prometheus.GaugeValue, float64(u.MaxConnections), e.Name)
			ch <- prometheus.MustNewConstMetric(descENIRefused, prometheus.CounterValue, float64(u.Refused), e.Name)
		}
	}
	for _, m := range a.mirrorStatuses() {
		ch <- prometheus.MustNewConstMetric(descMirrorPackets, prometheus.CounterValue, float64(m.Packets), m.Name)
		ch <- prometheus.MustNewConstMetric(descMirrorDropped, prometheus.CounterValue, float64(m.Dropped), m.Name)
		ch <- prometheus.MustNewConstMetric(descMirrorBatches, prometheus.CounterValue, float64(m.Batches), m.Name)
	}
	ch <- prometheus.MustNewConstMetric(descFastEvict, prometheus.CounterValue, float64(a.dp.FastPathEvictions()))
	a.state.Unlock()
	a.conntrack.Lock()
	ch <- prometheus.MustNewConstMetric(descCTEntries, prometheus.GaugeValue, float64(a.conntrack.entries))
	ch <- prometheus.MustNewConstMetric(descCTEvicted, prometheus.CounterValue, float64(a.conntrack.evictions))
	a.conntrack.Unlock()
	flowLogs := a.flowLogStatuses()
	for _, f := range flowLogs {
		ch <- prometheus.MustNewConstMetric(descFlowRecs, prometheus.CounterValue, float64(f.Records), f.Name)
		ch <- prometheus.MustNewConstMetric(descFlowLost, prometheus.CounterValue, float64(f.Lost), f.Name)
		ch <- prometheus.MustNewConstMetric(descFlowErrs, prometheus.CounterValue, float64(f.Errors), f.Name)
	}
	if drops, err := a.dp.Drops(); err == nil {
		for reason, d := range drops {
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(d[0]+d[1]), reason)
		}
	}
	tc := a.tun.Counters()
	for _, d := range []struct {
		dir                  string
		calls, packets, drop uint64
	}{
		{"egress", tc.Reads, tc.ReadPackets, tc.QueueDrops + tc.ReadErrors},
		{"ingress", tc.Writes, tc.WritePackets, tc.WriteDrops},
	} {
		ch <- prometheus.MustNewConstMetric(descTunCalls, prometheus.CounterValue, float64(d.calls), d.dir)
		ch <- prometheus.MustNewConstMetric(descTunPackets, prometheus.CounterValue, float64(d.packets), d.dir)
		// Unknown this scrape (the device's statistics could not be
		// read): left out rather than reported as a reset to zero.
		if tc.KernelStats {
			ch <- prometheus.MustNewConstMetric(descTunDrops, prometheus.CounterValue, float64(d.drop), d.dir)
		}
	}
	if peers, err := a.tun.Peers(); err == nil {
		for _, p := range peers {
			var hs float64
			if !p.LastHandshake.IsZero() {
				hs = float64(p.LastHandshake.UnixNano()) / float64(time.Second)
			}
			ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, hs, p.Name)
			ch <- prometheus.MustNewConstMetric(descPeerBytes, prometheus.CounterValue, float64(p.RxBytes), p.Name, "ingress")
			ch <- prometheus.MustNewConstMetric(descPeerBytes, prometheus.CounterValue, float64(p.TxBytes), p.Name, "egress")
		}
	}
}
