package flowlogs

import (
	"io"
	"testing"
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
