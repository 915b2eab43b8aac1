package testkit

import (
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestEventually(t *testing.T) {
	n := 0
	if !Eventually(time.Second, func() bool { n++; return n == 3 }) {
		t.Fatal("a condition true on the third call did not count")
	}
	if n != 3 {
		t.Fatalf("cond ran %d times after it held, want 3", n)
	}
	start := time.Now()
	if Eventually(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds counted")
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("gave up before the timeout")
	}
}

// The test runs in a namespace of its own (a link made there is not seen
// outside) and comes back to the one it started in.
func TestInNewNetns(t *testing.T) {
	NeedRoot(t, "creates a network namespace")
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	InNewNetns(t, func() {
		inside, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer inside.Close()
		if inside.Equal(before) {
			t.Fatal("fn runs in the test's own namespace")
		}
		la := netlink.NewLinkAttrs()
		la.Name = "hd-kit0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "hd-kit1"}); err != nil {
			t.Fatal(err)
		}
	})
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Fatal("the thread did not come back to its namespace")
	}
	if _, err := netlink.LinkByName("hd-kit0"); err == nil {
		t.Fatal("a link made in the new namespace shows in the test's own")
	}
}
