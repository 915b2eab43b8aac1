package agent

import (
	"errors"
	"time"

	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/plan"
)

// flowLogSpecs are the plan's flow logs as the aggregator takes them. A
// log that runs (in running, by name) with the same account, traffic
// type, interval, format and destination keeps its sink (so Reconfigure
// continues it); the others have none yet (openSink gives them one).
func flowLogSpecs(p *plan.Host, running map[string]runningLog) []flowlogs.LogSpec {
	var specs []flowlogs.LogSpec
	for _, f := range p.FlowLogs {
		var sink flowlogs.Sink
		if r, ok := running[f.Name]; ok && sameOutput(r.plan, f) {
			sink = r.sink
		}
		specs = append(specs, flowlogs.LogSpec{Name: f.Name, AccountID: f.AccountID, ENIs: f.ENIs,
			TrafficType: f.TrafficType, Interval: f.Interval, Sink: sink})
	}
	return specs
}

// openSink opens the destination of the plan's flow log that sp is.
func (a *Agent) openSink(plans map[string]plan.FlowLog) func(flowlogs.LogSpec) (flowlogs.Sink, error) {
	return func(sp flowlogs.LogSpec) (flowlogs.Sink, error) {
		f := plans[sp.Name]
		format, err := flowlogs.ParseFormat(f.Format)
		if err != nil {
			return nil, err
		}
		return flowlogs.OpenSink(f.Destination, a.opts.Host, format)
	}
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

// startFlowLogs opens the plan's flow logs. The caller holds no lock.
func (a *Agent) startFlowLogs(p *plan.Host) error {
	fl := &a.flowLogs
	fl.Lock()
	fl.agg = flowlogs.NewAggregator(nil, time.Now())
	fl.specs, fl.plans = nil, nil
	fl.retired = map[string]logCounts{}
	fl.Unlock()
	// No drain first: what the datapath counted before (while no daemon
	// ran, say) goes to the logs about to start.
	return a.applyFlowLogs(p, false)
}

// reloadFlowLogs makes the plan's flow logs the running ones (a reload):
// a log that does not change, or changes only the ENIs it covers, goes on
// with its interval and sink; the others end their interval now and
// write anew. The counters of the logs ended are kept (retired), so the
// metrics of a log name never go back.
func (a *Agent) reloadFlowLogs(p *plan.Host) error {
	return a.applyFlowLogs(p, true)
}

// applyFlowLogs is reloadFlowLogs; drain takes the datapath's counters
// first, for the logs that run.
func (a *Agent) applyFlowLogs(p *plan.Host, drain bool) error {
	fl := &a.flowLogs
	fl.Lock()
	agg := fl.agg
	running := make(map[string]runningLog, len(fl.specs))
	for _, sp := range fl.specs {
		running[sp.Name] = runningLog{plan: fl.plans[sp.Name], sink: sp.Sink}
	}
	fl.Unlock()
	if agg == nil {
		return a.startFlowLogs(p)
	}
	plans := map[string]plan.FlowLog{}
	for _, f := range p.FlowLogs {
		plans[f.Name] = f
	}
	// What the datapath counted so far goes to the ENIs' old logs.
	if drain {
		a.drainFlows(time.Now())
	}
	fl.Lock()
	specs, ended, errs := agg.Reconfigure(flowLogSpecs(p, running), a.openSink(plans), time.Now())
	for name, st := range ended {
		c := fl.retired[name]
		c.records += st.Records
		c.lost += st.Lost
		if r, ok := running[name]; ok {
			c.lost += r.sink.Lost()
			c.errors += r.sink.Errors()
		}
		fl.retired[name] = c
	}
	fl.specs, fl.plans = specs, plans
	fl.Unlock()
	// Failures to open are the reload's errors; the others (an ended
	// log's last write) are logged.
	var openErrs []error
	for _, e := range errs {
		var fe *flowlogs.OpenError
		if errors.As(e, &fe) {
			openErrs = append(openErrs, e)
		} else {
			a.log.Warn("flow log destination at reload", "err", e)
		}
	}
	return errors.Join(openErrs...)
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
// their sinks: at shutdown.
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

// logCounts are the counters of a flow log's ended runs.
type logCounts struct{ records, lost, errors uint64 }
