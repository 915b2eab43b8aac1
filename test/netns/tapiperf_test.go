package netns

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// BenchmarkTapIperf3 runs iperf3 (one TCP stream, 3 s per iteration) from
// tap ENI s1 to another ENI, with frame pumps as the VMMs: bulk TCP with
// TSO and checksum offload, whose 64 KiB GSO frames cross the taps whole
// behind virtio-net headers, as with a virtio-net guest. The ENI program
// runs at tcx: at XDP the taps lose the frames' checksum-offload state
// (TestTapXDP), so TCP from a guest with offloads does not connect.
func BenchmarkTapIperf3(b *testing.B) {
	testkit.NeedRoot(b, labNeeds)
	testkit.NeedTools(b, "iperf3", "ping")
	l := upLabWith(b, "vgb", "taps-bench.yaml", "--tap-hook", "tcx")
	for _, n := range []string{"s1", "s2", "s3"} {
		stop, err := l.StartPump(n)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(stop)
	}
	for _, c := range []struct{ name, dst, ip string }{
		{"tap-tap", "s2", "10.72.1.11"},
		{"tap-veth", "sv", "10.72.1.12"},
		{"tap-tap-remote", "s3", "10.72.1.20"},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := startIn(b, l, lab.ENI, c.dst, "iperf3", "-s")
			defer srv.stop()
			testkit.WaitFor(b, 5*time.Second, "a route to "+c.dst, func() bool { return ping(b, l, "s1", c.ip, 1) })
			awaitListening(b, l, c.dst, 5201)
			var sum float64
			for range b.N {
				out := mustRun(b, l, lab.ENI, "s1", "iperf3", "-c", c.ip, "-t", "3", "-f", "g")
				m := regexp.MustCompile(`([\d.]+) Gbits/sec\s+receiver`).FindStringSubmatch(out)
				if m == nil {
					b.Fatalf("iperf3 output:\n%s", out)
				}
				g, _ := strconv.ParseFloat(m[1], 64)
				sum += g
			}
			b.ReportMetric(sum/float64(b.N), "Gbit/s")
		})
	}
}
