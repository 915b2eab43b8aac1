package tunnel

import (
	"time"

	"github.com/vpcd/vpcd/encap"
)

// A mirror session's copies of single packets (a bulk stream's ACKs, a
// request-response workload's every packet) reach the tunnel device one
// frame each, far apart: sent as they come, each would be a tunnel message
// of its own, encrypted, sent, received, decrypted and delivered to the
// target alone, for some 100 bytes. The device holds such copies for up
// to holdFor and sends those of one session and size together, as one
// batch of copies (batchMark) that the receiving vpcd writes to its kernel
// as one UDP GSO packet, as it does the kernel's batches. Copies are not
// traffic: a millisecond's delay costs an appliance nothing, and every
// copy is still sent once.
const holdFor = time.Millisecond

// holdSlots is how many runs of copies (a session's, of one size) are
// held at once: a request's copies and its response's differ in size, and
// a copy that fits no run held takes the oldest run's place.
const holdSlots = 4

// copyHold is one run of copies held: one packet, the first copy whole
// and each later one's UDP payload (VXLAN header and copied frame).
type copyHold struct {
	pkt   []byte
	g     int // every held copy's UDP payload length
	n     int // copies held
	since time.Time
}

// copyHolds are the runs held.
type copyHolds struct {
	runs [holdSlots]copyHold
}

// held reports whether any run holds copies.
func (c *copyHolds) held() bool {
	for i := range c.runs {
		if c.runs[i].n > 0 {
			return true
		}
	}
	return false
}

// holdable reports whether pkt, a single packet read from the kernel with
// its checksums complete, is a single mirror copy the device may hold (one
// that another of its size could join in a packet of the MTU), and its
// UDP payload length.
func holdable(pkt []byte, mtu int) (int, bool) {
	if mtu <= 0 || len(pkt) > mtu {
		return 0, false
	}
	payload, g, ok := mirrorUnit(pkt)
	return payload, ok && g == 0 && len(pkt)+payload <= mtu
}

// joins reports whether a copy pkt of payload bytes can go in the run:
// same session and flow, same size, room left.
func (h *copyHold) joins(pkt []byte, payload, mtu int) bool {
	return h.n > 0 && payload == h.g && len(h.pkt)+payload <= mtu && sameFlow(h.pkt, pkt)
}

// full reports whether no further copy of the run's size fits.
func (h *copyHold) full(mtu int) bool {
	return h.n >= maxCopies || len(h.pkt)+h.g > mtu
}

// flush writes the run to b as one tunnel packet (a lone copy as it came,
// several as a marked batch) and empties it.
func (h *copyHold) flush(b []byte) int {
	out := b[:len(h.pkt)]
	copy(out, h.pkt)
	if h.n > 1 {
		setCopiesLengths(out)
		markBatch(out, h.g)
	}
	h.n = 0
	return len(out)
}

// add holds pkt, a single copy of payload bytes, and writes to bufs the
// runs it ends: the oldest, when no run takes it and none is free, and
// its own, when that is full. It returns how many it wrote (at most 2).
func (c *copyHolds) add(pkt []byte, payload, mtu int, now time.Time, bufs [][]byte, sizes []int, offset int) int {
	n := 0
	var run *copyHold
	for i := range c.runs {
		if c.runs[i].joins(pkt, payload, mtu) {
			run = &c.runs[i]
			break
		}
	}
	if run == nil {
		var oldest *copyHold
		for i := range c.runs {
			r := &c.runs[i]
			if r.n == 0 {
				run = r
				break
			}
			if oldest == nil || r.since.Before(oldest.since) {
				oldest = r
			}
		}
		if run == nil {
			sizes[n] = oldest.flush(bufs[n][offset:])
			n++
			run = oldest
		}
		run.pkt = append(run.pkt[:0], pkt...)
		run.g, run.since, run.n = payload, now, 1
	} else {
		run.pkt = append(run.pkt, pkt[encap.InnerL4At+encap.UDPLen:]...)
		run.n++
	}
	if run.full(mtu) {
		sizes[n] = run.flush(bufs[n][offset:])
		n++
	}
	return n
}

// next is when the oldest run held is due (zero when none is held).
func (c *copyHolds) next() time.Time {
	var t time.Time
	for i := range c.runs {
		if r := &c.runs[i]; r.n > 0 && (t.IsZero() || r.since.Before(t)) {
			t = r.since
		}
	}
	if t.IsZero() {
		return t
	}
	return t.Add(holdFor)
}

// due reports whether a run held has waited holdFor (the clock is read
// only when one is held).
func (c *copyHolds) due() bool {
	next := c.next()
	return !next.IsZero() && !time.Now().Before(next)
}

// flushDue writes to bufs the runs that have waited holdFor, as many as
// bufs has room for, and returns how many it wrote.
func (c *copyHolds) flushDue(now time.Time, bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for i := range c.runs {
		if r := &c.runs[i]; r.n > 0 && n < len(bufs) && now.Sub(r.since) >= holdFor {
			sizes[n] = r.flush(bufs[n][offset:])
			n++
		}
	}
	return n
}
