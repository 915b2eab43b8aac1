package flowlogs

import (
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/vpcd/vpcd/topology"
)

// Sink delivers flow-log records to one destination. Write gets one
// aggregation interval's records and Flush is called at the interval's end
// (and before Close on shutdown). A sink is used from one goroutine; Lost
// and Errors may be read from any. No call blocks beyond a bounded time on
// a reachable destination, and no sink buffers more than one Write's
// records: what cannot be delivered is counted, not queued.
type Sink interface {
	Write(recs []Record) error
	Flush() error
	Close() error
	// Lost returns how many records were not delivered.
	Lost() uint64
	// Errors returns how many writes or sends failed.
	Errors() uint64
}

// Defaults of Options.
const (
	DefaultMaxBytes        = 100 << 20 // rotate files beyond 100 MiB
	DefaultKeep            = 5         // keep PATH.1 .. PATH.5
	DefaultTemplateRefresh = 60 * time.Second
)

// Options tune the sinks OpenSinkOptions makes. The zero value gives the
// defaults.
type Options struct {
	MaxBytes        int64         // file size that triggers rotation; 0 = DefaultMaxBytes
	Keep            int           // rotated files kept; 0 = DefaultKeep, negative = none
	DomainID        uint32        // IPFIX observation domain; 0 = derived from the host name
	TemplateRefresh time.Duration // IPFIX template resend period; 0 = DefaultTemplateRefresh
	Stdout          io.Writer     // where "stdout" writes; nil = os.Stdout
}

// OpenSink opens the sink a flow log's destination names (file://PATH,
// jsonl+file://PATH, stdout or ipfix+udp://HOST:PORT) with default Options.
// host replaces {host} in file paths.
func OpenSink(dest, host string, f Format) (Sink, error) {
	return OpenSinkOptions(dest, host, f, Options{})
}

// OpenSinkOptions is OpenSink with Options.
func OpenSinkOptions(dest, host string, f Format, o Options) (Sink, error) {
	kind, target, err := topology.SplitDestination(dest)
	if err != nil {
		return nil, err // it names dest
	}
	o = o.withDefaults(host)
	var s Sink
	switch kind {
	case topology.DestFile:
		s, err = NewFileSink(target, host, f, o.MaxBytes, o.Keep)
	case topology.DestJSONL:
		s, err = NewJSONLinesSink(target, host, f, o.MaxBytes, o.Keep)
	case topology.DestStdout:
		s = NewStdoutSink(o.Stdout, f)
	case topology.DestIPFIX:
		s, err = NewIPFIXSink(target, o.DomainID, o.TemplateRefresh)
	default:
		err = fmt.Errorf("unsupported destination kind %q", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("flow-log destination %s: %w", dest, err)
	}
	return s, nil
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults(host string) Options {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	switch {
	case o.Keep == 0:
		o.Keep = DefaultKeep
	case o.Keep < 0:
		o.Keep = 0
	}
	if o.DomainID == 0 {
		o.DomainID = domainID(host)
	}
	if o.TemplateRefresh == 0 {
		o.TemplateRefresh = DefaultTemplateRefresh
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	return o
}

// domainID derives a stable, non-zero IPFIX observation domain from a host
// name, so that the hosts of a lab sharing a collector stay apart.
func domainID(host string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(host))
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

// counters are the loss and error counts every sink keeps.
type counters struct {
	lost, errors atomic.Uint64
}

// Lost returns how many records were not delivered.
func (c *counters) Lost() uint64 { return c.lost.Load() }

// Errors returns how many writes or sends failed.
func (c *counters) Errors() uint64 { return c.errors.Load() }

// fail counts one failed write or send that lost n records.
func (c *counters) fail(n int) {
	c.errors.Add(1)
	c.lost.Add(uint64(n))
}
