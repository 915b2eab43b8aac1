package agent

import (
	"testing"
	"time"

	"github.com/vpcd/vpcd/dataplane"
)

// TestQueueLoss: copies queued and then sent or failed are never lost, even
// after a stall shorter than lossSettle; copies still missing lossSettle
// after they were queued are, and the count never goes down; a session
// new on the index starts from zero.
func TestQueueLoss(t *testing.T) {
	var q queueLoss
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	check := func(c dataplane.MirrorCounter, when time.Duration, want uint64) {
		t.Helper()
		if got := q.lost(1, c, at(when)); got != want {
			t.Fatalf("at %v with %+v: %d lost, want %d", when, c, got, want)
		}
	}
	// 100 queued; a stall: none sent for 2 s, then all of them.
	check(dataplane.MirrorCounter{Queued: 100}, 0, 0)
	check(dataplane.MirrorCounter{Queued: 100}, time.Second, 0)
	check(dataplane.MirrorCounter{Queued: 100, Sent: 10}, 2*time.Second, 0)
	check(dataplane.MirrorCounter{Queued: 100, Sent: 90, Failed: 10}, 2500*time.Millisecond, 0)
	check(dataplane.MirrorCounter{Queued: 100, Sent: 90, Failed: 10}, 4*time.Second, 0)
	// 50 more queued; 45 ever leave.
	check(dataplane.MirrorCounter{Queued: 150, Sent: 90, Failed: 10}, 5*time.Second, 0)
	check(dataplane.MirrorCounter{Queued: 150, Sent: 135, Failed: 10}, 6*time.Second, 0)
	check(dataplane.MirrorCounter{Queued: 150, Sent: 135, Failed: 10}, 8*time.Second, 5)
	// A late one does not take the count back.
	check(dataplane.MirrorCounter{Queued: 150, Sent: 136, Failed: 10}, 9*time.Second, 5)
	// A new session on the index: its counters start again.
	check(dataplane.MirrorCounter{Queued: 3}, 10*time.Second, 0)
	check(dataplane.MirrorCounter{Queued: 3, Sent: 3}, 14*time.Second, 0)
}
