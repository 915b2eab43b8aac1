package controlplane

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Operations named by vpcd_controlplane_errors_total{op}.
const (
	OpRead      = "read"      // a full read of the prefix
	OpWatch     = "watch"     // a watch that broke (compacted, canceled, lost)
	OpDecode    = "decode"    // a state that did not decode or validate
	OpRegister  = "register"  // granting a lease or writing the registration
	OpKeepAlive = "keepalive" // a lease that was lost
)

// Metrics are the control plane's series (SPEC §11) for one daemon:
// vpcd_controlplane_connected, vpcd_controlplane_revision and
// vpcd_controlplane_errors_total{op}. A Source and a Registration update
// them; the daemon registers them (they are a prometheus.Collector) and
// measures vpcd_controlplane_apply_seconds itself. A nil *Metrics is valid
// and records nothing.
type Metrics struct {
	connected atomic.Bool
	revision  atomic.Int64
	errors    *prometheus.CounterVec

	// Counters for tests and fleet-sim, not exported as series.
	fullReads atomic.Int64
	events    atomic.Int64
	snapshots atomic.Int64
}

var (
	descConnected = prometheus.NewDesc("vpcd_controlplane_connected", "1 while the daemon's etcd connection is up.", nil, nil)
	descRevision  = prometheus.NewDesc("vpcd_controlplane_revision", "The etcd revision of the last state the control plane sent to the planner.", nil, nil)
)

// NewMetrics makes a set of control-plane metrics.
func NewMetrics() *Metrics {
	m := &Metrics{errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vpcd_controlplane_errors_total",
		Help: "Control-plane operations that failed, by operation.",
	}, []string{"op"})}
	for _, op := range []string{OpRead, OpWatch, OpDecode, OpRegister, OpKeepAlive} {
		m.errors.WithLabelValues(op)
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnected
	ch <- descRevision
	m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	c := 0.0
	if m.connected.Load() {
		c = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, c)
	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(m.revision.Load()))
	m.errors.Collect(ch)
}

// Stats is a copy of the counters, for `vpcd status`, tests and fleet-sim.
type Stats struct {
	Connected bool
	Revision  int64 // of the last snapshot sent
	FullReads int64 // reads of the whole prefix (1 at start, +1 per compaction or lost pending state)
	Events    int64 // watch events received
	Snapshots int64 // snapshots sent
}

// Stats returns the current counters.
func (m *Metrics) Stats() Stats {
	if m == nil {
		return Stats{}
	}
	return Stats{
		Connected: m.connected.Load(),
		Revision:  m.revision.Load(),
		FullReads: m.fullReads.Load(),
		Events:    m.events.Load(),
		Snapshots: m.snapshots.Load(),
	}
}

// Errors returns how many errors op has counted.
func (m *Metrics) Errors(op string) float64 {
	if m == nil {
		return 0
	}
	c, err := m.errors.GetMetricWithLabelValues(op)
	if err != nil {
		return 0
	}
	return readCounter(c)
}

func (m *Metrics) countError(op string) {
	if m != nil {
		m.errors.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) setConnected(up bool) {
	if m != nil {
		m.connected.Store(up)
	}
}
