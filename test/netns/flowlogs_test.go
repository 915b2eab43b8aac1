package netns

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// flowRec is one line of the test's flow-log format.
type flowRec struct {
	eni, dir, src, dst, sport, dport, proto string
	packets, bytes                          uint64
	action, status, flags, encrypted        string
}

// readFlowLogs reads every host's flow-log file of the lab.
func readFlowLogs(t *testing.T, dir string, hosts ...string) []flowRec {
	t.Helper()
	var out []flowRec
	for _, h := range hosts {
		f, err := os.Open(filepath.Join(dir, "flows", h+".log"))
		if err != nil {
			t.Fatalf("flow log of %s: %v", h, err)
		}
		sc := bufio.NewScanner(f)
		first := true
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if first {
				first = false
				if fs[0] != "interface-id" {
					t.Fatalf("%s: first line is not the header: %q", h, sc.Text())
				}
				continue
			}
			if len(fs) != 13 {
				t.Fatalf("%s: malformed line %q", h, sc.Text())
			}
			p, _ := strconv.ParseUint(fs[7], 10, 64)
			b, _ := strconv.ParseUint(fs[8], 10, 64)
			out = append(out, flowRec{fs[0], fs[1], fs[2], fs[3], fs[4], fs[5], fs[6], p, b, fs[9], fs[10], fs[11], fs[12]})
		}
		f.Close()
	}
	return out
}

// awaitFlowLogIntervals waits until each host's daemon has ended two
// intervals of flow log "all" since the call: the one in progress and the
// next, so every packet sent before the call is in a record handed to the
// destination. Each interval hands over a record per ENI at least (NODATA
// when idle), so the records counter moves at every one.
func awaitFlowLogIntervals(t *testing.T, l *lab.Lab, hosts ...string) {
	t.Helper()
	const series = `vpcd_flowlog_records_total{flow_log="all"}`
	for _, h := range hosts {
		last := metricValue(t, l, h, series)
		for i := range 2 {
			testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("interval %d of %s's flow log to end", i+1, h), func() bool {
				v := metricValue(t, l, h, series)
				moved := v != last
				last = v
				return moved
			})
		}
	}
}

// sum adds up the records that match, ORing tcp-flags.
func sum(recs []flowRec, match func(flowRec) bool) (packets, bytes uint64, flags int, n int) {
	for _, r := range recs {
		if match(r) {
			packets += r.packets
			bytes += r.bytes
			f, _ := strconv.Atoi(r.flags)
			flags |= f
			n++
		}
	}
	return
}

// TestFlowLogs checks flow-log records with exact expectations.
func TestFlowLogs(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vf", "flowlogs.yaml")
	listen(t, l, "f2", "10.7.1.20:80")
	listen(t, l, "f2", "10.7.1.20:81") // a listener the group does not let through

	mustRun(t, l, lab.ENI, "f1", "ping", "-c", "10", "-s", "100", "-i", "0.2", "-W", "1", "10.7.1.20")
	mustRun(t, l, lab.ENI, "f1", "ping", "-c", "3", "-s", "100", "-i", "0.2", "-W", "1", "10.7.1.11")
	if canConnect(l, "f1", "10.7.1.20:81") {
		t.Fatal("the group let port 81 through")
	}
	c, err := dial(l, "f1", "10.7.1.20:80")
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(c, "flow"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	awaitFlowLogIntervals(t, l, "p", "q")
	recs := readFlowLogs(t, l.Dir(), "p", "q")

	t.Run("10 pings of 100 bytes: 10 packets, 1280 bytes at each ENI each way", func(t *testing.T) {
		for _, c := range []struct{ eni, dir, src, dst string }{
			{"f1", "egress", "10.7.1.10", "10.7.1.20"},
			{"f1", "ingress", "10.7.1.20", "10.7.1.10"},
			{"f2", "ingress", "10.7.1.10", "10.7.1.20"},
			{"f2", "egress", "10.7.1.20", "10.7.1.10"},
		} {
			p, b, _, n := sum(recs, func(r flowRec) bool {
				return r.eni == c.eni && r.dir == c.dir && r.src == c.src && r.dst == c.dst && r.proto == "1"
			})
			if p != 10 || b != 1280 {
				t.Errorf("%s %s %s->%s: %d packets, %d bytes in %d records; want 10 and 1280", c.eni, c.dir, c.src, c.dst, p, b, n)
			}
		}
	})
	t.Run("encryption-status: 1 across hosts, 0 on one host", func(t *testing.T) {
		for _, r := range recs {
			if r.status != "OK" || r.proto != "1" {
				continue
			}
			cross := r.dst == "10.7.1.20" || r.src == "10.7.1.20"
			want := "0"
			if cross {
				want = "1"
			}
			if r.encrypted != want {
				t.Errorf("record %+v: encryption-status %s, want %s", r, r.encrypted, want)
			}
		}
		if _, _, _, n := sum(recs, func(r flowRec) bool { return r.eni == "f3" && r.dir == "ingress" && r.proto == "1" }); n == 0 {
			t.Error("no record of the same-host pings at f3")
		}
	})
	t.Run("a denied port gives REJECT at the receiving ENI", func(t *testing.T) {
		_, _, _, n := sum(recs, func(r flowRec) bool {
			return r.eni == "f2" && r.dir == "ingress" && r.dport == "81" && r.action == "REJECT"
		})
		if n == 0 {
			t.Errorf("no REJECT record for port 81 at f2:\n%+v", recs)
		}
	})
	t.Run("a short TCP exchange: tcp-flags 3 for the client, 19 for the server's reply", func(t *testing.T) {
		_, _, cf, _ := sum(recs, func(r flowRec) bool {
			return r.eni == "f1" && r.dir == "egress" && r.dport == "80" && r.proto == "6"
		})
		_, _, sf, _ := sum(recs, func(r flowRec) bool {
			return r.eni == "f2" && r.dir == "egress" && r.sport == "80" && r.proto == "6"
		})
		if cf != 3 || sf != 19 {
			t.Errorf("tcp-flags client %d, server reply %d; want 3 and 19", cf, sf)
		}
	})
	t.Run("status shows the flow log and its counters", func(t *testing.T) {
		st, err := control.QueryStatus(l.SocketPath("q"))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.FlowLogs) != 1 || st.FlowLogs[0].Name != "all" || st.FlowLogs[0].Records == 0 || st.FlowLogs[0].ENIs != 2 {
			t.Errorf("flow logs in status: %+v", st.FlowLogs)
		}
	})
	t.Run("an idle ENI gets NODATA", func(t *testing.T) {
		if _, _, _, n := sum(recs, func(r flowRec) bool { return r.eni == "f4" && r.status == "NODATA" }); n == 0 {
			t.Error("no NODATA record for the idle ENI f4")
		}
		if _, _, _, n := sum(recs, func(r flowRec) bool { return r.eni == "f4" && r.status == "OK" }); n != 0 {
			t.Error("the idle ENI f4 has flow records")
		}
	})
	t.Run("a reload that adds an ENI to the log goes on with its counters", func(t *testing.T) {
		// The log's counters are Prometheus counters: a reload (here one
		// that adds f5 to the VPC the log covers) must not start them
		// over, as restarting the log at every reload did.
		records := func() (uint64, int) {
			st, err := control.QueryStatus(l.SocketPath("q"))
			if err != nil || len(st.FlowLogs) != 1 {
				t.Fatalf("status of q: %v %+v", err, st)
			}
			return st.FlowLogs[0].Records, st.FlowLogs[0].ENIs
		}
		before, _ := records()
		p := editedTopology(t, "flowlogs.yaml", "  - {name: f4,", "  - {name: f5, host: q, subnet: l1, ip: 10.7.1.22, security_groups: [web]}\n  - {name: f4,")
		if err := l.Apply(t.Context(), p); err != nil {
			t.Fatalf("apply: %v", err)
		}
		testkit.WaitFor(t, 10*time.Second, "q's flow log covering f5", func() bool {
			_, enis := records()
			return enis == 3
		})
		if after, _ := records(); after < before {
			t.Errorf("the flow log's records went %d → %d across the reload", before, after)
		}
	})
}

// TestFlowLogCapacity sends more flows than the datapath's flow table holds
// within one drain: the loss must show as SKIPDATA records and a non-zero
// lost counter, and the host must go on forwarding and answering.
func TestFlowLogCapacity(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vc", "flowlogs.yaml")
	// 60,000 UDP packets from f1 to f3, both on host p, each to its own
	// port: every one is a flow at f1 (egress) and at f3 (ingress), so
	// 120,000 flows against a table of 65,536.
	err := l.Do(lab.ENI, "f1", func() error {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		dst := &net.UDPAddr{IP: net.IPv4(10, 7, 1, 11)}
		for i := 0; i < 60000; i++ {
			dst.Port = 2000 + i
			c.WriteToUDP([]byte("x"), dst)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var lost string
	ok := testkit.Eventually(10*time.Second, func() bool {
		lost = metricValue(t, l, "p", `vpcd_flowlog_records_lost_total{flow_log="all"}`)
		return lost != "" && lost != "0"
	})
	if !ok {
		t.Fatalf("vpcd_flowlog_records_lost_total is %q after overflowing the flow table", lost)
	}
	awaitFlowLogIntervals(t, l, "p")
	recs := readFlowLogs(t, l.Dir(), "p")
	if _, _, _, n := sum(recs, func(r flowRec) bool { return r.status == "SKIPDATA" }); n == 0 {
		t.Error("no SKIPDATA record although flows were lost")
	}
	if !ping(t, l, "f1", "10.7.1.20", 2) {
		t.Error("forwarding stopped after the flow table overflowed")
	}
	if _, err := control.QueryStatus(l.SocketPath("p")); err != nil {
		t.Errorf("daemon does not answer after the overflow: %v", err)
	}
	t.Logf("lost %s packets' flows", lost)
}

// TestFlowLogIPFIX exports flow logs over IPFIX to nfdump's collector,
// nfcapd, running in a host's namespace, and reads them back with nfdump.
func TestFlowLogIPFIX(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "nfcapd", "nfdump")
	topo := editedTopology(t, "flowlogs.yaml", "destination: file://flows/{host}.log", "destination: ipfix+udp://127.0.0.1:9995")
	l := upLab(t, "vi", topo)
	dir := t.TempDir()
	collector := startIn(t, l, lab.Host, "p", "nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "9995", "-t", "60")
	if !testkit.Eventually(5*time.Second, func() bool { return strings.Contains(collector.out.String(), "Startup") }) {
		t.Fatalf("nfcapd did not start: %s", collector.out.String())
	}
	mustRun(t, l, lab.ENI, "f1", "ping", "-c", "5", "-s", "100", "-i", "0.2", "-W", "1", "10.7.1.11")
	awaitFlowLogIntervals(t, l, "p")
	t.Logf("nfcapd: %s", collector.stopWith(syscall.SIGTERM)) // SIGTERM writes the file out
	out, err := exec.Command("nfdump", "-R", dir, "-q", "-N", "-o", "fmt:%sa %da %pr %pkt %byt").CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, out)
	}
	var pkts, bytes uint64
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] == "10.7.1.10" && f[1] == "10.7.1.11" && f[2] == "1" {
			p, _ := strconv.ParseUint(f[3], 10, 64)
			b, _ := strconv.ParseUint(f[4], 10, 64)
			pkts += p
			bytes += b
		}
	}
	// The flow is recorded at f1 (egress) and at f3 (ingress): twice.
	if pkts != 10 || bytes != 1280 {
		t.Fatalf("nfdump shows %d packets, %d bytes of f1's pings; want 2x5 and 2x640:\n%s", pkts, bytes, out)
	}
}

// TestFlowLogFlushOnStop: SIGTERM flushes the interval in progress, so a
// daemon stopped mid-interval loses no records.
func TestFlowLogFlushOnStop(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	topo := editedTopology(t, "flowlogs.yaml", "aggregation_interval: 1s", "aggregation_interval: 600s")
	l := upLab(t, "vt2", topo)
	mustRun(t, l, lab.ENI, "f1", "ping", "-c", "4", "-s", "100", "-i", "0.2", "-W", "1", "10.7.1.11")
	// Not a wait for a result: lets a periodic drain (every second) take
	// the counters from the datapath, so that the flush on stop must
	// carry what the aggregator holds, not only what its last drain reads.
	time.Sleep(1500 * time.Millisecond)
	if err := l.Stop("p"); err != nil {
		t.Fatal(err)
	}
	recs := readFlowLogs(t, l.Dir(), "p")
	p, b, _, _ := sum(recs, func(r flowRec) bool {
		return r.eni == "f1" && r.dir == "egress" && r.dst == "10.7.1.11" && r.proto == "1"
	})
	if p != 4 || b != 512 {
		t.Fatalf("after SIGTERM mid-interval: %d packets, %d bytes of f1's pings in the log; want 4 and 512", p, b)
	}
}

// TestConntrackFull has ENI f1 open more connections than the conntrack
// table holds (262,144) in a few seconds. f1 stops at its share (half the
// table: two ENIs on host p): its new connections are dropped as
// conntrack_allowance, counted per ENI, while its ping running through the
// flood carries on, the other ENI of the host still opens connections, and
// the table's LRU never has to evict anything.
func TestConntrackFull(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "h5ct", "flowlogs.yaml")
	const limit = 262144 / 2
	running := pingLoss(t, l, "f1", "10.7.1.20", 40, 200*time.Millisecond)
	// Each datagram from f1 to f3 (one host) is a new connection of f1;
	// f3's security group denies UDP below 1024, so f3 tracks none:
	// 140 source ports x 1,000 destination ports.
	err := l.Do(lab.ENI, "f1", func() error {
		for s := 0; s < 140; s++ {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			dst := &net.UDPAddr{IP: net.IPv4(10, 7, 1, 11)}
			for i := 1; i <= 1000; i++ {
				dst.Port = i
				c.WriteToUDP([]byte("x"), dst)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var refused, entries, most string
	ok := testkit.Eventually(10*time.Second, func() bool {
		refused = metricValue(t, l, "p", `vpcd_eni_conntrack_allowance_drops_total{eni="f1"}`)
		entries = metricValue(t, l, "p", `vpcd_eni_conntrack_entries{eni="f1"}`)
		most = metricValue(t, l, "p", `vpcd_eni_max_connections{eni="f1"}`)
		return refused != "" && refused != "0"
	})
	if !ok {
		t.Fatalf("f1 opened 140,000 connections: %q refused, %q tracked of %q", refused, entries, most)
	}
	t.Logf("f1: %s connections tracked of %s, %s refused", entries, most, refused)
	// Refused at its limit, give or take one entry per CPU (CPUs that
	// open connections at the same instant), even with the daemon's
	// recount running through the flood.
	ncpu := runtime.NumCPU()
	if n, _ := strconv.Atoi(entries); most != strconv.Itoa(limit) || n < limit-ncpu || n > limit+ncpu {
		t.Errorf("f1 tracks %s connections with max_connections %s; want %d of %d, give or take %d", entries, most, limit, limit, ncpu)
	}
	if v := metricValue(t, l, "p", `vpcd_drops_total{reason="conntrack_allowance"}`); v != refused {
		t.Errorf("vpcd_drops_total{reason=\"conntrack_allowance\"} %s, f1's refusals %s", v, refused)
	}
	if lost := running(); lost > 2 {
		t.Errorf("f1's ping from before the flood lost %d of 40", lost)
	}
	if !ping(t, l, "f3", "10.7.1.20", 2) {
		t.Error("f3 could not open a connection while f1 was at its limit")
	}
	// By now the daemon has recounted f1's connections after the flood:
	// the count it settles on still holds f1 at its limit.
	if ping(t, l, "f1", "10.7.1.21", 1) {
		t.Error("f1 opened a new connection over its limit")
	}
	if v := metricValue(t, l, "p", "vpcd_conntrack_evictions_total"); v != "0" {
		t.Errorf("vpcd_conntrack_evictions_total %s: the table's LRU evicted with every ENI within its share", v)
	}
}
