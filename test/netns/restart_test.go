package netns

import (
	"net"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// pingLoss runs count pings at interval from eni to dst in the background
// and returns a function that waits for them and reports how many were
// lost.
func pingLoss(t *testing.T, l *lab.Lab, eni, dst string, count int, interval time.Duration) func() int {
	t.Helper()
	b := startIn(t, l, lab.ENI, eni, "ping", "-c", strconv.Itoa(count), "-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-W", "1", dst)
	return func() int {
		b.cmd.Wait()
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(b.out.String())
		if m == nil {
			t.Fatalf("ping from %s: %s", eni, b.out.String())
		}
		sent, _ := strconv.Atoi(m[1])
		got, _ := strconv.Atoi(m[2])
		return sent - got
	}
}

// TestRestartAndCrash measures traffic across a daemon restart (upgrade)
// and a crash: same-host traffic runs on the pinned datapath throughout,
// cross-host traffic resumes quickly.
func TestRestartAndCrash(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vr", "three-hosts.yaml")

	t.Run("restart: 400 pings at 20 ms", func(t *testing.T) {
		same := pingLoss(t, l, "b1", "10.0.1.11", 400, 20*time.Millisecond)
		cross := pingLoss(t, l, "b1", "10.0.1.12", 400, 20*time.Millisecond)
		time.Sleep(2 * time.Second) // paces the scenario: the restart comes mid-stream
		if err := l.Restart(t.Context(), "h1"); err != nil {
			t.Fatal(err)
		}
		lostSame, lostCross := same(), cross()
		t.Logf("lost across a restart: %d of 400 on one host, %d of 400 across hosts", lostSame, lostCross)
		if lostSame > 2 || lostCross > 75 {
			t.Errorf("lost %d same-host (max 2) and %d cross-host (max 75)", lostSame, lostCross)
		}
	})
	t.Run("kill: one host keeps forwarding; start brings the tunnel back", func(t *testing.T) {
		same := pingLoss(t, l, "b1", "10.0.1.11", 150, 20*time.Millisecond)
		time.Sleep(500 * time.Millisecond) // paces the scenario: the kill comes mid-stream
		if err := l.Kill("h1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // the host forwards without its daemon this long
		lost := same()
		t.Logf("lost while the daemon was dead: %d of 150 on one host", lost)
		if lost > 1 {
			t.Errorf("lost %d same-host pings while the daemon was dead (max 1)", lost)
		}
		start := time.Now()
		if err := l.Start(t.Context(), "h1"); err != nil {
			t.Fatal(err)
		}
		if !testkit.Eventually(3*time.Second, func() bool { return ping(t, l, "b1", "10.0.1.12", 1) }) {
			t.Fatal("cross-host traffic not back within 3 s of start")
		}
		t.Logf("cross-host traffic back %.2fs after lab start", time.Since(start).Seconds())
	})
}

// TestTeardown: SIGTERM leaves the datapath forwarding; vpcd teardown then
// removes every pin, detaches every program and deletes the tap the
// daemon made for a tap ENI (t1).
func TestTeardown(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	topo := editedTopology(t, "three-hosts.yaml", "enis:\n", "enis:\n  - {name: t1, host: h1, subnet: blue-a, ip: 10.0.1.30, security_groups: [blue-open], interface_type: tap}\n")
	l := upLab(t, "vd", topo)
	tapOf := func() error {
		return l.Do(lab.Host, "h1", func() error { _, err := net.InterfaceByName("vpc-t1"); return err })
	}
	if err := tapOf(); err != nil {
		t.Fatalf("the daemon made no tap for t1: %v", err)
	}
	if err := l.Stop("h1"); err != nil {
		t.Fatal(err)
	}
	if !ping(t, l, "b1", "10.0.1.11", 2) {
		t.Fatal("same-host traffic stopped with the daemon; the datapath should stay pinned")
	}
	out, code := run(t, l, lab.Host, "h1", vpcdBinary, "teardown", "--bpffs", l.BPFFSDir("h1"), "--tunnel-device", "wg-h1")
	if code != 0 {
		t.Fatalf("teardown: exit %d: %s", code, out)
	}
	if _, err := os.Stat(l.BPFFSDir("h1")); err == nil {
		t.Error("teardown left the bpffs directory")
	}
	var progs int
	l.Do(lab.Host, "h1", func() error {
		for _, ifname := range []string{"vpc-b1", "vpc-b2", "vpc-r1", "eth0"} {
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: ebpf.AttachTCXIngress})
			if err == nil {
				progs += len(res.Programs)
			}
		}
		return nil
	})
	if progs != 0 {
		t.Errorf("%d programs still attached after teardown", progs)
	}
	if !pingNone(t, l, "b1", "10.0.1.11", 1) {
		t.Error("traffic still forwarded after teardown")
	}
	if tapOf() == nil {
		t.Error("teardown left t1's tap vpc-t1")
	}
	// What the daemon did not make stays: the ENIs' veths are the lab's.
	if err := l.Do(lab.Host, "h1", func() error { _, err := net.InterfaceByName("vpc-b1"); return err }); err != nil {
		t.Errorf("teardown removed a veth vpcd did not make: %v", err)
	}
}

// TestPeerDown: with a peer host's daemon dead, traffic for it is dropped
// and counted as no_tunnel (nothing leaves in the clear: the rack capture
// of TestVPC covers kill/start), and it flows again once the peer is back.
func TestPeerDown(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vp", "three-hosts.yaml")
	if !ping(t, l, "b1", "10.0.1.12", 1) {
		t.Fatal("no traffic to h2 to begin with")
	}
	if err := l.Kill("h2"); err != nil {
		t.Fatal(err)
	}
	before := drops(t, l, "h1")["no_tunnel"]
	if !pingNone(t, l, "b1", "10.0.1.12", 5) {
		t.Fatal("pings answered by a host whose daemon is dead")
	}
	if got := drops(t, l, "h1")["no_tunnel"]; got <= before {
		t.Fatalf("no_tunnel drops %d -> %d while the peer was down: not counted", before, got)
	}
	start := time.Now()
	if err := l.Start(t.Context(), "h2"); err != nil {
		t.Fatal(err)
	}
	if !testkit.Eventually(5*time.Second, func() bool { return ping(t, l, "b1", "10.0.1.12", 1) }) {
		t.Fatal("traffic did not come back after the peer's daemon returned")
	}
	t.Logf("peer down: %d packets counted as no_tunnel; back %.2fs after start",
		drops(t, l, "h1")["no_tunnel"]-before, time.Since(start).Seconds())
}
