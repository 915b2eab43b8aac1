package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/topology"
)

// flowLogSpecs resolves the topology's flow logs for this host, opening
// their sinks. A log that covers no local ENI is skipped.
func (a *Agent) flowLogSpecs(t *topology.Topology) ([]flowlogs.LogSpec, error) {
	var specs []flowlogs.LogSpec
	var errs []error
	for i := range t.FlowLogs {
		f := &t.FlowLogs[i]
		enis := map[string]flowlogs.ENIMeta{}
		for _, e := range t.FlowLogENIs(f) {
			if e.Host != a.opts.Host {
				continue
			}
			sub, vpc := t.SubnetByName(e.Subnet)
			if sub == nil || vpc == nil {
				continue
			}
			enis[e.Name] = flowlogs.ENIMeta{VPC: vpc.Name, Subnet: sub.Name, Instance: e.Instance, VNI: vpc.VNI}
		}
		if len(enis) == 0 {
			continue
		}
		format, err := flowlogs.ParseFormat(f.Format)
		if err != nil {
			errs = append(errs, fmt.Errorf("flow log %s: %w", f.Name, err))
			continue
		}
		sink, err := flowlogs.OpenSink(f.Destination, a.opts.Host, format)
		if err != nil {
			errs = append(errs, fmt.Errorf("flow log %s: %w", f.Name, err))
			continue
		}
		specs = append(specs, flowlogs.LogSpec{Name: f.Name, AccountID: t.AccountID, ENIs: enis,
			TrafficType: f.TrafficType, Interval: f.AggregationInterval, Sink: sink})
	}
	return specs, errors.Join(errs...)
}

// startFlowLogs opens the topology's flow logs. The caller holds no lock.
func (a *Agent) startFlowLogs(t *topology.Topology) error {
	specs, err := a.flowLogSpecs(t)
	a.mu.Lock()
	a.flowSpecs = specs
	a.flows = flowlogs.NewAggregator(specs, time.Now())
	a.mu.Unlock()
	return err
}

// drainFlows takes the datapath's counters and ends the intervals that are
// over.
func (a *Agent) drainFlows(now time.Time) {
	a.mu.Lock()
	d, err := a.dp.DrainFlows()
	agg := a.flows
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("drain flow counters", "err", err)
	}
	a.publishFlows(d)
	if agg == nil {
		return
	}
	agg.Add(d)
	a.logSinkErrors(agg.Tick(now), now)
}

// logSinkErrors logs sink failures at most once a minute: a collector that
// stays down would otherwise log every interval. Every failure is counted
// in vpcd_flowlog_sink_errors_total all the same.
func (a *Agent) logSinkErrors(errs []error, now time.Time) {
	if len(errs) == 0 || now.Sub(a.sinkErrLogged) < time.Minute {
		return
	}
	a.sinkErrLogged = now
	a.log.Warn("flow log destination failing (logged once a minute; see vpcd_flowlog_sink_errors_total)",
		"errors", len(errs), "first", errs[0])
}

// stopFlowLogs flushes every flow log (a last drain first) and closes
// their sinks: at shutdown and before a reload replaces them.
func (a *Agent) stopFlowLogs() {
	a.mu.Lock()
	agg := a.flows
	a.mu.Unlock()
	if agg == nil {
		return
	}
	a.drainFlows(time.Now())
	for _, err := range agg.Flush(time.Now()) {
		a.log.Warn("flow log destination at flush", "err", err)
	}
	agg.Close()
	a.mu.Lock()
	a.flows = nil
	a.mu.Unlock()
}
