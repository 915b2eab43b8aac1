package main

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/lab"
	"github.com/vpcd/vpcd/probe"
)

//go:embed demo.yaml
var demoTopology []byte

const demoLab = "vpcd-demo"

func cmdDemo(args []string) error {
	fs := newFlags("demo", "demo [--keep]")
	keep := fs.Bool("keep", false, "leave the lab running afterwards (remove it with: vpcd lab down --name "+demoLab+")")
	size := fs.Int("mib", 64, "MiB sent by each TCP transfer")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (network namespaces, eBPF); run it with sudo")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "vpcd-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	topoPath := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topoPath, demoTopology, 0o600); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}

	lab.Down(demoLab) // what an interrupted demo left
	fmt.Println("vpcd demo: two hosts on one rack; VPCs blue (VNI 1001) and red (VNI 2002) both use 10.0.0.0/16")
	start := time.Now()
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	l, err := lab.Up(upCtx, lab.Options{Name: demoLab, TopologyPath: topoPath, Binary: bin})
	cancel()
	if err != nil {
		return fmt.Errorf("demo: lab up: %w", err)
	}
	if !*keep {
		defer func() {
			if err := lab.Down(demoLab); err != nil {
				fmt.Fprintln(os.Stderr, "vpcd demo: lab down:", err)
			} else {
				fmt.Println("\nlab removed: no namespace, link, pin or daemon left behind")
			}
		}()
	}
	fmt.Printf("lab up in %.1fs: one vpcd per host, eBPF datapath attached, WireGuard handshakes done\n\n", time.Since(start).Seconds())

	d := &demo{lab: l}
	if err := d.startAppliance(); err != nil {
		return err
	}
	defer d.appliance.Close()
	d.reachability()
	d.throughput(ctx, int64(*size)<<20)
	d.tunnels()
	d.drops()
	d.flowLogs()
	d.mirrors()
	if *keep {
		fmt.Printf("\nthe lab is still up: vpcd lab exec --name %s web-1 -- ping 10.0.2.10\n", demoLab)
	}
	if d.failed {
		return errors.New("demo: some checks did not give the expected result (see above)")
	}
	return nil
}

type demo struct {
	lab    *lab.Lab
	failed bool

	// appliance is the UDP socket of the mirror target tap-1; copies
	// counts the VXLAN datagrams it received with the session's VNI.
	appliance net.PacketConn
	copies    atomic.Int64
	otherVNI  atomic.Int64
}

// startAppliance listens for mirror copies in tap-1, as a monitoring
// appliance would, and counts them by VNI.
func (d *demo) startAppliance() error {
	err := d.lab.Do(lab.ENI, "tap-1", func() error {
		var err error
		d.appliance, err = net.ListenPacket("udp4", "10.0.1.50:4789")
		return err
	})
	if err != nil {
		return fmt.Errorf("demo: appliance: %w", err)
	}
	// Copies arrive in batches (one UDP GSO packet the kernel cuts into
	// up to 64 datagrams at once): room for bursts, as an appliance
	// would size its socket.
	if sc, ok := d.appliance.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) })
		}
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := d.appliance.ReadFrom(buf)
			if err != nil {
				return
			}
			// VXLAN: flags (8 bits, I set), 24 reserved, VNI (24), 8 reserved.
			if n >= 8 && buf[0]&0x08 != 0 && binary.BigEndian.Uint32(buf[4:8])>>8 == 4343 {
				d.copies.Add(1)
			} else {
				d.otherVNI.Add(1)
			}
		}
	}()
	return nil
}

// eachStatus calls fn with the status of every host's daemon in topology
// order; a daemon that does not answer is reported and fails the demo.
func (d *demo) eachStatus(fn func(host string, st *control.Status)) {
	for _, h := range d.lab.Topology().Hosts {
		st, err := control.QueryStatus(d.lab.SocketPath(h.Name))
		if err != nil {
			fmt.Printf("  %s: %v\n", h.Name, err)
			d.failed = true
			continue
		}
		fn(h.Name, st)
	}
}

// mirrors prints what the two mirror sessions copied: db-1's inbound
// PostgreSQL traffic to a pcap file, web-1's outbound to the appliance.
func (d *demo) mirrors() {
	fmt.Println("\ntraffic mirroring (copies of the TCP transfer above)")
	sessions := map[string]control.MirrorStatus{}
	d.eachStatus(func(_ string, st *control.Status) {
		for _, m := range st.Mirrors {
			sessions[m.Name] = m
		}
	})
	db, web := sessions["db-in"], sessions["web-out"]
	path := filepath.Join(d.lab.Dir(), "mirror", "db-1.pcap")
	n, first, err := pcapSummary(path)
	fmt.Printf("  db-in    db-1 inbound TCP/5432 -> %s: %d copies, %d dropped; the file holds %d packets%s\n",
		path, db.Packets, db.Dropped, n, first)
	fmt.Printf("  web-out  web-1 outbound TCP/5432 -> eni tap-1 on host-b, VXLAN VNI 4343, encrypted on the way: %d copies, %d dropped; the appliance received %d with VNI 4343\n",
		web.Packets, web.Dropped, d.copies.Load())
	if err != nil || n == 0 || db.Packets == 0 || web.Packets == 0 || d.copies.Load() == 0 || d.otherVNI.Load() != 0 {
		fmt.Println("  UNEXPECTED: a session copied nothing, or the copies did not arrive as sent", err)
		d.failed = true
	}
}

// pcapSummary counts the packets of a pcap file and describes the first.
func pcapSummary(path string) (int, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return 0, "", err
	}
	n, first := 0, ""
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if n == 0 {
			first = fmt.Sprintf(" (first: %d of its %d bytes)", len(data), ci.Length)
		}
		n++
	}
	return n, first, nil
}

func (d *demo) ping(eni, dst string) probe.PingResult {
	var res probe.PingResult
	err := d.lab.Do(lab.ENI, eni, func() error {
		var err error
		res, err = probe.Ping(netip.MustParseAddr(dst), 3, 100*time.Millisecond, time.Second)
		return err
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "  ping from %s: %v\n", eni, err)
	}
	return res
}

func (d *demo) reachability() {
	fmt.Println("reachability (3 ICMP echoes each, sent by probes inside the workloads)")
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  FROM\tTO\tEXPECTED\tRESULT")
	checks := []struct {
		from, to, path string
		reach          bool
	}{
		{"web-1", "10.0.1.11", "web-2, same host", true},
		{"web-1", "10.0.2.10", "db-1, other host and subnet, encrypted", true},
		{"red-1", "10.0.1.30", "red-2, other host, encrypted", true},
		{"web-1", "10.0.1.30", "exists only in VPC red", false},
		{"red-1", "10.0.1.10", "exists only in VPC blue", false},
		{"web-1", "198.18.0.11", "host-a's own underlay address", false},
		{"web-1", "169.254.169.254", "link-local metadata address", false},
	}
	for _, c := range checks {
		r := d.ping(c.from, c.to)
		got := fmt.Sprintf("%d/%d answered", r.Received, r.Sent)
		if r.Received > 0 {
			got += fmt.Sprintf(", rtt %.2f ms", float64(r.AvgRTT().Microseconds())/1000)
		}
		want := "blocked"
		if c.reach {
			want = "reachable"
		}
		ok := (c.reach && r.Received == r.Sent && r.Sent > 0) || (!c.reach && r.Received == 0)
		mark := "ok"
		if !ok {
			mark = "UNEXPECTED"
			d.failed = true
		}
		fmt.Fprintf(w, "  %s\t%s (%s)\t%s\t%s  %s\n", c.from, c.to, c.path, want, got, mark)
	}
	w.Flush()
	fmt.Println("\nTCP connections (security groups and network ACLs)")
	w = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  FROM\tTO\tEXPECTED\tRESULT")
	conns := []struct {
		from, to, addr, why string
		open                bool
	}{
		{"web-1", "db-1", "10.0.2.10:5432", "group db allows 5432 from group web", true},
		{"web-1", "db-1", "10.0.2.10:8080", "group db has no rule for 8080", false},
		{"web-1", "db-1", "10.0.2.10:22", "ACL db-acl rule 90 denies 22", false},
		{"web-1", "", "198.18.0.11:9477", "host-a's metrics port: the substrate", false},
	}
	for _, c := range conns {
		var l net.Listener
		if c.to != "" { // something listens there: only policy can stop the connection
			d.lab.Do(lab.ENI, c.to, func() error {
				var err error
				l, err = net.Listen("tcp4", c.addr)
				return err
			})
		}
		err := d.lab.Do(lab.ENI, c.from, func() error { return probe.Connect(c.addr, time.Second) })
		if l != nil {
			l.Close()
		}
		want := "blocked"
		if c.open {
			want = "connects"
		}
		mark := "ok"
		if (err == nil) != c.open {
			mark = "UNEXPECTED"
			d.failed = true
		}
		fmt.Fprintf(w, "  %s\ttcp %s (%s)\t%s\t%s  %s\n", c.from, c.addr, c.why, want, connResult(err), mark)
	}
	w.Flush()
}

func connResult(err error) string {
	if err == nil {
		return "connected"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer (dropped)"
	}
	return "refused: " + err.Error()
}

func (d *demo) transfer(ctx context.Context, from, to, addr string, size int64) (float64, error) {
	var got <-chan int64
	var l net.Listener
	err := d.lab.Do(lab.ENI, to, func() error {
		var err error
		l, got, err = probe.Listen(addr)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var bps float64
	err = d.lab.Do(lab.ENI, from, func() error {
		var err error
		bps, err = probe.Transfer(tctx, addr, size)
		return err
	})
	if err != nil {
		return 0, err
	}
	if n := <-got; n != size {
		return 0, fmt.Errorf("receiver got %d of %d bytes", n, size)
	}
	return bps, nil
}

func (d *demo) throughput(ctx context.Context, size int64) {
	fmt.Printf("\nthroughput (one TCP stream of %d MiB, workloads at MTU 1500)\n", size>>20)
	for _, c := range []struct{ from, to, addr, path string }{
		{"web-1", "web-2", "10.0.1.11:5201", "same host (eBPF redirect)"},
		{"web-1", "db-1", "10.0.2.10:5432", "across hosts (VXLAN in WireGuard)"},
	} {
		bps, err := d.transfer(ctx, c.from, c.to, c.addr, size)
		if err != nil {
			fmt.Printf("  %s -> %s  %-36s FAILED: %v\n", c.from, c.to, c.path, err)
			d.failed = true
			continue
		}
		fmt.Printf("  %s -> %s  %-36s %6.2f Gbit/s\n", c.from, c.to, c.path, bps/1e9)
	}
}

func (d *demo) tunnels() {
	fmt.Println("\ntunnels (wireguard-go, one device per host)")
	d.eachStatus(func(host string, st *control.Status) {
		for _, p := range st.Tunnel.Peers {
			hs := "never"
			if !p.LastHandshake.IsZero() {
				hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
			}
			fmt.Printf("  %s (%s) -> %s at %s: handshake %s, %d bytes sent, %d received\n",
				host, st.Tunnel.Device, p.Name, p.Endpoint, hs, p.TxBytes, p.RxBytes)
		}
	})
}

func (d *demo) drops() {
	fmt.Println("\ndrops counted by the datapath (vpcd_drops_total)")
	for _, h := range d.lab.Topology().Hosts {
		st, err := control.QueryStatus(d.lab.SocketPath(h.Name))
		if err != nil {
			continue
		}
		var parts []string
		for r, n := range st.Drops {
			parts = append(parts, fmt.Sprintf("%s=%d", r, n))
		}
		sort.Strings(parts)
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Printf("  %s: %s\n", h.Name, strings.Join(parts, " "))
	}
}

// flowLogs prints what the flow log of VPC blue recorded: its REJECT
// records and a sample of the rest, per host.
func (d *demo) flowLogs() {
	time.Sleep(2 * time.Second) // the last 1 s interval ends and is written
	fmt.Println("\nflow logs (VPC blue, AWS version 2 format, 1 s intervals)")
	for _, h := range d.lab.Topology().Hosts {
		path := filepath.Join(d.lab.Dir(), "flows", h.Name+".log")
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Printf("  %s: %v\n", h.Name, err)
			d.failed = true
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		var rejects, others []string
		for _, l := range lines[1:] {
			if strings.Contains(l, " REJECT ") {
				rejects = append(rejects, l)
			} else if strings.HasSuffix(l, " OK") {
				others = append(others, l)
			}
		}
		fmt.Printf("  %s: %d records in %s\n    %s\n", h.Name, len(lines)-1, path, lines[0])
		for _, l := range append(rejects, others[:min(3, len(others))]...) {
			fmt.Println("    " + l)
		}
	}
}
