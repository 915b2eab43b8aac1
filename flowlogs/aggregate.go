package flowlogs

import (
	"sort"
	"sync"
	"time"

	"github.com/vpcd/vpcd/dataplane"
)

// ENIMeta is what a record says about the ENI it was made at.
type ENIMeta struct {
	VPC, Subnet, Instance string
	VNI                   uint32
}

// LogSpec is one flow log of the topology, resolved for this host.
type LogSpec struct {
	Name        string
	AccountID   string
	ENIs        map[string]ENIMeta // the local ENIs the log covers
	TrafficType string             // ALL, ACCEPT or REJECT
	Interval    time.Duration
	Sink        Sink
}

// LogStats counts one flow log's output.
type LogStats struct {
	Records uint64 // records handed to the sink
	Lost    uint64 // packets whose flow the datapath had no room for
}

type recKey struct {
	eni              string
	dir              dataplane.Direction
	reject           bool
	src, dst         [4]byte
	srcPort, dstPort uint16
	proto            uint8
}

type logState struct {
	spec   LogSpec
	window time.Time // start of the current interval
	flows  map[recKey]*Record
	lost   map[string]uint64
	stats  LogStats
}

// Aggregator turns the datapath's flow samples into each flow log's
// records: one per flow, ENI, direction and action per interval, NODATA
// for a covered ENI without traffic, SKIPDATA for one whose flows did not
// all fit the datapath's table.
//
// Its methods are safe for concurrent use.
type Aggregator struct {
	mu   sync.Mutex // guards logs
	logs []*logState
}

// NewAggregator starts an interval for every log at now.
func NewAggregator(specs []LogSpec, now time.Time) *Aggregator {
	a := &Aggregator{}
	for _, s := range specs {
		a.logs = append(a.logs, &logState{spec: s, window: now.Truncate(s.Interval),
			flows: map[recKey]*Record{}, lost: map[string]uint64{}})
	}
	return a
}

func wants(trafficType string, reject bool) bool {
	switch trafficType {
	case "ACCEPT":
		return !reject
	case "REJECT":
		return reject
	}
	return true
}

// Add merges one drain of the datapath into every log that covers its ENIs.
func (a *Aggregator) Add(d dataplane.FlowDrain) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.logs {
		for _, s := range d.Samples {
			meta, ok := l.spec.ENIs[s.ENI]
			if !ok || !wants(l.spec.TrafficType, s.Reject) {
				continue
			}
			l.add(s, meta)
		}
		for eni, n := range d.Lost {
			if _, ok := l.spec.ENIs[eni]; ok {
				l.lost[eni] += n
				l.stats.Lost += n
			}
		}
	}
}

func (l *logState) add(s dataplane.FlowSample, meta ENIMeta) {
	k := recKey{eni: s.ENI, dir: s.Direction, reject: s.Reject, src: s.Src.As4(), dst: s.Dst.As4(),
		srcPort: s.SrcPort, dstPort: s.DstPort, proto: s.Protocol}
	r, ok := l.flows[k]
	if !ok {
		r = &Record{
			AccountID: l.spec.AccountID, InterfaceID: s.ENI, SrcAddr: s.Src, DstAddr: s.Dst,
			SrcPort: s.SrcPort, DstPort: s.DstPort, Protocol: s.Protocol, Start: s.First, End: s.Last,
			Action: ActionAccept, LogStatus: StatusOK, VPCID: meta.VPC, SubnetID: meta.Subnet,
			InstanceID: meta.Instance, Type: "IPv4", FlowDirection: DirectionEgress, VNI: meta.VNI,
		}
		if s.Reject {
			r.Action = ActionReject
		}
		if s.Direction == dataplane.Ingress {
			r.FlowDirection = DirectionIngress
		} else {
			// AWS gives egress traffic its path; a vpcd VPC has
			// neither gateways nor peering: every path is 1.
			r.TrafficPath = TrafficPathSameVPC
		}
		r.EncryptionStatus = 0
		if s.Protocol == ProtoICMP { // the datapath keys ICMP by type and code
			r.ICMPType, r.ICMPCode = uint8(s.DstPort>>8), uint8(s.DstPort)
			r.SrcPort, r.DstPort = 0, 0
		}
		l.flows[k] = r
	}
	r.Packets += s.Packets
	r.Bytes += s.Bytes
	r.TCPFlags |= s.TCPFlags
	if s.Encrypted {
		r.EncryptionStatus = 1
	}
	if s.First.Before(r.Start) {
		r.Start = s.First
	}
	if s.Last.After(r.End) {
		r.End = s.Last
	}
}

// Tick ends the intervals that are over at now, handing their records to
// the sinks. It returns the sink errors it met.
func (a *Aggregator) Tick(now time.Time) []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, l := range a.logs {
		end := l.window.Add(l.spec.Interval)
		if now.Before(end) {
			continue
		}
		errs = append(errs, l.emit(end)...)
		l.window = now.Truncate(l.spec.Interval)
	}
	return errs
}

// Flush ends every interval now (shutdown), partial or not.
func (a *Aggregator) Flush(now time.Time) []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, l := range a.logs {
		errs = append(errs, l.emit(now)...)
		l.window = now
	}
	return errs
}

// Reconfigure makes specs the logs at now (a reload). A log whose name,
// Sink and interval are those of a running log continues it: its
// interval, the flows counted so far in it and its counters carry on, with
// the spec's ENIs and their details from now on (a reload that changes
// nothing about a log, or only which ENIs it covers, cuts no interval
// short). Every other running log ends its interval at now, handing its
// records to its sink, which is closed; its counters are returned in
// ended, by name. Only then are the specs without a Sink given one by
// open (a new log may write where an ended one did); one that open fails
// for is left out. It returns the specs that run, with their sinks, and
// the errors met.
func (a *Aggregator) Reconfigure(specs []LogSpec, open func(LogSpec) (Sink, error), now time.Time) (running []LogSpec, ended map[string]LogStats, errs []error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := map[string]*logState{}
	for _, l := range a.logs {
		old[l.spec.Name] = l
	}
	continues := func(s LogSpec) *logState {
		if l, ok := old[s.Name]; ok && s.Sink != nil && l.spec.Sink == s.Sink && l.spec.Interval == s.Interval {
			return l
		}
		return nil
	}
	kept := map[string]bool{}
	for _, s := range specs {
		if continues(s) != nil {
			kept[s.Name] = true
		}
	}
	ended = map[string]LogStats{}
	for _, l := range a.logs {
		if !kept[l.spec.Name] {
			errs = append(errs, l.emit(now)...)
			if err := l.spec.Sink.Close(); err != nil {
				errs = append(errs, err)
			}
			ended[l.spec.Name] = l.stats
		}
	}
	logs := make([]*logState, 0, len(specs))
	for _, s := range specs {
		if l := continues(s); l != nil {
			l.spec = s
			logs = append(logs, l)
			running = append(running, s)
			continue
		}
		if s.Sink == nil {
			sink, err := open(s)
			if err != nil {
				errs = append(errs, &OpenError{Log: s.Name, Err: err})
				continue
			}
			s.Sink = sink
		}
		logs = append(logs, &logState{spec: s, window: now.Truncate(s.Interval), flows: map[recKey]*Record{}, lost: map[string]uint64{}})
		running = append(running, s)
	}
	a.logs = logs
	return running, ended, errs
}

// OpenError is a flow log whose sink Reconfigure could not open.
type OpenError struct {
	Log string
	Err error
}

func (e *OpenError) Error() string { return "flow log " + e.Log + ": " + e.Err.Error() }
func (e *OpenError) Unwrap() error { return e.Err }

// Stats returns every log's counters by name.
func (a *Aggregator) Stats() map[string]LogStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]LogStats{}
	for _, l := range a.logs {
		out[l.spec.Name] = l.stats
	}
	return out
}

// Close closes every sink.
func (a *Aggregator) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.logs {
		l.spec.Sink.Close()
	}
}

// emit writes the interval [window, end) and starts afresh.
func (l *logState) emit(end time.Time) []error {
	recs := make([]Record, 0, len(l.flows)+len(l.spec.ENIs))
	seen := map[string]bool{}
	for _, r := range l.flows {
		recs = append(recs, *r)
		seen[r.InterfaceID] = true
	}
	for eni, meta := range l.spec.ENIs {
		status := ""
		switch {
		case l.lost[eni] > 0:
			status = StatusSkipData
		case !seen[eni]:
			status = StatusNoData
		default:
			continue
		}
		recs = append(recs, Record{AccountID: l.spec.AccountID, InterfaceID: eni, Start: l.window, End: end,
			LogStatus: status, VPCID: meta.VPC, SubnetID: meta.Subnet, InstanceID: meta.Instance,
			VNI: meta.VNI, EncryptionStatus: EncryptionUnknown})
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if recs[i].InterfaceID != recs[j].InterfaceID {
			return recs[i].InterfaceID < recs[j].InterfaceID
		}
		return recs[i].Start.Before(recs[j].Start)
	})
	l.flows = map[recKey]*Record{}
	l.lost = map[string]uint64{}
	var errs []error
	if err := l.spec.Sink.Write(recs); err != nil {
		errs = append(errs, err)
	}
	if err := l.spec.Sink.Flush(); err != nil {
		errs = append(errs, err)
	}
	l.stats.Records += uint64(len(recs))
	return errs
}
