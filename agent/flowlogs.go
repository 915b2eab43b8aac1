package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/plan"
)

// flowLogSpecs opens the sinks of the plan's flow logs.
func (a *Agent) flowLogSpecs(p *plan.Host) ([]flowlogs.LogSpec, error) {
	var specs []flowlogs.LogSpec
	var errs []error
	for _, f := range p.FlowLogs {
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
		specs = append(specs, flowlogs.LogSpec{Name: f.Name, AccountID: f.AccountID, ENIs: f.ENIs,
			TrafficType: f.TrafficType, Interval: f.Interval, Sink: sink})
	}
	return specs, errors.Join(errs...)
}

// startFlowLogs opens the plan's flow logs. The caller holds no lock.
func (a *Agent) startFlowLogs(p *plan.Host) error {
	specs, err := a.flowLogSpecs(p)
	plans := map[string]plan.FlowLog{}
	for _, f := range p.FlowLogs {
		plans[f.Name] = f
	}
	fl := &a.flowLogs
	fl.Lock()
	fl.specs, fl.plans = specs, plans
	fl.agg = flowlogs.NewAggregator(specs, time.Now())
	fl.Unlock()
	return err
}

// drainFlows takes the datapath's counters and ends the intervals that are
// over.
func (a *Agent) drainFlows(now time.Time) {
	a.state.Lock()
	d, err := a.dp.DrainFlows()
	a.state.Unlock()
	a.flowLogs.Lock()
	agg := a.flowLogs.agg
	a.flowLogs.Unlock()
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
	a.flowLogs.Lock()
	agg := a.flowLogs.agg
	a.flowLogs.Unlock()
	if agg == nil {
		return
	}
	a.drainFlows(time.Now())
	for _, err := range agg.Flush(time.Now()) {
		a.log.Warn("flow log destination at flush", "err", err)
	}
	agg.Close()
	a.flowLogs.Lock()
	a.flowLogs.agg = nil
	a.flowLogs.Unlock()
}
