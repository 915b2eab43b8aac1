package netns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// TestVPC runs the foundation's acceptance checks on one lab of three hosts
// and two VPCs that both use 10.0.0.0/16 (testdata/three-hosts.yaml), with
// a capture on the rack bridge for the whole run.
func TestVPC(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "iperf3", "tcpdump", "tshark", "wg")
	l := upLab(t, "vt", "three-hosts.yaml")
	rack, rackPcap := capture(t, l, lab.Rack, "", "rack0")

	t.Run("same host", func(t *testing.T) {
		if !ping(t, l, "b1", "10.0.1.11", 3) {
			t.Fatal("b1 cannot reach b2 on its host")
		}
	})
	t.Run("across hosts", func(t *testing.T) {
		if !ping(t, l, "b1", "10.0.1.12", 3) {
			t.Fatal("b1 (h1) cannot reach b3 (h2)")
		}
	})
	t.Run("across subnets and hosts", func(t *testing.T) {
		if !ping(t, l, "b1", "10.0.2.20", 3) {
			t.Fatal("b1 (blue-a, h1) cannot reach b4 (blue-b, h3)")
		}
		if !ping(t, l, "b4", "10.0.2.21", 3) {
			t.Fatal("b4 (h3) cannot reach b5 (h2) in its subnet")
		}
	})
	t.Run("the other VPC is unreachable", func(t *testing.T) {
		// 10.0.1.30 exists only in red.
		if !pingNone(t, l, "b1", "10.0.1.30", 2) {
			t.Fatal("blue b1 reached red's 10.0.1.30")
		}
		if !pingNone(t, l, "r1", "10.0.1.10", 2) {
			t.Fatal("red r1 reached blue's 10.0.1.10")
		}
	})
	t.Run("the same address in the other VPC never sees the traffic", func(t *testing.T) {
		// r2 (red) has 10.0.1.12 like b3 (blue), both on h2.
		cap, pcap := capture(t, l, lab.ENI, "r2", "eth0")
		if !ping(t, l, "b1", "10.0.1.12", 5) {
			t.Fatal("b1 cannot reach blue's 10.0.1.12")
		}
		if !ping(t, l, "r1", "10.0.1.12", 3) {
			t.Fatal("r1 cannot reach red's 10.0.1.12")
		}
		cap.stop()
		if got := tshark(t, pcap, "icmp && ip.addr==10.0.1.10"); len(got) != 0 {
			t.Fatalf("red r2 saw %d packets of blue b1:\n%s", len(got), strings.Join(got, "\n"))
		}
		if got := tshark(t, pcap, "icmp && ip.addr==10.0.1.20"); len(got) < 6 {
			t.Fatalf("red r2 saw %d packets of red r1's pings, want >= 6", len(got))
		}
	})
	t.Run("iperf3 TCP at MTU 1500 across hosts", func(t *testing.T) {
		before := eniCounters(t, l, "h1", "b1")
		srv := startIn(t, l, lab.ENI, "b3", "iperf3", "-s", "-1")
		awaitListening(t, l, "b3", 5201)
		out := mustRun(t, l, lab.ENI, "b1", "iperf3", "-c", "10.0.1.12", "-n", "50M")
		srv.stop()
		if !strings.Contains(out, "receiver") {
			t.Fatalf("iperf3 did not complete:\n%s", out)
		}
		// The ENI counters count wire packets: a GSO super-packet as its
		// segments, each at most 1390 IP bytes here (counting
		// super-packets would give some 40 times fewer packets). iperf3
		// may close before the last of its 50 MiB leave, so the bound on
		// bytes is looser.
		var after [2]uint64
		testkit.Eventually(5*time.Second, func() bool {
			after = eniCounters(t, l, "h1", "b1")
			return after[1]-before[1] >= 45<<20
		})
		pkts, bytes := after[0]-before[0], after[1]-before[1]
		if bytes < 45<<20 || pkts*1390 < bytes {
			t.Errorf("b1 egress counted %d packets, %d bytes: want >= 45 MiB in packets of at most 1390 bytes", pkts, bytes)
		}
	})
	t.Run("iperf3 TCP on one host", func(t *testing.T) {
		srv := startIn(t, l, lab.ENI, "b2", "iperf3", "-s", "-1")
		awaitListening(t, l, "b2", 5201)
		mustRun(t, l, lab.ENI, "b1", "iperf3", "-c", "10.0.1.11", "-n", "200M")
		srv.stop()
	})
	t.Run("DF ping above the tunnel MTU gets fragmentation needed", func(t *testing.T) {
		out, code := run(t, l, lab.ENI, "b1", "ping", "-c", "2", "-M", "do", "-s", "1400", "-W", "1", "10.0.1.12")
		if code == 0 {
			t.Fatalf("a 1428-byte DF ping crossed a 1390-byte tunnel:\n%s", out)
		}
		m := regexp.MustCompile(`mtu ?=? ?(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no fragmentation-needed report in:\n%s", out)
		}
		if mtu, _ := strconv.Atoi(m[1]); mtu != 1390 {
			t.Fatalf("reported MTU %d, want 1390 (1500 - 60 WireGuard - 50 VXLAN)", mtu)
		}
		if drops(t, l, "h1")["frag_needed"] == 0 {
			t.Fatal("frag_needed not counted")
		}
		// What fits passes with DF.
		if !ping(t, l, "b1", "10.0.1.12", 1) {
			t.Fatal("small ping failed after the big one")
		}
		if _, code := run(t, l, lab.ENI, "b1", "ping", "-c", "1", "-M", "do", "-s", "1362", "-W", "2", "10.0.1.12"); code != 0 {
			t.Fatal("a 1390-byte DF ping did not cross")
		}
	})
	t.Run("workloads cannot reach the substrate", func(t *testing.T) {
		before := drops(t, l, "h1")["substrate"]
		for _, dst := range []string{"198.18.0.11", "198.18.0.12", "198.18.0.13", "169.254.169.254", "10.0.1.1"} {
			if !pingNone(t, l, "b1", dst, 1) {
				t.Errorf("b1 reached %s", dst)
			}
		}
		// TCP to the host's own underlay address (e.g. its metrics port).
		if out, code := run(t, l, lab.ENI, "b1", "sh", "-c", "exec 3<>/dev/tcp/198.18.0.11/9477"); code == 0 {
			t.Errorf("b1 opened a TCP connection to its host's underlay address: %s", out)
		}
		if got := drops(t, l, "h1")["substrate"]; got < before+5 {
			t.Errorf("substrate drops went %d -> %d, want +5 or more", before, got)
		}
	})
	t.Run("spoofed source IP and MAC are dropped and counted", func(t *testing.T) {
		before := drops(t, l, "h1")["source_check"]
		sendRaw(t, l, "b1", net.HardwareAddr{0x02, 0, 0x0a, 0, 1, 0x0a}, netip.MustParseAddr("10.0.1.99"), netip.MustParseAddr("10.0.1.12"))
		sendRaw(t, l, "b1", net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.12"))
		if !testkit.Eventually(3*time.Second, func() bool { return drops(t, l, "h1")["source_check"] >= before+2 }) {
			t.Fatalf("source_check drops %d, want %d", drops(t, l, "h1")["source_check"], before+2)
		}
	})
	t.Run("wg show lists every peer with a recent handshake", func(t *testing.T) {
		for _, h := range []string{"h1", "h2", "h3"} {
			out := mustRun(t, l, lab.Host, h, "wg", "show", "wg-"+h)
			if n := strings.Count(out, "latest handshake:"); n != 2 {
				t.Errorf("wg show wg-%s: %d peers with a handshake, want 2:\n%s", h, n, out)
			}
			if strings.Contains(out, "minutes") || strings.Contains(out, "hours") {
				t.Errorf("wg show wg-%s: stale handshake:\n%s", h, out)
			}
		}
	})
	t.Run("VXLAN made by eBPF decodes with tshark", func(t *testing.T) {
		cap, pcap := capture(t, l, lab.Host, "h1", "wg-h1")
		if !ping(t, l, "b1", "10.0.2.20", 3) || !ping(t, l, "r1", "10.0.1.30", 3) {
			t.Fatal("pings across hosts failed")
		}
		cap.stop()
		// tshark's own VXLAN dissector (UDP 4789) reads the VNI and the
		// inner frame.
		blue := tshark(t, pcap, "vxlan.vni == 1001 && icmp && ip.src == 10.0.1.10 && ip.dst == 10.0.2.20", "-T", "fields", "-e", "vxlan.vni")
		red := tshark(t, pcap, "vxlan.vni == 2002 && icmp && ip.src == 10.0.1.20 && ip.dst == 10.0.1.30", "-T", "fields", "-e", "vxlan.vni")
		if len(blue) < 3 || len(red) < 3 {
			t.Fatalf("tshark decoded %d blue (VNI 1001) and %d red (VNI 2002) requests, want >= 3 each", len(blue), len(red))
		}
		bad := tshark(t, pcap, "!vxlan")
		if len(bad) != 0 {
			t.Fatalf("non-VXLAN packets on the tunnel device:\n%s", strings.Join(bad, "\n"))
		}
	})
	t.Run("kill and start a daemon: fail closed, then recover", func(t *testing.T) {
		if err := l.Kill("h2"); err != nil {
			t.Fatal(err)
		}
		// Same-host traffic on h1 is untouched; traffic to h2 fails closed.
		if !ping(t, l, "b1", "10.0.1.11", 2) {
			t.Error("same-host traffic broke while another host's daemon was dead")
		}
		pingNone(t, l, "b1", "10.0.1.12", 3)
		if err := l.Start(t.Context(), "h2"); err != nil {
			t.Fatal(err)
		}
		if !testkit.Eventually(10*time.Second, func() bool { return ping(t, l, "b1", "10.0.1.12", 1) }) {
			t.Fatal("cross-host traffic did not come back after the daemon restarted")
		}
	})
	t.Run("the rack carries only WireGuard", func(t *testing.T) {
		rack.stop()
		checkRackCapture(t, rackPcap)
	})
}

// checkRackCapture asserts the underlay capture holds only WireGuard
// between host underlay addresses, ARP, link-local IPv6 housekeeping and
// ICMP errors about WireGuard datagrams: no VXLAN, no VPC address.
func checkRackCapture(t *testing.T, pcap string) {
	t.Helper()
	all := tshark(t, pcap, "frame")
	wg := tshark(t, pcap, "wg && ip.src == 198.18.0.0/24 && ip.dst == 198.18.0.0/24 && udp.port == 51820", "-d", "udp.port==51820,wg")
	if len(wg) < 20 {
		t.Fatalf("only %d WireGuard packets on the rack (of %d frames)", len(wg), len(all))
	}
	if got := tshark(t, pcap, "vxlan || udp.port == 4789", "-d", "udp.port==51820,wg"); len(got) != 0 {
		t.Fatalf("VXLAN in the clear on the rack:\n%s", strings.Join(got, "\n"))
	}
	if got := tshark(t, pcap, "ip.addr == 10.0.0.0/8"); len(got) != 0 {
		t.Fatalf("VPC addresses in the clear on the rack:\n%s", strings.Join(got, "\n"))
	}
	other := tshark(t, pcap, "!(wg && udp.port == 51820) && !arp && !(ipv6.src == fe80::/10 || ipv6.src == ::) && !(icmp.type == 3 && udp.port == 51820)", "-d", "udp.port==51820,wg")
	if len(other) != 0 {
		t.Fatalf("%d unexpected frames on the rack:\n%s", len(other), strings.Join(other[:min(len(other), 20)], "\n"))
	}
}

// sendRaw sends one ICMP echo frame from eni's eth0 with the given source
// MAC and IP, bypassing the workload's stack (a spoofing workload).
func sendRaw(t *testing.T, l *lab.Lab, eni string, srcMAC net.HardwareAddr, src, dst netip.Addr) {
	t.Helper()
	frame := make([]byte, 14+20+8)
	copy(frame[0:6], []byte{0x02, 0x76, 0x70, 0x63, 0x00, 0x01})
	copy(frame[6:12], srcMAC)
	binary.BigEndian.PutUint16(frame[12:], unix.ETH_P_IP)
	ip := frame[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], 28)
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
	icmp := frame[34:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
	sendFrames(t, l, eni, 0, frame, 1)
}

// sendFrames sends frame n times from an ENI's eth0 through a packet
// socket; proto is the link-layer protocol of the address, in network
// byte order.
func sendFrames(t *testing.T, l *lab.Lab, eni string, proto uint16, frame []byte, n int) {
	t.Helper()
	err := l.Do(lab.ENI, eni, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: proto, Halen: 6}
		for range n {
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send raw frames from %s: %v", eni, err)
	}
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// eniCounters returns an ENI's egress packets and bytes from its host.
func eniCounters(t *testing.T, l *lab.Lab, host, eni string) [2]uint64 {
	t.Helper()
	st, err := control.QueryStatus(l.SocketPath(host))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range st.ENIs {
		if e.Name == eni {
			return [2]uint64{e.EgressPackets, e.EgressBytes}
		}
	}
	t.Fatalf("no ENI %s on %s", eni, host)
	return [2]uint64{}
}
