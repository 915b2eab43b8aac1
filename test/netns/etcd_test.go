package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// upEtcdLab brings up a lab in etcd mode (lab up --etcd) from a topology
// file under testdata and tears it down when the test ends.
func upEtcdLab(t testing.TB, name, topo string) *lab.Lab {
	t.Helper()
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "etcd")
	return startLab(t, lab.Options{Name: name, TopologyPath: filepath.Join("testdata", topo), Binary: vpcdBinary, Etcd: true}, 90*time.Second, 40)
}

// waitPing waits until one ping from eni to dst is answered.
func waitPing(t *testing.T, l *lab.Lab, eni, dst string, within time.Duration) {
	t.Helper()
	testkit.WaitFor(t, within, eni+" reaching "+dst, func() bool {
		_, code := run(t, l, lab.ENI, eni, "ping", "-c", "1", "-W", "1", dst)
		return code == 0
	})
}

// peersOf lists the tunnel peers a host's daemon has.
func peersOf(t *testing.T, l *lab.Lab, host string) []string {
	t.Helper()
	st, err := control.QueryStatus(l.SocketPath(host))
	if err != nil {
		t.Fatalf("status of %s: %v", host, err)
	}
	var names []string
	for _, p := range st.Tunnel.Peers {
		names = append(names, p.Name)
	}
	return names
}

// etcdRevision reads the lab's etcd revision.
func etcdRevision(t *testing.T, l *lab.Lab) int64 {
	t.Helper()
	cli, err := l.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/vpcd/commit")
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	return resp.Header.Revision
}

// withENI writes the lab's source topology plus extra ENI lines to a
// temporary file.
func withENI(t *testing.T, lines ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "etcd-three-hosts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b) + strings.Join(lines, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// applyLab is `vpcd lab apply` in this process: the lab goes to the file
// through `vpcd apply` (the test's Lab keeps its state in step).
func applyLab(t *testing.T, l *lab.Lab, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Apply(ctx, path); err != nil {
		t.Fatalf("lab apply: %v", err)
	}
}

// labApply runs the command `vpcd lab apply` and returns its output and
// exit code. It changes nothing the test's Lab would not know of only
// when it fails.
func labApply(t *testing.T, l *lab.Lab, path string) (string, int) {
	t.Helper()
	out, err := exec.Command(vpcdBinary, "lab", "apply", "--name", l.Name(), "--topology", path).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(asExit(err, &ee)) {
		t.Fatalf("vpcd lab apply: %v", err)
	}
	if ee != nil {
		return string(out), ee.ExitCode()
	}
	return string(out), 0
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// TestEtcd runs SPEC §11's acceptance checks on one three-host lab in etcd
// mode (testdata/etcd-three-hosts.yaml: no public key in the file).
func TestEtcd(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "iperf3", "tcpdump", "tshark", "etcd", "etcdctl")
	l := upEtcdLab(t, "ea", "etcd-three-hosts.yaml")
	cfg, _ := l.EtcdConfig()
	etcdIP := strings.TrimSuffix(strings.TrimPrefix(cfg.Endpoints[0], "https://"), ":2379")

	t.Run("forwards and encrypts as in file mode", func(t *testing.T) {
		rack, rackPcap := capture(t, l, lab.Rack, "", "rack0")
		if !ping(t, l, "b1", "10.0.1.11", 3) {
			t.Fatal("b1 cannot reach b2 on its host")
		}
		if !ping(t, l, "b1", "10.0.1.12", 3) {
			t.Fatal("b1 (ea1) cannot reach b3 (ea2)")
		}
		if !ping(t, l, "b1", "10.0.2.20", 3) {
			t.Fatal("b1 (ea1, blue-a) cannot reach b4 (ea3, blue-b)")
		}
		if !pingNone(t, l, "r1", "10.0.1.10", 2) {
			t.Fatal("red r1 reached blue's 10.0.1.10")
		}
		srv := startIn(t, l, lab.ENI, "b4", "iperf3", "-s", "-1", "-p", "5201")
		awaitListening(t, l, "b4", 5201)
		out := mustRun(t, l, lab.ENI, "b1", "iperf3", "-c", "10.0.2.20", "-p", "5201", "-n", "4M")
		srv.stop()
		if !strings.Contains(out, "receiver") {
			t.Fatalf("TCP across hosts failed:\n%s", out)
		}
		rack.stop()
		wg := tshark(t, rackPcap, "wg && udp.port == 51820", "-d", "udp.port==51820,wg")
		if len(wg) < 20 {
			t.Fatalf("only %d WireGuard packets on the rack", len(wg))
		}
		if got := tshark(t, rackPcap, "vxlan || udp.port == 4789 || ip.addr == 10.0.0.0/8", "-d", "udp.port==51820,wg"); len(got) != 0 {
			t.Fatalf("VPC traffic in the clear on the rack:\n%s", strings.Join(got, "\n"))
		}
		// Besides WireGuard: only the daemons' TLS sessions with etcd,
		// ARP and link-local IPv6 housekeeping.
		etcdTraffic := fmt.Sprintf("(tcp.port == 2379 && ip.addr == %s)", etcdIP)
		other := tshark(t, rackPcap, "!(wg && udp.port == 51820) && !"+etcdTraffic+" && !arp && !(ipv6.src == fe80::/10 || ipv6.src == ::) && !(icmp.type == 3 && udp.port == 51820)", "-d", "udp.port==51820,wg")
		if len(other) != 0 {
			t.Fatalf("%d unexpected frames on the rack:\n%s", len(other), strings.Join(other[:min(len(other), 20)], "\n"))
		}
		clear := tshark(t, rackPcap, etcdTraffic+" && tcp.len > 0 && !tls", "-d", "tcp.port==2379,tls")
		if len(clear) != 0 {
			t.Fatalf("etcd traffic that is not TLS on the rack:\n%s", strings.Join(clear[:min(len(clear), 10)], "\n"))
		}
	})

	t.Run("TLS required", func(t *testing.T) {
		base := []string{"env", "ETCDCTL_API=3", "etcdctl", "--endpoints", cfg.Endpoints[0], "--cacert", cfg.CAFile, "--dial-timeout", "3s", "--command-timeout", "3s"}
		if out, code := run(t, l, lab.Rack, "", append(base, "get", "/vpcd/commit")...); code == 0 {
			t.Fatalf("a client without a certificate was served:\n%s", out)
		}
		mustRun(t, l, lab.Rack, "", append(base, "--cert", cfg.CertFile, "--key", cfg.KeyFile, "get", "/vpcd/commit")...)
	})

	t.Run("a new ENI applied is reachable from another host", func(t *testing.T) {
		path := withENI(t, "  - {name: b6, host: ea3, subnet: blue-b, ip: 10.0.2.30, security_groups: [blue-open]}")
		applyLab(t, l, path)
		waitPing(t, l, "b1", "10.0.2.30", 10*time.Second)
	})

	t.Run("an invalid file changes nothing", func(t *testing.T) {
		before := etcdRevision(t, l)
		path := withENI(t, "  - {name: b6, host: ea3, subnet: blue-b, ip: 10.0.2.30, security_groups: [blue-open]}",
			"  - {name: bad, host: ea3, subnet: blue-b, ip: 10.0.9.9}")
		out, code := labApply(t, l, path)
		if code != 1 || !strings.Contains(out, "enis[") {
			t.Fatalf("lab apply of an invalid file: exit %d, want 1 with the error's path:\n%s", code, out)
		}
		if after := etcdRevision(t, l); after != before {
			t.Fatalf("etcd revision %d -> %d after an invalid file", before, after)
		}
		if !ping(t, l, "b1", "10.0.2.30", 2) {
			t.Fatal("b6 unreachable after an invalid file")
		}
	})

	t.Run("rotate-key keeps loss under a second", func(t *testing.T) {
		lost1 := pingLoss(t, l, "b1", "10.0.2.20", 50, 100*time.Millisecond)
		lost2 := pingLoss(t, l, "b3", "10.0.2.20", 50, 100*time.Millisecond)
		old := peersKey(t, l, "ea3")
		if _, err := control.RotateKey(l.SocketPath("ea3")); err != nil {
			t.Fatal(err)
		}
		if peersKey(t, l, "ea3") == old {
			t.Fatal("rotate-key kept the key")
		}
		for name, lost := range map[string]func() int{"ea1": lost1, "ea2": lost2} {
			n := lost()
			t.Logf("rotate-key on ea3: from %s %d of 50 pings lost at 100 ms", name, n)
			if n > 10 {
				t.Errorf("from %s: %d pings lost at 100 ms: more than 1 s", name, n)
			}
		}
	})

	t.Run("etcd down for 20 s", func(t *testing.T) {
		lost := pingLoss(t, l, "b1", "10.0.1.12", 250, 100*time.Millisecond)
		if err := l.StopEtcd(); err != nil {
			t.Fatal(err)
		}
		// The outage itself lasts 20 s: that is the condition under test.
		time.Sleep(20 * time.Second)
		if err := l.StartEtcd(); err != nil {
			t.Fatal(err)
		}
		if n := lost(); n != 0 {
			t.Fatalf("%d of 250 pings lost while etcd was down", n)
		}
		path := withENI(t, "  - {name: b6, host: ea3, subnet: blue-b, ip: 10.0.2.30, security_groups: [blue-open]}",
			"  - {name: b7, host: ea2, subnet: blue-b, ip: 10.0.2.31, security_groups: [blue-open]}")
		applyLab(t, l, path)
		applied := time.Now()
		waitPing(t, l, "b1", "10.0.2.31", 30*time.Second)
		t.Logf("a change applied after etcd returned: reachable %.2f s after lab apply returned", time.Since(applied).Seconds())
	})

	t.Run("a killed host disappears after the TTL and returns", func(t *testing.T) {
		if err := l.Kill("ea3"); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		testkit.WaitFor(t, 20*time.Second, "ea3 gone from ea1's peers", func() bool {
			for _, p := range peersOf(t, l, "ea1") {
				if p == "ea3" {
					return false
				}
			}
			return true
		})
		t.Logf("ea3 gone from ea1's peers %.1f s after its daemon was killed (TTL 10 s)", time.Since(killed).Seconds())
		before := drops(t, l, "ea1")["no_tunnel"]
		if !pingNone(t, l, "b1", "10.0.2.20", 3) {
			t.Fatal("b4 answered while its host is gone")
		}
		if got := drops(t, l, "ea1")["no_tunnel"]; got <= before {
			t.Fatalf("no_tunnel drops %d -> %d for a host that is gone", before, got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		started := time.Now()
		if err := l.Start(ctx, "ea3"); err != nil {
			t.Fatal(err)
		}
		waitPing(t, l, "b1", "10.0.2.20", 10*time.Second)
		t.Logf("b4 reachable again %.1f s after ea3's daemon was started", time.Since(started).Seconds())
	})
}

// peersKey is the public key a host's daemon runs with.
func peersKey(t *testing.T, l *lab.Lab, host string) string {
	t.Helper()
	st, err := control.QueryStatus(l.SocketPath(host))
	if err != nil {
		t.Fatal(err)
	}
	return st.Tunnel.PublicKey
}
