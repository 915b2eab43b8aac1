package agent

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// wireguard-go gives every packet in flight a 64 KiB buffer, and a TCP
// stream keeps its whole window in flight: one stream at full speed holds
// 200-300 MiB of buffers, which its sync.Pools keep after the traffic
// stops, until two garbage collections pass (one every two minutes on an
// idle daemon) and the scavenger returns the pages. The trimmer gives them
// back once the tunnel has been quiet for a while.
const (
	trimQuiet = 10 * time.Second // no packet through the tunnel device this long
	trimAbove = 48 << 20         // and the heap holds more than this
)

// memTrimmer decides when to give memory back; not safe for concurrent use.
type memTrimmer struct {
	packets     uint64 // the tunnel device's packets at the last look
	quietSince  time.Time
	trimmedOnce bool // already trimmed in this quiet spell
}

// due reports whether to trim now, given the tunnel device's packet count
// and the bytes the heap holds.
func (m *memTrimmer) due(now time.Time, packets, heldBytes uint64) bool {
	if packets != m.packets || m.quietSince.IsZero() {
		m.packets, m.quietSince, m.trimmedOnce = packets, now, false
		return false
	}
	if m.trimmedOnce || now.Sub(m.quietSince) < trimQuiet || heldBytes < trimAbove {
		return false
	}
	m.trimmedOnce = true
	return true
}

var heapSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
}

// heapHeld is the heap memory the runtime holds from the system: objects,
// the unused parts of their spans, and free pages not yet returned.
func heapHeld() uint64 {
	s := make([]metrics.Sample, len(heapSamples))
	copy(s, heapSamples)
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			n += x.Value.Uint64()
		}
	}
	return n
}

// trimMemory gives memory back when the tunnel has gone quiet after
// traffic: the first collection moves the pools' buffers to their victim
// caches, the second (in FreeOSMemory) frees them and returns the pages.
func (a *Agent) trimMemory(now time.Time) {
	if a.tun == nil {
		return
	}
	c := a.tun.Counters()
	if !a.trim.due(now, c.ReadPackets+c.WritePackets, heapHeld()) {
		return
	}
	before := residentBytes()
	runtime.GC()
	debug.FreeOSMemory()
	a.log.Info("tunnel quiet: returned buffer memory to the system", "resident_before_bytes", before, "resident_after_bytes", residentBytes())
}
