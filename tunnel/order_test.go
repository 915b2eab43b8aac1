package tunnel

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/internal/testkit"
)

// TestStartRunsBeforeUpWhileDown shows the order SPEC §10 asks for: the
// hook that attaches the tunnel program runs while the device exists but
// is still down, and the device goes up only after it.
func TestStartRunsBeforeUpWhileDown(t *testing.T) {
	testkit.InNewNetns(t, func() {
		key, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		const dev = "h2-order0"
		calls, upAtHook := 0, false
		cfg := Config{Device: dev, PrivateKey: key, MTU: 1420,
			BeforeUp: func(name string, ifindex int) error {
				calls++
				l, err := netlink.LinkByIndex(ifindex)
				if err != nil || l.Attrs().Name != name || name != dev {
					t.Errorf("hook got %s/%d, which is not the device: %v", name, ifindex, err)
					return nil
				}
				upAtHook = l.Attrs().Flags&net.FlagUp != 0
				return nil
			}}
		tn, err := Start(cfg, nil)
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		defer tn.Close()
		if calls != 1 {
			t.Fatalf("BeforeUp ran %d times, want once", calls)
		}
		if upAtHook {
			t.Fatal("the device was already up when BeforeUp ran: its program would be attached too late")
		}
		l, err := netlink.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Fatal("the device is not up after Start")
		}
	})
}

// TestStartFailsClosedWhenBeforeUpFails: when the program cannot be
// attached, the device never goes up and does not stay behind.
func TestStartFailsClosedWhenBeforeUpFails(t *testing.T) {
	testkit.InNewNetns(t, func() {
		key, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		const dev = "h2-order1"
		boom := errors.New("attach refused")
		cfg := Config{Device: dev, PrivateKey: key, MTU: 1420,
			BeforeUp: func(string, int) error { return boom }}
		tn, err := Start(cfg, nil)
		if err == nil {
			tn.Close()
			t.Fatal("Start succeeded although BeforeUp failed")
		}
		if !errors.Is(err, boom) {
			t.Errorf("error %v does not wrap the hook's", err)
		}
		if l, err := netlink.LinkByName(dev); err == nil {
			t.Errorf("device %s left behind (flags %v)", dev, l.Attrs().Flags)
		}
	})
}
