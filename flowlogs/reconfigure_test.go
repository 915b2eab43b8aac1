package flowlogs

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/vpcd/vpcd/dataplane"
)

// recSink keeps what it is given.
type recSink struct {
	recs   []Record
	closed bool
}

func (s *recSink) Write(recs []Record) error { s.recs = append(s.recs, recs...); return nil }
func (s *recSink) Flush() error              { return nil }
func (s *recSink) Close() error              { s.closed = true; return nil }
func (s *recSink) Lost() uint64              { return 0 }
func (s *recSink) Errors() uint64            { return 0 }

// statuses is each record's ENI and status ("" for a flow's).
func statuses(recs []Record) map[string]string {
	out := map[string]string{}
	for _, r := range recs {
		out[r.InterfaceID] = string(r.LogStatus)
	}
	return out
}

// TestReconfigure: a reload keeps a log whose sink it keeps going (its
// interval, flows and counters, with the new ENIs), ends a log whose sink
// changed before opening its new one, and ends a log that is gone.
func TestReconfigure(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	meta := ENIMeta{VPC: "v", Subnet: "s"}
	sample := func(eni string, at time.Time) dataplane.FlowDrain {
		return dataplane.FlowDrain{Samples: []dataplane.FlowSample{{ENI: eni, Src: netip.MustParseAddr("10.0.0.1"),
			Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1000, DstPort: 80, Protocol: 6, Packets: 1, Bytes: 100, First: at, Last: at}}}
	}
	kept, changed, gone, fresh := &recSink{}, &recSink{}, &recSink{}, &recSink{}
	spec := func(name string, sink Sink, enis ...string) LogSpec {
		m := map[string]ENIMeta{}
		for _, e := range enis {
			m[e] = meta
		}
		return LogSpec{Name: name, ENIs: m, TrafficType: "ALL", Interval: time.Minute, Sink: sink}
	}
	a := NewAggregator([]LogSpec{spec("kept", kept, "e1"), spec("changed", changed, "e1"), spec("gone", gone, "e1")}, t0)
	a.Add(sample("e1", t0.Add(time.Second)))

	// The reload: "kept" now covers e2 too, "changed" needs a new sink
	// (nil: open makes it), "gone" is gone, "broken" cannot open.
	opened := map[string]bool{}
	open := func(s LogSpec) (Sink, error) {
		if s.Name == "broken" {
			return nil, errors.New("no such collector")
		}
		if !changed.closed || !gone.closed {
			t.Errorf("%s opened before the ended logs' sinks were closed", s.Name)
		}
		opened[s.Name] = true
		return fresh, nil
	}
	running, ended, errs := a.Reconfigure([]LogSpec{spec("kept", kept, "e1", "e2"), spec("changed", nil, "e1"), spec("broken", nil, "e1")}, open, t0.Add(10*time.Second))
	var oe *OpenError
	if len(errs) != 1 || !errors.As(errs[0], &oe) || oe.Log != "broken" {
		t.Fatalf("errors %v, want the one of broken's open", errs)
	}
	if len(running) != 2 || running[0].Sink != kept || running[1].Sink != fresh || !opened["changed"] {
		t.Fatalf("running %+v", running)
	}
	if ended["changed"].Records != 1 || ended["gone"].Records != 1 || len(ended) != 2 {
		t.Errorf("ended %+v, want changed and gone with 1 record each", ended)
	}
	if len(kept.recs) != 0 || kept.closed {
		t.Errorf("the kept log's interval was cut at the reload: %d records, closed %v", len(kept.recs), kept.closed)
	}
	if st := statuses(changed.recs); len(changed.recs) != 1 || st["e1"] != "OK" || !changed.closed {
		t.Errorf("the changed log's old sink: records %v, closed %v; want e1's flow, closed", st, changed.closed)
	}
	if st := statuses(gone.recs); len(gone.recs) != 1 || st["e1"] != "OK" || !gone.closed {
		t.Errorf("the removed log: records %v, closed %v; want e1's flow, closed", st, gone.closed)
	}

	a.Add(sample("e1", t0.Add(20*time.Second)))
	if errs := a.Tick(t0.Add(time.Minute)); len(errs) > 0 {
		t.Fatal(errs)
	}
	// One record for e1's flow over the whole minute (both drains), NODATA
	// for e2, which the log took up at the reload.
	if st := statuses(kept.recs); len(kept.recs) != 2 || st["e1"] != "OK" || st["e2"] != "NODATA" {
		t.Errorf("the kept log's minute: %v, want e1 OK and e2 NODATA", st)
	}
	for _, r := range kept.recs {
		if r.InterfaceID == "e1" && r.Packets != 2 {
			t.Errorf("e1's record counts %d packets, want both drains' 2", r.Packets)
		}
	}
	if st := statuses(fresh.recs); len(fresh.recs) != 1 || st["e1"] != "OK" {
		t.Errorf("the changed log's new sink: %v, want e1's flow since the reload", st)
	}
	stats := a.Stats()
	if stats["kept"].Records != 2 || stats["changed"].Records != 1 {
		t.Errorf("counters %+v: want kept 2 (its run goes on), changed 1 (since the reload)", stats)
	}
	if _, ok := stats["gone"]; ok {
		t.Error("the removed log still has counters")
	}
}

// TestTrafficPath: egress records say traffic-path 1 (within the VPC, as
// AWS for traffic that stays in it), ingress records leave it out ("-").
func TestTrafficPath(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	sink := &recSink{}
	a := NewAggregator([]LogSpec{{Name: "l", ENIs: map[string]ENIMeta{"e1": {}}, TrafficType: "ALL", Interval: time.Minute, Sink: sink}}, t0)
	var d dataplane.FlowDrain
	for _, dir := range []dataplane.Direction{dataplane.Egress, dataplane.Ingress} {
		d.Samples = append(d.Samples, dataplane.FlowSample{ENI: "e1", Direction: dir, Src: netip.MustParseAddr("10.0.0.1"),
			Dst: netip.MustParseAddr("10.0.0.2"), Protocol: 17, SrcPort: 5, DstPort: 6, Packets: 1, Bytes: 60, First: t0, Last: t0})
	}
	a.Add(d)
	a.Flush(t0.Add(time.Second))
	if len(sink.recs) != 2 {
		t.Fatalf("%d records, want 2", len(sink.recs))
	}
	for _, r := range sink.recs {
		want := 0
		if r.FlowDirection == DirectionEgress {
			want = TrafficPathSameVPC
		}
		if r.TrafficPath != want {
			t.Errorf("%s record: traffic-path %d, want %d", r.FlowDirection, r.TrafficPath, want)
		}
	}
}
