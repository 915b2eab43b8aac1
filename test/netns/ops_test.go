package netns

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// TestOperations covers the tunnel's keys, the metrics endpoint, and
// reloads through `lab apply` and through a broken file.
func TestOperations(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "wg")
	l := upLab(t, "vo", "two-hosts.yaml")

	t.Run("preshared key and private keys", func(t *testing.T) {
		out := mustRun(t, l, lab.Host, "a", "wg", "show", "wg-a")
		if !strings.Contains(out, "preshared key: (hidden)") {
			t.Errorf("wg show lists no preshared key:\n%s", out)
		}
		for _, h := range []string{"a", "b"} {
			p := filepath.Join(l.StateDir(h), "private.key")
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %o, want 0600", p, st.Mode().Perm())
			}
			key, _ := os.ReadFile(p)
			logb, _ := os.ReadFile(l.LogPath(h))
			if k := strings.TrimSpace(string(key)); k == "" || strings.Contains(string(logb), k) {
				t.Errorf("host %s: private key missing or written to the log", h)
			}
		}
		if !ping(t, l, "g-a1", "10.3.1.20", 2) {
			t.Fatal("no traffic over the tunnel with a preshared key")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		body := metrics(t, l, "a")
		for _, want := range []string{
			`vpcd_eni_packets_total{direction="egress",eni="g-a1"}`,
			`vpcd_eni_bytes_total{direction="ingress",eni="g-a1"}`,
			`vpcd_drops_total{reason="source_check"}`,
			`vpcd_drops_total{reason="underlay_filter"}`,
			`vpcd_tunnel_peer_last_handshake_seconds{peer="b"}`,
			`vpcd_tunnel_peer_bytes_total{direction="egress",peer="b"}`,
			`vpcd_config_reloads_total{result="error"}`,
			`vpcd_tunnel_device_dropped_total{direction="egress"}`,
			`vpcd_tunnel_device_dropped_total{direction="ingress"}`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if strings.Contains(body, "private") {
			t.Error("metrics mention a private key")
		}
		// The pings above crossed the tunnel device, each way at least
		// once per system call.
		for _, dir := range []string{"egress", "ingress"} {
			var calls, pkts float64
			fmt.Sscan(metricValue(t, l, "a", `vpcd_tunnel_device_syscalls_total{direction="`+dir+`"}`), &calls)
			fmt.Sscan(metricValue(t, l, "a", `vpcd_tunnel_device_packets_total{direction="`+dir+`"}`), &pkts)
			if calls < 1 || pkts < calls {
				t.Errorf("tunnel device %s: %v packets in %v system calls", dir, pkts, calls)
			}
		}
	})

	t.Run("a program detached by hand is repaired within 5 s and counted", func(t *testing.T) {
		// Unpinning the link from bpffs detaches the program: the daemon
		// holds no other reference.
		pin := filepath.Join(l.BPFFSDir("a"), "links", "eni-vpc-g-a1")
		if err := os.Remove(pin); err != nil {
			t.Fatalf("detach by hand: %v", err)
		}
		start := time.Now()
		if !testkit.Eventually(5*time.Second, func() bool { return integrityFailures(t, l, "a", "detached") > 0 }) {
			t.Fatal("the detached ENI program was not noticed within 5 s")
		}
		if !testkit.Eventually(5*time.Second-time.Since(start), func() bool { return ping(t, l, "g-a1", "10.3.1.20", 1) }) {
			t.Fatal("traffic did not come back within 5 s of the detach")
		}
		t.Logf("repaired and forwarding %.1fs after the detach", time.Since(start).Seconds())
	})
	t.Run("apply adds a reachable ENI; a broken file changes nothing", func(t *testing.T) {
		src, err := os.ReadFile(filepath.Join("testdata", "two-hosts.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		grown := strings.Replace(string(src), "  - {name: g-b1,", "  - {name: g-b2, host: b, subnet: g1, ip: 10.3.1.21, security_groups: [green-open]}\n  - {name: g-b1,", 1)
		p := filepath.Join(t.TempDir(), "grown.yaml")
		os.WriteFile(p, []byte(grown), 0o600)
		// A copy of the preshared key beside it keeps the same key.
		psk, _ := os.ReadFile(filepath.Join(l.Dir(), "psk"))
		os.WriteFile(filepath.Join(filepath.Dir(p), "psk"), psk, 0o600)
		start := time.Now()
		if err := l.Apply(t.Context(), p); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if !testkit.Eventually(10*time.Second, func() bool { return ping(t, l, "g-a1", "10.3.1.21", 1) }) {
			t.Fatal("the applied ENI is not reachable within 10 s")
		}
		t.Logf("new ENI reachable %.1fs after apply", time.Since(start).Seconds())

		broken := filepath.Join(filepath.Dir(p), "broken.yaml")
		os.WriteFile(broken, []byte(strings.Replace(grown, "vni: 3003", "vni: 0", 1)), 0o600)
		if err := l.Apply(t.Context(), broken); err == nil {
			t.Fatal("apply accepted a topology with VNI 0")
		}
		if !ping(t, l, "g-a1", "10.3.1.21", 2) {
			t.Fatal("traffic stopped after a refused apply")
		}

		// The daemon itself refuses a broken file it is told to load.
		before := reloadErrors(t, l, "a")
		good, _ := os.ReadFile(l.TopologyPath())
		os.WriteFile(l.TopologyPath(), []byte("version: 1\nhosts: [\n"), 0o600)
		defer os.WriteFile(l.TopologyPath(), good, 0o600)
		if !testkit.Eventually(10*time.Second, func() bool { return reloadErrors(t, l, "a") > before }) {
			t.Fatal("a broken topology file was not counted as a failed reload")
		}
		if !ping(t, l, "g-a1", "10.3.1.20", 2) || !ping(t, l, "g-a1", "10.3.1.21", 1) {
			t.Fatal("traffic changed after a refused reload")
		}
	})
	t.Run("a daemon that falls behind: tunnel queue drops are counted, traffic resumes", func(t *testing.T) {
		var before float64
		fmt.Sscan(metricValue(t, l, "a", `vpcd_tunnel_device_dropped_total{direction="egress"}`), &before)
		// Stopped, the daemon reads nothing from the tunnel device, whose
		// queue holds 500 packets: the rest of 1,500 is dropped there.
		resume := pauseDaemon(t, l, "a")
		run(t, l, lab.ENI, "g-a1", "ping", "-q", "-c", "1500", "-i", "0.0005", "-W", "1", "10.3.1.20")
		resume()
		var after float64
		if !testkit.Eventually(10*time.Second, func() bool {
			fmt.Sscan(metricValue(t, l, "a", `vpcd_tunnel_device_dropped_total{direction="egress"}`), &after)
			return after-before >= 500
		}) {
			t.Fatalf("tunnel queue drops went from %v to %v while the daemon was stopped; want 500 or more", before, after)
		}
		if !testkit.Eventually(10*time.Second, func() bool { return ping(t, l, "g-a1", "10.3.1.20", 1) }) {
			t.Fatal("traffic did not resume after the daemon went on")
		}
		t.Logf("%v packets dropped at the tunnel device while the daemon was stopped", after-before)
	})
}

func metrics(t *testing.T, l *lab.Lab, host string) string {
	t.Helper()
	var body string
	var conn net.Conn
	// The socket must be made on the thread inside the host's namespace;
	// net/http would dial from another goroutine, so dial here.
	err := l.Do(lab.Host, host, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", "127.0.0.1:9477", 3*time.Second)
		return err
	})
	if err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		var resp *http.Response
		req, _ := http.NewRequest("GET", "http://127.0.0.1:9477/metrics", nil)
		if err = req.Write(conn); err == nil {
			if resp, err = http.ReadResponse(bufio.NewReader(conn), req); err == nil {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				body, err = string(b), rerr
			}
		}
	}
	if err != nil {
		t.Fatalf("metrics of %s: %v", host, err)
	}
	return body
}

// metricValue returns the value of one series (name and labels, exactly
// as exposed) from a host's metrics, or "" when it is absent.
func metricValue(t *testing.T, l *lab.Lab, host, series string) string {
	t.Helper()
	for _, line := range strings.Split(metrics(t, l, host), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == series {
			return f[1]
		}
	}
	return ""
}

func reloadErrors(t *testing.T, l *lab.Lab, host string) string {
	t.Helper()
	return metricValue(t, l, host, `vpcd_config_reloads_total{result="error"}`)
}

func integrityFailures(t *testing.T, l *lab.Lab, host, reason string) float64 {
	t.Helper()
	var v float64
	fmt.Sscan(metricValue(t, l, host, `vpcd_datapath_integrity_failures_total{reason="`+reason+`"}`), &v)
	return v
}
