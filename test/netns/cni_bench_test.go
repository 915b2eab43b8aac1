package netns

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkCNI measures, over 100 containers one after another on host
// cf1 of an etcd lab: ADD (cnitool add, until the plugin returned), ADD to
// reachable (until a TCP connection from the container to srv on cf2
// opens: both hosts route to it) and DEL. scripts/bench-cni.sh runs it
// with -benchtime 1x and writes BENCHMARKS.md's CNI section from what it
// writes to $VPCD_CNI_BENCH_OUT.
func BenchmarkCNI(b *testing.B) {
	const n = 100
	l := upEtcdLab(b, "cfb", "cni.yaml")
	h1 := newCNIEnv(b, l, "cf1")
	cniListen(b, l, "srv", "10.0.1.10:8080")
	var add, reach, del []time.Duration
	for range b.N {
		add, reach, del = add[:0], reach[:0], del[:0]
		for i := range n {
			path := newNetns(b, fmt.Sprintf("cfb-n%d", i))
			start := time.Now()
			h1.must(b, "add", "blue-web", path)
			add = append(add, time.Since(start))
			deadline := start.Add(10 * time.Second)
			for !dialOnce(b, path, "10.0.1.10:8080", 20*time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatalf("container %d: srv not reachable 10 s after ADD", i)
				}
			}
			reach = append(reach, time.Since(start))
			start = time.Now()
			h1.must(b, "del", "blue-web", path)
			del = append(del, time.Since(start))
			os.Remove(path) // (the cleanup deletes the namespace too)
		}
	}
	p := func(d []time.Duration, q float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(p(add, .5), "add-p50-ms")
	b.ReportMetric(p(add, .99), "add-p99-ms")
	b.ReportMetric(p(reach, .5), "reachable-p50-ms")
	b.ReportMetric(p(reach, .99), "reachable-p99-ms")
	b.ReportMetric(p(del, .5), "del-p50-ms")
	b.ReportMetric(p(del, .99), "del-p99-ms")
	if out := os.Getenv("VPCD_CNI_BENCH_OUT"); out != "" {
		var s strings.Builder
		fmt.Fprintf(&s, "| | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|\n")
		for _, r := range []struct {
			name string
			d    []time.Duration
		}{
			{"ADD (`cnitool add` until it returned)", add},
			{"ADD to reachable (until a TCP connection from the container to an ENI on the other host opened)", reach},
			{"DEL (`cnitool del` until it returned)", del},
		} {
			fmt.Fprintf(&s, "| %s | %.1f | %.1f | %.1f |\n", r.name, p(r.d, .5), p(r.d, .99), p(r.d, 1))
		}
		fmt.Fprintf(&s, "\n%d containers one after another on one host of a two-host etcd lab, %d cores (GOMAXPROCS %d).\n",
			len(add), runtime.NumCPU(), runtime.GOMAXPROCS(0))
		if err := os.WriteFile(out, []byte(s.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// dialOnce reports whether one TCP connection from the namespace at path
// to addr opens within timeout.
func dialOnce(tb testing.TB, path, addr string, timeout time.Duration) bool {
	ok := false
	inNetns(tb, path, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}
