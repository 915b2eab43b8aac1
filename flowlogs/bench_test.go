package flowlogs

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/vpcd/vpcd/dataplane"
)

// BenchmarkFormatLine renders records in the default format; records/s is
// per core (run with -cpu 1 for the single-core figure).
func BenchmarkFormatLine(b *testing.B) {
	f := mustFormat(b, "default")
	recs := ipfixRecords(1024)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		buf = append(f.AppendLine(buf[:0], &recs[i%len(recs)]), '\n')
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkStdoutSinkWrite is the text sink end to end, without the disk: one
// interval of 10,000 records per Write.
func BenchmarkStdoutSinkWrite(b *testing.B) {
	s := NewStdoutSink(io.Discard, mustFormat(b, "default"))
	recs := ipfixRecords(10000)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Write(recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkIPFIXEncode encodes data records, without sending them.
func BenchmarkIPFIXEncode(b *testing.B) {
	s := &IPFIXSink{elems: elements()}
	recs := ipfixRecords(1024)
	buf := make([]byte, 0, maxMessageLen)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if len(buf) > maxMessageLen-100 {
			buf = buf[:0]
		}
		buf = s.appendRecord(buf, &recs[i%len(recs)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAggregateAndFormat is the daemon's flow-log work per record:
// one drain's samples folded into a log's records, the interval ended and
// every record formatted into the default line (a sink without a disk).
func BenchmarkAggregateAndFormat(b *testing.B) {
	const perDrain = 10000
	samples := make([]dataplane.FlowSample, perDrain)
	now := time.Unix(1700000000, 0)
	for i := range samples {
		samples[i] = dataplane.FlowSample{
			ENI: "e1", Direction: dataplane.Direction(i % 2), Src: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
			Dst: netip.MustParseAddr("10.0.9.9"), SrcPort: uint16(i), DstPort: 443, Protocol: 6,
			Packets: 10, Bytes: 1500, First: now, Last: now, TCPFlags: 2,
		}
	}
	spec := LogSpec{Name: "bench", ENIs: map[string]ENIMeta{"e1": {VPC: "v", Subnet: "s"}}, TrafficType: "ALL",
		Interval: time.Second, Sink: NewStdoutSink(io.Discard, mustFormat(b, "default"))}
	a := NewAggregator([]LogSpec{spec}, now)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Add(dataplane.FlowDrain{Samples: samples})
		now = now.Add(time.Second)
		if errs := a.Tick(now); len(errs) > 0 {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.N*perDrain)/b.Elapsed().Seconds(), "records/s")
}
