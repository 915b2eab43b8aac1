package netns

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
	"github.com/vpcd/vpcd/vm"
)

// needVMM fails the test when QEMU or busybox-static is missing: .ci/run
// and scripts/deps.sh install them, so on this project's machines a
// missing one is a broken machine, not a reason to skip.
func needVMM(t testing.TB) {
	t.Helper()
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, vm.Tools()...)
}

// vmUp boots a VM on a tap ENI of the lab; the lab's Down stops it, and
// the test's cleanup too.
func vmUp(t testing.TB, l *lab.Lab, eni string) *lab.VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := l.VMUp(ctx, eni)
	if err != nil {
		t.Fatalf("vm up %s: %v", eni, err)
	}
	t.Cleanup(func() { l.VMDown(eni) })
	return v
}

// vmRun runs one line of sh in a lab VM.
func vmRun(t testing.TB, l *lab.Lab, eni, cmd string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, code, err := l.VMExec(ctx, eni, cmd)
	if err != nil {
		t.Fatalf("vm %s: %s: %v\n%s", eni, cmd, err, out)
	}
	return out, code
}

// TestVMs runs real guest kernels (QEMU microvm under TCG, Debian's cloud
// kernel, a busybox initramfs) on tap ENIs of two hosts (testdata/vms.yaml)
// and checks what SPEC §12 promises them.
func TestVMs(t *testing.T) {
	needVMM(t)
	testkit.NeedTools(t, "tcpdump", "tshark")
	l := upLab(t, "vgv", "vms.yaml")
	// m2's VM is in the topology (vms: [m2]): lab up booted it.
	m2 := l.VMPID("m2")
	if m2 == 0 {
		t.Fatal("lab up did not boot the VM its topology lists on m2")
	}
	var status strings.Builder
	if err := l.Status(&status); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`(?m)^m2 +running pid %d `, m2); !regexp.MustCompile(want).MatchString(status.String()) {
		t.Errorf("lab status lacks a line %q:\n%s", want, status.String())
	}
	rack, rackPcap := capture(t, l, lab.Rack, "", "rack0")
	v := vmUp(t, l, "m1")
	t.Logf("VM on m1 at its shell %v after QEMU started", v.Boot.Round(time.Millisecond))
	listen(t, l, "c2", "10.74.1.20:8080")
	listen(t, l, "c2", "10.74.1.20:9090")
	listen(t, l, "c3", "10.74.2.20:7070")
	listen(t, l, "c3", "10.74.2.20:8080")
	// m2's guest serves TCP 8080 and 9090 with busybox nc (one connection
	// each; -e cat echoes).
	vmRun(t, l, "m2", "nc -l -p 8080 -e cat >/dev/null 2>&1 &")
	vmRun(t, l, "m2", "nc -l -p 9090 -e cat >/dev/null 2>&1 &")

	t.Run("the VM pings a container on another host and a VM there", func(t *testing.T) {
		for _, dst := range []string{"10.74.1.20", "10.74.1.21"} {
			if out, code := vmRun(t, l, "m1", "ping -c 3 -W 2 "+dst); code != 0 {
				t.Errorf("m1 → %s: status %d\n%s", dst, code, out)
			}
		}
	})
	t.Run("the VM opens TCP to a container and to a VM on another host", func(t *testing.T) {
		if out, _ := vmRun(t, l, "m1", "echo vm-to-container | nc -w 3 10.74.1.20 8080"); !strings.Contains(out, "vm-to-container") {
			t.Errorf("m1 → c2:8080 echoed %q", out)
		}
		if out, _ := vmRun(t, l, "m1", "echo vm-to-vm | nc -w 3 10.74.1.21 8080"); !strings.Contains(out, "vm-to-vm") {
			t.Errorf("m1 → m2:8080 echoed %q", out)
		}
	})
	t.Run("security groups apply to the VM's ENI: the denied port does not connect, counted", func(t *testing.T) {
		before := drops(t, l, "vgv-h2")["sg_ingress"]
		if out, _ := vmRun(t, l, "m1", "echo denied | nc -w 2 10.74.1.21 9090"); strings.Contains(out, "denied") {
			t.Errorf("m1 → m2:9090 (denied) echoed %q", out)
		}
		if after := drops(t, l, "vgv-h2")["sg_ingress"]; after <= before {
			t.Errorf("sg_ingress on vgv-h2 went %d → %d", before, after)
		}
	})
	t.Run("the subnet's network ACL applies to the VM's traffic, counted", func(t *testing.T) {
		if out, _ := vmRun(t, l, "m1", "echo other-subnet | nc -w 3 10.74.2.20 8080"); !strings.Contains(out, "other-subnet") {
			t.Errorf("m1 → c3:8080 (allowed) echoed %q", out)
		}
		before := drops(t, l, "vgv-h2")["nacl_ingress"]
		if out, _ := vmRun(t, l, "m1", "echo acl | nc -w 2 10.74.2.20 7070"); strings.Contains(out, "acl") {
			t.Errorf("m1 → c3:7070 (denied by vms2's ACL) echoed %q", out)
		}
		if after := drops(t, l, "vgv-h2")["nacl_ingress"]; after <= before {
			t.Errorf("nacl_ingress on vgv-h2 went %d → %d", before, after)
		}
	})
	t.Run("flow logs and a mirror session cover the VM's ENI", func(t *testing.T) {
		if canConnect(l, "c2", "10.74.1.10:9090") {
			t.Error("c2 → m1:9090 (denied) connects")
		}
		path := filepath.Join(l.Dir(), "flows", "vgv-h1.log")
		var got string
		if !testkit.Eventually(5*time.Second, func() bool {
			b, _ := os.ReadFile(path)
			got = string(b)
			return strings.Contains(got, "10.74.1.10 10.74.1.20 8080 6 ACCEPT") && strings.Contains(got, "10.74.1.20 10.74.1.10 9090 6 REJECT")
		}) {
			t.Errorf("flow log %s lacks m1's accepted and rejected flows:\n%s", path, got)
		}
		pcap := filepath.Join(l.Dir(), "mirror", "m1.pcap")
		if !testkit.Eventually(3*time.Second, func() bool {
			return len(tshark(t, pcap, "icmp.type == 8 && ip.src == 10.74.1.10")) >= 3 &&
				len(tshark(t, pcap, "tcp.dstport == 8080 && ip.src == 10.74.1.10")) > 0
		}) {
			t.Errorf("pcap %s lacks m1's pings and TCP", pcap)
		}
	})
	t.Run("a spoofed source from inside the VM is dropped", func(t *testing.T) {
		before := drops(t, l, "vgv-h1")["source_check"]
		vmRun(t, l, "m1", "ip addr add 10.74.1.99/32 dev eth0")
		if out, code := vmRun(t, l, "m1", "ping -c 2 -W 1 -I 10.74.1.99 10.74.1.20"); code == 0 {
			t.Errorf("a spoofed ping got answers:\n%s", out)
		}
		vmRun(t, l, "m1", "ip addr del 10.74.1.99/32 dev eth0")
		if after := drops(t, l, "vgv-h1")["source_check"]; after < before+2 {
			t.Errorf("source_check on vgv-h1 went %d → %d, want +2", before, after)
		}
	})
	t.Run("a daemon restart keeps the VM's traffic", func(t *testing.T) {
		// 200 pings 20 ms apart from inside the guest, across hosts, with
		// the restart in the middle: TestRestartAndCrash's bound for veths.
		vmRun(t, l, "m1", "ping -c 200 -i 0.02 -W 1 10.74.1.20 >/tmp/restart.ping 2>&1 &")
		testkit.WaitFor(t, 10*time.Second, "the guest's pings under way", func() bool {
			out, _ := vmRun(t, l, "m1", "grep -c 'bytes from' /tmp/restart.ping")
			n, _ := strconv.Atoi(strings.TrimSpace(out))
			return n >= 20
		})
		if err := l.Restart(t.Context(), "vgv-h1"); err != nil {
			t.Fatal(err)
		}
		var summary string
		testkit.WaitFor(t, 30*time.Second, "the guest's pings done", func() bool {
			summary, _ = vmRun(t, l, "m1", "grep 'packets transmitted' /tmp/restart.ping")
			return strings.Contains(summary, "received")
		})
		var sent, got int
		if _, err := fmt.Sscanf(strings.TrimSpace(summary), "%d packets transmitted, %d packets received", &sent, &got); err != nil {
			t.Fatalf("ping summary %q: %v", summary, err)
		}
		t.Logf("lost across a restart: %d of %d from the VM across hosts", sent-got, sent)
		if sent-got > 75 {
			t.Errorf("lost %d of %d across hosts (max 75)", sent-got, sent)
		}
		if out, code := vmRun(t, l, "m1", "ping -c 3 -W 2 10.74.1.20"); code != 0 {
			t.Errorf("m1 → c2 after the restart: status %d\n%s", code, out)
		}
	})
	t.Run("the rack carries only WireGuard", func(t *testing.T) {
		rack.stop()
		checkRackCapture(t, rackPcap)
	})
	t.Run("lab apply follows the vms list", func(t *testing.T) {
		apply := func(vms string) {
			t.Helper()
			p := editedTopology(t, "vms.yaml", "vms: [m2]", "vms: "+vms)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			if err := l.Apply(ctx, p); err != nil {
				t.Fatalf("apply with vms: %s: %v", vms, err)
			}
		}
		apply("[]")
		if running(m2) || l.VMPID("m2") != 0 {
			t.Errorf("m2's VM (pid %d) still runs after an apply without it", m2)
		}
		if l.VMPID("m1") == 0 {
			t.Error("an apply stopped m1's VM, which no list named")
		}
		apply("[m2]")
		if m2 = l.VMPID("m2"); m2 == 0 {
			t.Fatal("an apply naming m2 again did not boot its VM")
		}
		if out, code := vmRun(t, l, "m2", "ping -c 1 -W 2 10.74.1.20"); code != 0 {
			t.Errorf("m2's new VM → c2: status %d\n%s", code, out)
		}
	})
	t.Run("lab down stops both VMs, the topology's and the one started after", func(t *testing.T) {
		m1 := l.VMPID("m1")
		if m1 == 0 {
			t.Fatal("m1's VM is not running before lab down")
		}
		if err := lab.Down(l.Name()); err != nil {
			t.Fatal(err)
		}
		for eni, pid := range map[string]int{"m1": m1, "m2": m2} {
			if running(pid) {
				t.Errorf("%s's QEMU (pid %d) still runs after lab down", eni, pid)
			}
		}
	})
}

// running reports whether process pid exists and is not a zombie (a
// killed QEMU this test process started stays one until reaped).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	rest := string(b)[strings.LastIndexByte(string(b), ')')+1:]
	f := strings.Fields(rest)
	return len(f) > 0 && f[0] != "Z"
}

// BenchmarkVMBootToPing measures a VM on a tap ENI from starting QEMU
// (microvm, TCG) to the guest's first answered ping of an ENI on another
// host, and to its shell on the way.
func BenchmarkVMBootToPing(b *testing.B) {
	needVMM(b)
	l := upLab(b, "vgv", "vms.yaml")
	var shell, toPing time.Duration
	for range b.N {
		start := time.Now()
		v := vmUp(b, l, "m1")
		shell += v.Boot
		for {
			if _, code := vmRun(b, l, "m1", "ping -c 1 -W 1 10.74.1.20 >/dev/null"); code == 0 {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatal("no ping answered a minute after start")
			}
		}
		toPing += time.Since(start)
		if err := l.VMDown("m1"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(shell.Seconds()/float64(b.N), "s-to-shell")
	b.ReportMetric(toPing.Seconds()/float64(b.N), "s-to-ping")
}
