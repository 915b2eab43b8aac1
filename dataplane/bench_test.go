package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/internal/testkit"
)

// benchRules makes n security-group rules, none of which matches the
// benchmark's denied packets, with distinct CIDRs and port ranges.
func benchRules(n int) []Rule {
	rules := make([]Rule, n)
	for i := range rules {
		ip := netip.AddrFrom4([4]byte{10, byte(100 + i/250), byte(i % 250), 0})
		rules[i] = Rule{Protocol: 6, PortLo: uint16(1000 + i), PortHi: uint16(1000 + i + i%7), CIDR: netip.PrefixFrom(ip, 24), Allow: true}
	}
	return rules
}

func tcpSegment(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return ipv4Packet(macA, GatewayMAC, src, dst, 6, false, append(tcp, make([]byte, 6)...)) // 64-byte frame
}

// BenchmarkENIPolicy measures the ENI program per packet with
// BPF_PROG_TEST_RUN: an established flow (one conntrack lookup) and a new,
// refused one (every rule lookup), with 1, 100 and 1,000 rules and 1 and
// 100,000 tracked connections.
func BenchmarkENIPolicy(b *testing.B) {
	for _, rules := range []int{1, 100, 1000} {
		for _, conns := range []int{1, 100000} {
			b.Run(fmt.Sprintf("rules=%d/conns=%d", rules, conns), func(b *testing.B) {
				benchPolicy(b, rules, conns, false)
			})
		}
	}
}

// BenchmarkENIFullPath is the per-packet cost issue 7 bounds: 64-byte
// packets of an established flow with 100 rules, 100,000 tracked
// connections and flow counters on, beside a program that does nothing
// (what BPF_PROG_TEST_RUN itself costs per run).
func BenchmarkENIFullPath(b *testing.B) {
	b.Run("empty-program", func(b *testing.B) {
		testkit.NeedRoot(b, "loads eBPF programs")
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
		if err != nil {
			b.Fatal(err)
		}
		defer prog.Close()
		_, dur, err := prog.Benchmark(tcpSegment(ipA, ipB, 40000, 443, 0x10), b.N, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(dur.Nanoseconds()), "ns/pkt")
	})
	b.Run("flow-counters", func(b *testing.B) { benchPolicy(b, 100, 100000, true) })
}

func benchPolicy(b *testing.B, nrules, nconns int, flowLog bool) {
	d := testDatapath(b)
	prog, _, _ := d.Programs()
	egress := append(benchRules(nrules-1), Rule{Protocol: 6, PortLo: 443, PortHi: 443, CIDR: netip.MustParsePrefix("10.0.0.0/16"), Allow: true})
	st := &State{
		UnderlayIP: hostA, ListenPort: 51820, UnderlayMTU: 1500, TunnelIfindex: 4242,
		ENIs: []ENI{
			// No source check: a repeated run sees the frame the last run
			// rewrote (the router's MAC as source), which must still pass.
			{Name: "a", Interface: "if-a", VNI: vniRed, IP: ipA, Gateway: netip.MustParseAddr("10.0.1.1"),
				VPC: netip.MustParsePrefix("10.0.0.0/16"), Subnet: subnetA, MAC: macA,
				SGIngress: allowAll, SGEgress: egress, FlowLog: flowLog},
			{Name: "b", Interface: "if-b", VNI: vniRed, IP: ipB, Gateway: netip.MustParseAddr("10.0.1.1"),
				VPC: netip.MustParsePrefix("10.0.0.0/16"), Subnet: subnetA, MAC: macB, SourceDestCheck: true,
				SGIngress: append(benchRules(nrules-1), Rule{Protocol: 6, PortLo: 443, PortHi: 443, CIDR: netip.MustParsePrefix("10.0.1.0/24"), Allow: true}),
				SGEgress:  allowAll, FlowLog: flowLog},
		},
		Routes: []Route{{VNI: vniRed, IP: ipA, MAC: macA, ENI: "a"}, {VNI: vniRed, IP: ipB, MAC: macB, ENI: "b"},
			{VNI: vniRed, IP: ipR, MAC: macR, Remote: hostB}},
		Peers: []netip.Addr{hostB},
	}
	ifx := map[string]int{"if-a": testENIIfindex, "if-b": 777}
	if err := d.Reconcile(st, func(n string) (int, error) { return ifx[n], nil }); err != nil {
		b.Fatal(err)
	}
	id, _ := d.ENIID("a")
	entry := bpf.EniCtEntry{LastSeen: monotonicNow(), State: 2}
	for i := 0; i < nconns-1; i++ {
		k := bpf.EniCtKey{EniId: id, RemoteIp: uint32(i), LocalPort: uint16(i), RemotePort: 443, Proto: 6}
		if err := d.eni.Conntrack.Put(k, entry); err != nil {
			b.Fatal(err)
		}
	}
	// The established flows: SYNs to the remote and to b on 443 open them.
	for _, dst := range []netip.Addr{ipR, ipB} {
		if ret, _ := runTC(b, prog, testENIIfindex, tcpSegment(ipA, dst, 40000, 443, 0x02)); ret != tcActRedirect {
			b.Fatalf("SYN to %v refused (%d)", dst, ret)
		}
	}
	for _, c := range []struct {
		name   string
		pkt    []byte
		want   uint32
		repeat bool
	}{
		// Across hosts: conntrack hit, VXLAN push, redirect to the tunnel.
		{"established-remote", tcpSegment(ipA, ipR, 40000, 443, 0x10), tcActRedirect, false},
		// On one host: a's and b's conntrack hits, redirect to b.
		{"established-local", tcpSegment(ipA, ipB, 40000, 443, 0x10), tcActRedirect, true},
		// A new connection every rule refuses: the rule lookups, a drop.
		{"refused", tcpSegment(ipA, ipR, 40001, 9, 0x02), tcActShot, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			if c.repeat {
				// The kernel runs the program b.N times on one packet and
				// times the loop: no timer or system call per packet.
				ret, dur, err := prog.Benchmark(c.pkt, b.N, nil)
				if err != nil {
					b.Fatal(err)
				}
				if ret != c.want {
					b.Fatalf("verdict %d, want %d", ret, c.want)
				}
				b.ReportMetric(float64(dur.Nanoseconds()), "ns/pkt")
				return
			}
			// One run per call: the program rewrites the packet (VXLAN), and
			// the kernel would hand the rewritten one to a repeated run. The
			// kernel times each run itself, without the system call.
			var total time.Duration
			for i := 0; i < b.N; i++ {
				ret, dur, err := prog.Benchmark(c.pkt, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				if ret != c.want {
					b.Fatalf("verdict %d, want %d", ret, c.want)
				}
				total += dur
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
		})
	}
}

// BenchmarkPrograms measures, with BPF_PROG_TEST_RUN, every program and
// hook the ENI benchmarks above do not: the XDP flavour of the ENI program
// (an established local flow, flow counters on) and both flavours of the
// underlay filter (a WireGuard datagram from a peer). make bench reports
// them beside an empty program's cost.
func BenchmarkPrograms(b *testing.B) {
	d := testDatapath(b)
	st := testState()
	for i := range st.ENIs {
		st.ENIs[i].FlowLog = true
		st.ENIs[i].SourceDestCheck = false // repeated runs see the rewritten source MAC
	}
	if err := d.Reconcile(st, testIfindex); err != nil {
		b.Fatal(err)
	}
	tc, _, underlayXDP := d.Programs()
	// The SYN makes the connection and the fast-path entry.
	if ret, _ := runTC(b, tc, testENIIfindex, tcpSegment(ipA, ipB, 40000, 443, 0x02)); ret != tcActRedirect {
		b.Fatalf("SYN refused (%d)", ret)
	}
	wg := udpPacket(hostB, hostA, 51820, 51820, make([]byte, 32))
	xdpCtx := func(pkt []byte) []byte {
		ctx := make([]byte, 24) // struct xdp_md
		binary.NativeEndian.PutUint32(ctx[4:], uint32(len(pkt)))
		binary.NativeEndian.PutUint32(ctx[12:], testENIIfindex)
		return ctx
	}
	emptyXDP, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer emptyXDP.Close()
	for _, c := range []struct {
		name string
		prog *ebpf.Program
		pkt  []byte
		xdp  bool
		want uint32
	}{
		{"empty-xdp-program", emptyXDP, wg, true, xdpPass},
		{"eni-xdp/established-local", d.ENIXDP(), tcpSegment(ipA, ipB, 40000, 443, 0x10), true, xdpRedirect},
		{"underlay-xdp/wireguard", underlayXDP, wg, true, xdpPass},
		{"underlay-tc/wireguard", d.UnderlayTC(), wg, false, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			opts := &ebpf.RunOptions{Data: c.pkt, Repeat: uint32(b.N)}
			if c.xdp {
				opts.Context = xdpCtx(c.pkt)
			} else {
				opts.Context = skbCtx(testENIIfindex)
			}
			// One system call runs the program b.N times: its cost
			// spread over b.N runs is noise.
			start := time.Now()
			ret, err := c.prog.Run(opts)
			elapsed := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if ret != c.want {
				b.Fatalf("verdict %d, want %d", ret, c.want)
			}
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "ns/pkt")
		})
	}
	// The tunnel program, on what wireguard-go writes to the tunnel
	// device: a peer's VXLAN with an echo request to local ENI a, checked
	// against a's security groups and conntrack and sent to a. A test run
	// hands a tc program an Ethernet frame, and this program runs where
	// packets start at IPv4, so it is measured in place instead: frames
	// written to a real TUN, the cost read from the kernel's statistics.
	b.Run("tunnel-tc-in-place/echo-from-peer", func(b *testing.B) {
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Fatal(err)
		}
		defer stats.Close()
		defer testkit.FreshNamespace(b)()
		fd, l := openTestTUN(b)
		defer unix.Close(fd)
		prog := d.tunnel.FromTunnel
		lk, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			b.Fatal(err)
		}
		defer lk.Close()
		pkt := vxlanFrame(hostB, hostA, vniRed, ipR, ipA)
		before, _ := d.ENICounters("a")
		s0, err := prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			if _, err := unix.Write(fd, pkt); err != nil {
				b.Fatal(err)
			}
		}
		s1, err := prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if after, _ := d.ENICounters("a"); after[Ingress].Packets-before[Ingress].Packets != uint64(b.N) {
			m, _ := d.Drops()
			b.Fatalf("%d of %d frames reached ENI a (drops %v)", after[Ingress].Packets-before[Ingress].Packets, b.N, m)
		}
		runs := s1.RunCount - s0.RunCount
		if runs != uint64(b.N) {
			b.Fatalf("the program ran %d times for %d frames", runs, b.N)
		}
		b.ReportMetric(float64((s1.Runtime-s0.Runtime).Nanoseconds())/float64(runs), "ns/pkt")
	})
}
