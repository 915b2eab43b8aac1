package agent

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// The trimmer fires once per quiet spell: after trimQuiet without a packet
// through the tunnel, with more than trimAbove held; never during traffic.
func TestMemTrimmerDue(t *testing.T) {
	var m memTrimmer
	t0 := time.Unix(1000, 0)
	big, small := uint64(trimAbove+1), uint64(trimAbove-1)
	steps := []struct {
		at      time.Duration
		packets uint64
		held    uint64
		want    bool
	}{
		{0, 10, big, false},                     // first look
		{2 * time.Second, 500, big, false},      // traffic
		{4 * time.Second, 900, big, false},      // traffic
		{6 * time.Second, 900, big, false},      // quiet for 2 s
		{14 * time.Second, 900, big, true},      // quiet for 10 s: trim
		{16 * time.Second, 900, big, false},     // once per spell
		{18 * time.Second, 901, big, false},     // traffic again
		{30 * time.Second, 901, small, false},   // quiet, but little held
		{32 * time.Second, 901, big, true},      // now it holds more
		{34 * time.Second, 1 << 40, big, false}, // traffic
		{40 * time.Second, 1 << 40, big, false}, // quiet 6 s
		{44 * time.Second, 1 << 40, big, true},  // quiet 10 s
	}
	for _, s := range steps {
		if got := m.due(t0.Add(s.at), s.packets, s.held); got != s.want {
			t.Errorf("at %v (packets %d, held %d): due = %v, want %v", s.at, s.packets, s.held, got, s.want)
		}
	}
}

// heapHeld follows what the heap holds: 64 MiB more while a 64 MiB
// object lives; after it dies and the pages go back to the system, at
// least 48 MiB of that is gone again. A metric name the runtime does not
// know reads as nothing, and fails the first check.
func TestHeapHeld(t *testing.T) {
	const size = 64 << 20
	runtime.GC()
	debug.FreeOSMemory()
	base := heapHeld()
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	held := heapHeld()
	// base counts free pages too, which the scavenger may return in the
	// meantime: allow it a MiB.
	if held+1<<20 < base+size {
		t.Fatalf("heapHeld() = %d with a %d-byte object live, up from %d: want about %d more", held, size, base, size)
	}
	runtime.KeepAlive(buf) // dead from here on
	runtime.GC()
	debug.FreeOSMemory()
	if after := heapHeld(); after > held-48<<20 {
		t.Fatalf("heapHeld() = %d after the object died and memory went back, %d with it live: want at least 48 MiB less", after, held)
	}
}
