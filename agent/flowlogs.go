package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/plan"
)

// flowLogSpecs opens the sinks of the plan's flow logs. A log that runs
// (in running, by name) with the same account, traffic type, interval,
// format and destination keeps its sink (so Reconfigure continues it).
func (a *Agent) flowLogSpecs(p *plan.Host, running map[string]runningLog) ([]flowlogs.LogSpec, error) {
	var specs []flowlogs.LogSpec
	var errs []error
	for _, f := range p.FlowLogs {
		var sink flowlogs.Sink
		if r, ok := running[f.Name]; ok && sameOutput(r.plan, f) {
			sink = r.sink
		} else {
			format, err := flowlogs.ParseFormat(f.Format)
			if err != nil {
				errs = append(errs, fmt.Errorf("flow log %s: %w", f.Name, err))
				continue
			}
			if sink, err = flowlogs.OpenSink(f.Destination, a.opts.Host, format); err != nil {
				errs = append(errs, fmt.Errorf("flow log %s: %w", f.Name, err))
				continue
			}
		}
		specs = append(specs, flowlogs.LogSpec{Name: f.Name, AccountID: f.AccountID, ENIs: f.ENIs,
			TrafficType: f.TrafficType, Interval: f.Interval, Sink: sink})
	}
	return specs, errors.Join(errs...)
}

// runningLog is a flow log that runs: its plan and its sink.
type runningLog struct {
	plan plan.FlowLog
	sink flowlogs.Sink
}

// sameOutput reports whether flow logs a and b write the same records
// to the same place, whatever ENIs they cover.
func sameOutput(a, b plan.FlowLog) bool {
	return a.AccountID == b.AccountID && a.TrafficType == b.TrafficType && a.Interval == b.Interval &&
		a.Format == b.Format && a.Destination == b.Destination
}

// running returns the flow logs that run, by name. The caller holds
// a.flowLogs.
func (a *Agent) running() map[string]runningLog {
	fl := &a.flowLogs
	out := make(map[string]runningLog, len(fl.specs))
	for _, sp := range fl.specs {
		out[sp.Name] = runningLog{plan: fl.plans[sp.Name], sink: sp.Sink}
	}
	return out
}

// reloadFlowLogs makes the plan's flow logs the running ones (a reload):
// a log that does not change, or changes only the ENIs it covers, goes on
// with its interval and sink; the others end their interval now. The
// counters of the sinks closed are kept, so the metrics never go back.
func (a *Agent) reloadFlowLogs(p *plan.Host) error {
	fl := &a.flowLogs
	fl.Lock()
	agg, running := fl.agg, a.running()
	fl.Unlock()
	if agg == nil {
		return a.startFlowLogs(p)
	}
	specs, err := a.flowLogSpecs(p, running)
	plans := map[string]plan.FlowLog{}
	for _, f := range p.FlowLogs {
		plans[f.Name] = f
	}
	kept := map[flowlogs.Sink]bool{}
	for _, sp := range specs {
		kept[sp.Sink] = true
	}
	// What the datapath counted so far goes to the ENIs' old logs.
	a.drainFlows(time.Now())
	fl.Lock()
	errs := agg.Reconfigure(specs, time.Now())
	for name, r := range running {
		if !kept[r.sink] {
			c := fl.retired[name]
			c.lost += r.sink.Lost()
			c.errors += r.sink.Errors()
			fl.retired[name] = c
		}
	}
	fl.specs, fl.plans = specs, plans
	fl.Unlock()
	for _, e := range errs {
		a.log.Warn("flow log destination at reload", "err", e)
	}
	return err
}

// startFlowLogs opens the plan's flow logs. The caller holds no lock.
func (a *Agent) startFlowLogs(p *plan.Host) error {
	specs, err := a.flowLogSpecs(p, nil)
	plans := map[string]plan.FlowLog{}
	for _, f := range p.FlowLogs {
		plans[f.Name] = f
	}
	fl := &a.flowLogs
	fl.Lock()
	fl.specs, fl.plans = specs, plans
	if fl.retired == nil {
		fl.retired = map[string]sinkCounts{}
	}
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

// sinkCounts are a replaced sink's counters.
type sinkCounts struct{ lost, errors uint64 }
