package netns

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// pumpTaps joins every tap ENI of the lab to its namespace with a frame
// pump (tapio: tap queues with virtio-net headers, as a VMM's backend
// opens them) until the test ends.
func pumpTaps(t testing.TB, l *lab.Lab) {
	t.Helper()
	for _, e := range l.Topology().ENIs {
		if !e.IsTap() {
			continue
		}
		stop, err := l.StartPump(e.Name)
		if err != nil {
			t.Fatalf("pump for %s: %v", e.Name, err)
		}
		t.Cleanup(stop)
	}
}

// TestTapENIs: tap ENIs (SPEC §12) carry the VPC as veth ENIs do, with
// every rule of §3–§10 (testdata/taps.yaml: t1 a tap and v1 a veth on
// vg-h1, v2 a veth and t2 a tap on vg-h2).
func TestTapENIs(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "tcpdump", "tshark")
	l := upLab(t, "vg", "taps.yaml")
	rack, rackPcap := capture(t, l, lab.Rack, "", "rack0")
	pumpTaps(t, l)
	// Echo servers for the whole test (security_test.go).
	listen(t, l, "t2", "10.71.1.21:8080")
	listen(t, l, "t2", "10.71.1.21:9090")
	listen(t, l, "v2", "10.71.1.20:8080")
	listen(t, l, "t1", "10.71.1.10:9090")

	t.Run("the daemon made the taps and reports their hook", func(t *testing.T) {
		for host, want := range map[string]string{"vg-h1": "vpc-t1", "vg-h2": "vpc-t2"} {
			st, err := control.QueryStatus(l.SocketPath(host))
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, a := range st.Attachments {
				if a.Interface == want {
					found = true
					if a.Hook != "tcx-ingress" {
						t.Errorf("%s: %s runs at %s, want tcx-ingress (the measured choice for taps)", host, want, a.Hook)
					}
				}
			}
			if !found {
				t.Errorf("%s: no attachment on %s: %+v", host, want, st.Attachments)
			}
			out := mustRun(t, l, lab.Host, host, "ip", "-d", "link", "show", want)
			// Single-queue unless tap_multi_queue (t2): what Firecracker opens.
			if !strings.Contains(out, "tun type tap") || !strings.Contains(out, "vnet_hdr on") || !strings.Contains(out, "persist on") ||
				strings.Contains(out, "multi_queue") != (want == "vpc-t2") {
				t.Errorf("%s: %s is not a persistent tap with vnet headers and the queues asked for:\n%s", host, want, out)
			}
		}
		out := mustRun(t, l, lab.Host, "vg-h2", "ip", "-d", "link", "show", "vpc-t2")
		owner := "1000" // ip prints the name when the uid has one
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		if !strings.Contains(out, "user "+owner+" ") {
			t.Errorf("vpc-t2 is not owned by uid 1000 (tap_owner):\n%s", out)
		}
	})
	t.Run("ARP and ICMP every way", func(t *testing.T) {
		for _, c := range []struct{ from, to, why string }{
			{"t1", "10.71.1.11", "tap → veth, same host"},
			{"v1", "10.71.1.10", "veth → tap, same host"},
			{"t1", "10.71.1.20", "tap → veth, across hosts"},
			{"t1", "10.71.1.21", "tap → tap, across hosts"},
			{"v2", "10.71.1.10", "veth → tap, across hosts"},
		} {
			if !ping(t, l, c.from, c.to, 3) {
				t.Errorf("%s: %s cannot ping %s", c.why, c.from, c.to)
			}
		}
	})
	t.Run("security groups: the allowed port connects, the denied one does not, counted", func(t *testing.T) {
		c, err := dial(l, "t1", "10.71.1.21:8080")
		if err != nil {
			t.Fatalf("t1 → t2:8080 (allowed): %v", err)
		}
		if err := echo(c, strings.Repeat("vm", 4000)); err != nil {
			t.Errorf("t1 → t2:8080: %v", err)
		}
		c.Close()
		if !canConnect(l, "t1", "10.71.1.20:8080") {
			t.Error("t1 → v2:8080 (allowed) does not connect")
		}
		before := drops(t, l, "vg-h2")["sg_ingress"]
		if canConnect(l, "t1", "10.71.1.21:9090") {
			t.Error("t1 → t2:9090 (denied) connects")
		}
		if after := drops(t, l, "vg-h2")["sg_ingress"]; after <= before {
			t.Errorf("sg_ingress on vg-h2 went %d → %d: the denied SYN was not counted", before, after)
		}
		if canConnect(l, "v1", "10.71.1.10:9090") {
			t.Error("v1 → t1:9090 (denied, same host) connects")
		}
	})
	t.Run("a VMM's GSO frames cross the tunnel whole", func(t *testing.T) {
		// Frames written on a tap with GSO are marked "dodgy" and carry no
		// segment count yet: the ENI program must still see them as GSO
		// and not answer "fragmentation needed" to every one.
		before := drops(t, l, "vg-h1")["frag_needed"]
		c, err := dial(l, "t1", "10.71.1.21:8080")
		if err != nil {
			t.Fatalf("t1 → t2:8080: %v", err)
		}
		defer c.Close()
		if err := echo(c, strings.Repeat("0123456789abcdef", 1<<16)); err != nil {
			t.Errorf("1 MiB t1 → t2 and back: %v", err)
		}
		if after := drops(t, l, "vg-h1")["frag_needed"]; after != before {
			t.Errorf("frag_needed on vg-h1 went %d → %d: GSO frames from the tap were taken for oversized packets", before, after)
		}
	})
	t.Run("a spoofed source from the tap is dropped", func(t *testing.T) {
		mustRun(t, l, lab.ENI, "t1", "ip", "addr", "add", "10.71.1.99/32", "dev", "eth0")
		before := drops(t, l, "vg-h1")["source_check"]
		out, _ := run(t, l, lab.ENI, "t1", "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.71.1.99", "10.71.1.11")
		if !strings.Contains(out, " 0 received") {
			t.Errorf("a ping from a spoofed source got answers:\n%s", out)
		}
		if after := drops(t, l, "vg-h1")["source_check"]; after < before+2 {
			t.Errorf("source_check on vg-h1 went %d → %d, want +2", before, after)
		}
	})
	t.Run("flow logs cover the tap ENI", func(t *testing.T) {
		path := filepath.Join(l.Dir(), "flows", "vg-h1.log")
		var got string
		if !testkit.Eventually(5*time.Second, func() bool {
			b, _ := os.ReadFile(path)
			got = string(b)
			return strings.Contains(got, "10.71.1.10 10.71.1.21 8080 6 ACCEPT") && strings.Contains(got, "10.71.1.10 10.71.1.21 9090 6 ACCEPT")
		}) {
			t.Errorf("flow log %s lacks t1's connections:\n%s", path, got)
		}
		if !testkit.Eventually(5*time.Second, func() bool {
			b, _ := os.ReadFile(path)
			got = string(b)
			return strings.Contains(got, "10.71.1.11 10.71.1.10 9090 6 REJECT")
		}) {
			t.Errorf("flow log %s lacks the rejected v1 → t1:9090:\n%s", path, got)
		}
	})
	t.Run("a mirror session copies the tap ENI's traffic", func(t *testing.T) {
		path := filepath.Join(l.Dir(), "mirror", "t1.pcap")
		if !testkit.Eventually(3*time.Second, func() bool {
			return len(tshark(t, path, "icmp.type == 8 && ip.src == 10.71.1.10 && ip.dst == 10.71.1.21")) >= 3 &&
				len(tshark(t, path, "icmp.type == 0 && ip.src == 10.71.1.21 && ip.dst == 10.71.1.10")) >= 3
		}) {
			t.Errorf("pcap %s lacks t1's pings to t2 and their replies", path)
		}
		if n := len(tshark(t, path, "tcp.dstport == 8080 && ip.dst == 10.71.1.21")); n == 0 {
			t.Errorf("pcap %s lacks t1's TCP to t2:8080", path)
		}
	})
	t.Run("a daemon restart keeps tap traffic", func(t *testing.T) {
		same := pingLoss(t, l, "t1", "10.71.1.11", 200, 20*time.Millisecond)
		cross := pingLoss(t, l, "t1", "10.71.1.21", 200, 20*time.Millisecond)
		testkit.WaitFor(t, 5*time.Second, "pings under way", func() bool {
			st, err := control.QueryStatus(l.SocketPath("vg-h1"))
			return err == nil && len(st.ENIs) > 0 && st.ENIs[0].EgressPackets > 20
		})
		if err := l.Restart(t.Context(), "vg-h1"); err != nil {
			t.Fatal(err)
		}
		lostSame, lostCross := same(), cross()
		t.Logf("lost across a restart: %d of 200 on one host, %d of 200 across hosts", lostSame, lostCross)
		// The bounds of TestRestartAndCrash for veths.
		if lostSame > 2 || lostCross > 75 {
			t.Errorf("lost %d same-host (max 2) and %d cross-host (max 75)", lostSame, lostCross)
		}
		if !ping(t, l, "t1", "10.71.1.20", 2) {
			t.Error("t1 cannot reach v2 after the restart")
		}
	})
	t.Run("the rack carries only WireGuard", func(t *testing.T) {
		rack.stop()
		checkRackCapture(t, rackPcap)
	})
	t.Run("removing a tap ENI removes its tap", func(t *testing.T) {
		topo := filepath.Join(t.TempDir(), "taps.yaml")
		src, err := os.ReadFile(filepath.Join("testdata", "taps.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, line := range strings.Split(string(src), "\n") {
			if !strings.Contains(line, "name: t2,") {
				kept = append(kept, line)
			}
		}
		if err := os.WriteFile(topo, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l.Apply(t.Context(), topo); err != nil {
			t.Fatalf("lab apply: %v", err)
		}
		testkit.WaitFor(t, 10*time.Second, "vpc-t2 gone from vg-h2", func() bool {
			out, _ := run(t, l, lab.Host, "vg-h2", "ip", "link", "show", "vpc-t2")
			return strings.Contains(out, "does not exist")
		})
	})
}

// TestTapXDP: with --tap-hook xdp the ENI program runs at the taps' XDP
// hook and a tap ENI reaches another tap ENI of its host by XDP_REDIRECT
// (the only place XDP on a tap can deliver: docs/datapath.md), and the
// status reports the hook.
func TestTapXDP(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLabWith(t, "vgb", "taps-bench.yaml", "--tap-hook", "xdp")
	pumpTaps(t, l)
	st, err := control.QueryStatus(l.SocketPath("vgb-h1"))
	if err != nil {
		t.Fatal(err)
	}
	hooks := map[string]string{}
	for _, a := range st.Attachments {
		hooks[a.Interface] = a.Hook
	}
	if hooks["vpc-s1"] != "xdp" || hooks["vpc-s2"] != "xdp" || hooks["vpc-sv"] != "tcx-ingress" {
		t.Errorf("hooks %v: want xdp on the taps, tcx-ingress on the veth", hooks)
	}
	if !ping(t, l, "s1", "10.72.1.11", 3) || !ping(t, l, "s2", "10.72.1.10", 3) {
		t.Error("tap → tap on one host does not carry ICMP at XDP")
	}
}
