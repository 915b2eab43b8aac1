package lab

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// TestMain lets the test binary stand in for `vpcd run` (see fakeDaemon).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		os.Exit(fakeDaemon(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// --- root-only tests ------------------------------------------------------

// testLab returns a lab name and host names unique to this test process,
// and registers Down for every path out of the test.
func testLab(t *testing.T, suffix string) (name, hostA, hostB string) {
	t.Helper()
	pid := os.Getpid()
	name = fmt.Sprintf("t-lab-%d-%s", pid, suffix)
	hostA, hostB = fmt.Sprintf("a%d", pid), fmt.Sprintf("b%d", pid)
	t.Cleanup(func() {
		if err := Down(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name, hostA, hostB
}

// topoYAML is a two-host, one-VPC, two-ENI topology; extra is appended to
// the enis list.
func topoYAML(hostA, hostB, extraENIs string) string {
	return topoHead(hostA, hostB) + fmt.Sprintf(`enis:
  - name: e1
    host: %s
    subnet: blue-1
    ip: 10.0.1.10
  - name: e2
    host: %s
    subnet: blue-2
    ip: 10.0.2.20
    mac: 02:aa:00:00:00:02
%s`, hostA, hostB, extraENIs)
}

// topoHead is topoYAML up to its ENIs: the hosts and the VPC.
func topoHead(hostA, hostB string) string {
	return fmt.Sprintf(`version: 1
hosts:
  - name: %s
    underlay_ip: 198.18.0.11
  - name: %s
    underlay_ip: 198.18.0.12
    mtu: 1400
vpcs:
  - name: blue
    vni: 1001
    cidr: 10.0.0.0/16
    subnets:
      - name: blue-1
        cidr: 10.0.1.0/24
      - name: blue-2
        cidr: 10.0.2.0/25
`, hostA, hostB)
}

// outputsYAML adds a flow log and a mirror session with relative paths.
const outputsYAML = `flow_logs:
  - name: all-blue
    resource: vpc:blue
    destination: file://logs/{host}-blue.log
mirror_filters:
  - name: everything
    ingress:
      - {rule_number: 100, action: accept, protocol: all, source_cidr: 0.0.0.0/0, destination_cidr: 0.0.0.0/0}
mirror_sessions:
  - name: m1
    source_eni: e1
    filter: everything
    session_number: 1
    virtual_network_id: 4242
    target: {pcap: m1.pcap}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// withHandle runs fn with a netlink handle inside namespace ns.
func withHandle(t *testing.T, ns string, fn func(h *netlink.Handle)) {
	t.Helper()
	h, nsh, err := nsHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	fn(h)
}

func mustLink(t *testing.T, h *netlink.Handle, ns, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in netns %s: %v", name, ns, err)
	}
	return l
}

// assertGone checks that nothing of lab name is left on the machine.
func assertGone(t *testing.T, name string) {
	t.Helper()
	nss, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, name+"-") {
			t.Errorf("netns %s left behind", ns)
		}
	}
	for _, p := range []string{labDir(name), filepath.Join(BPFFSRoot, name)} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (stat: %v)", p, err)
		}
	}
}

func TestUpNoDaemons(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	name, ha, hb := testLab(t, "nd")
	topo := writeFile(t, "topo.yaml", "tunnel: {preshared_key_file: secret/psk}\n"+topoYAML(ha, hb, "")+outputsYAML)
	var out bytes.Buffer
	l, err := Up(context.Background(), Options{Name: name, TopologyPath: topo, Out: &out, NoDaemons: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", out.String())
	if !strings.Contains(out.String(), l.ENINS("e1")) || !strings.Contains(out.String(), l.Dir()) {
		t.Errorf("summary lacks namespaces or dir:\n%s", out.String())
	}

	// Relative paths resolve in the lab directory.
	lt := l.Topology()
	if got, want := lt.FlowLogs[0].Destination, "file://"+filepath.Join(l.Dir(), "logs/{host}-blue.log"); got != want {
		t.Errorf("flow log destination %s, want %s", got, want)
	}
	if got, want := lt.MirrorSessions[0].Target.Pcap, filepath.Join(l.Dir(), "m1.pcap"); got != want {
		t.Errorf("pcap target %s, want %s", got, want)
	}
	if !strings.Contains(out.String(), lt.MirrorSessions[0].Target.Pcap) {
		t.Errorf("summary does not say where captures go")
	}
	for _, h := range []string{ha, hb} {
		if p := filepath.Join(l.Dir(), "logs", h+"-blue.log"); !strings.Contains(out.String(), p) {
			t.Errorf("summary does not give host %s's flow log path %s", h, p)
		}
	}
	psk := filepath.Join(l.Dir(), "secret/psk")
	if lt.Tunnel.PresharedKeyFile != psk {
		t.Errorf("preshared key file %s, want %s", lt.Tunnel.PresharedKeyFile, psk)
	}
	if st, err := os.Stat(psk); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("preshared key %s: %v %v", psk, st, err)
	} else if _, err := tunnel.ReadKeyFile(psk); err != nil {
		t.Error(err)
	}

	// Namespaces.
	for _, ns := range []string{name + "-rack", name + "-h-" + ha, name + "-h-" + hb, name + "-e-e1", name + "-e-e2"} {
		if !nsExists(ns) {
			t.Errorf("netns %s missing", ns)
		}
	}
	if l.RackNS() != name+"-rack" || l.HostNS(ha) != name+"-h-"+ha || l.ENINS("e2") != name+"-e-e2" {
		t.Errorf("namespace names: %s %s %s", l.RackNS(), l.HostNS(ha), l.ENINS("e2"))
	}

	// The workload side of e2.
	withHandle(t, l.ENINS("e2"), func(h *netlink.Handle) {
		ns := l.ENINS("e2")
		eth0 := mustLink(t, h, ns, "eth0")
		a := eth0.Attrs()
		if a.HardwareAddr.String() != "02:aa:00:00:00:02" || a.MTU != 1500 || a.Flags&net.FlagUp == 0 {
			t.Errorf("eth0: mac %s mtu %d flags %v", a.HardwareAddr, a.MTU, a.Flags)
		}
		addrs, err := h.AddrList(eth0, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.2.20/25" {
			t.Errorf("eth0 addresses %v, want only 10.0.2.20/25 (no IPv6)", addrs)
		}
		routes, err := h.RouteList(eth0, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var def bool
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "10.0.2.1" {
				def = true
			}
		}
		if !def {
			t.Errorf("no default route via 10.0.2.1: %v", routes)
		}
		lo := mustLink(t, h, ns, "lo")
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("lo down in ENI netns")
		}
	})
	err = l.Do(ENI, "e1", func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != "1" {
			return fmt.Errorf("disable_ipv6 = %q", b)
		}
		return nil
	})
	if err != nil {
		t.Errorf("IPv6 in e1: %v", err)
	}
	// The default MAC of e1: 02:00 + its IP.
	withHandle(t, l.ENINS("e1"), func(h *netlink.Handle) {
		if mac := mustLink(t, h, l.ENINS("e1"), "eth0").Attrs().HardwareAddr.String(); mac != "02:00:0a:00:01:0a" {
			t.Errorf("e1 mac %s", mac)
		}
	})

	// Host side: underlay and ENI interfaces.
	withHandle(t, l.HostNS(hb), func(h *netlink.Handle) {
		ns := l.HostNS(hb)
		eth0 := mustLink(t, h, ns, "eth0")
		if eth0.Attrs().MTU != 1400 || eth0.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("underlay eth0: mtu %d flags %v", eth0.Attrs().MTU, eth0.Attrs().Flags)
		}
		addrs, _ := h.AddrList(eth0, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "198.18.0.12/32" {
			t.Errorf("underlay addresses %v", addrs)
		}
		routes, _ := h.RouteList(eth0, netlink.FAMILY_V4)
		var peer bool
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "198.18.0.11/32" && r.Scope == netlink.SCOPE_LINK {
				peer = true
			}
		}
		if !peer {
			t.Errorf("no link route to the peer: %v", routes)
		}
		// Down: with no daemon, nothing is attached to it, and only
		// the daemon brings it up, after attaching (SPEC §10).
		v := mustLink(t, h, ns, "vpc-e2")
		if v.Attrs().MTU != 1500 || v.Attrs().Flags&net.FlagUp != 0 {
			t.Errorf("vpc-e2: mtu %d flags %v, want 1500 and down", v.Attrs().MTU, v.Attrs().Flags)
		}
	})

	// Rack.
	withHandle(t, l.RackNS(), func(h *netlink.Handle) {
		br := mustLink(t, h, l.RackNS(), "rack0")
		for _, p := range []string{"r-" + ha, "r-" + hb} {
			port := mustLink(t, h, l.RackNS(), cut15(p))
			if port.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("%s not on rack0", p)
			}
		}
	})

	// Nothing in the root namespace.
	for _, n := range []string{cut15("r-" + ha), "vpc-e1", "rack0"} {
		if _, err := netlink.LinkByName(n); err == nil {
			t.Errorf("%s exists in the root netns", n)
		}
	}

	// Keys and the topology copy.
	for _, hn := range []string{ha, hb} {
		kp := filepath.Join(l.Dir(), "hosts", hn, "private.key")
		st, err := os.Stat(kp)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", kp, st, err)
		}
		k, err := tunnel.ReadKeyFile(kp)
		if err != nil {
			t.Fatal(err)
		}
		var pub string
		for _, h := range l.Topology().Hosts {
			if h.Name == hn {
				pub = h.PublicKey
			}
		}
		if pub != k.PublicKey().String() {
			t.Errorf("host %s: public key %q does not match its private key", hn, pub)
		}
	}
	copyTopo, err := topology.Load(filepath.Join(l.Dir(), "topology.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if copyTopo.Hosts[0].PublicKey == "" {
		t.Error("topology copy has no public keys")
	}

	// Underlay reachability across the rack bridge.
	if _, err := os.Stat("/usr/bin/ping"); err == nil {
		var pout bytes.Buffer
		code, err := l.Exec(context.Background(), Host, ha, []string{"ping", "-c1", "-W1", "198.18.0.12"}, nil, &pout, &pout)
		if err != nil || code != 0 {
			t.Errorf("ping %s -> %s: code %d err %v\n%s", ha, hb, code, err, pout.String())
		}
	} else {
		t.Log("no /usr/bin/ping: underlay ping skipped")
	}

	// Exec passes stdin, stdout and the exit code through.
	var eout bytes.Buffer
	code, err := l.Exec(context.Background(), ENI, "e1", []string{"sh", "-c", "cat; ip -o -4 addr show dev eth0 >/dev/null; exit 7"},
		strings.NewReader("hello"), &eout, io.Discard)
	if err != nil || code != 7 || eout.String() != "hello" {
		t.Errorf("exec: code %d err %v out %q", code, err, eout.String())
	}
	if _, err := l.Exec(context.Background(), ENI, "nope", []string{"true"}, nil, nil, nil); err == nil {
		t.Error("exec in an unknown ENI: no error")
	}

	// Open sees the same lab.
	l2, err := Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Dir() != l.Dir() || len(l2.Topology().ENIs) != 2 || l2.Name() != name {
		t.Errorf("Open: %s %d", l2.Dir(), len(l2.Topology().ENIs))
	}
	var sb bytes.Buffer
	if err := l2.Status(&sb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sb.String(), l.ENINS("e2")) || strings.Contains(sb.String(), "MISSING") {
		t.Errorf("status:\n%s", sb.String())
	}

	// A second Up is refused and leaves the lab alone.
	_, err = Up(context.Background(), Options{Name: name, TopologyPath: topo, NoDaemons: true})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second Up: %v", err)
	}
	if !nsExists(l.ENINS("e1")) {
		t.Fatal("refused Up damaged the lab")
	}

	// Down removes everything and is idempotent.
	if err := Down(name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name)
	if err := Down(name); err != nil {
		t.Fatalf("second Down: %v", err)
	}
}

func TestUpRefusesStrayNamespace(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	name, ha, hb := testLab(t, "stray")
	if err := createNS(name + "-e-leftover"); err != nil {
		t.Fatal(err)
	}
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	_, err := Up(context.Background(), Options{Name: name, TopologyPath: topo, NoDaemons: true})
	want := fmt.Sprintf("lab %q already exists; run \"vpcd lab down --name %s\" first", name, name)
	if err == nil || err.Error() != want {
		t.Fatalf("Up: %v, want %s", err, want)
	}
	if !nsExists(name + "-e-leftover") {
		t.Fatal("refused Up removed a namespace")
	}
	// Down without any state.json cleans up what a crash left.
	if err := os.MkdirAll(filepath.Join(labDir(name), "hosts", ha), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Down(name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name)
}

func TestUpInvalidTopologyChangesNothing(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	name, ha, hb := testLab(t, "inv")
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, "  - name: e3\n    host: nowhere\n    subnet: blue-1\n    ip: 10.0.1.99\n"))
	if _, err := Up(context.Background(), Options{Name: name, TopologyPath: topo, NoDaemons: true}); err == nil {
		t.Fatal("Up accepted an invalid topology")
	}
	assertGone(t, name)
}

// TestUpVMsWithoutDaemons: a topology with vms needs the daemons (their
// taps); without them Up says so and builds nothing.
func TestUpVMsWithoutDaemons(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	name, ha, hb := testLab(t, "vmn")
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, "  - {name: t1, host: "+ha+", subnet: blue-1, ip: 10.0.1.30, interface_type: tap}\nvms: [t1]\n"))
	_, err := Up(context.Background(), Options{Name: name, TopologyPath: topo, NoDaemons: true})
	if err == nil || !strings.Contains(err.Error(), "vms needs the daemons") {
		t.Fatalf("Up without daemons of a topology with vms: %v", err)
	}
	assertGone(t, name)
}

func TestApply(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	name, ha, hb := testLab(t, "apply")
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	l, err := Up(context.Background(), Options{Name: name, TopologyPath: topo, NoDaemons: true})
	if err != nil {
		t.Fatal(err)
	}
	keyBefore := l.Topology().Hosts[0].PublicKey

	// Invalid: nothing changes.
	bad := writeFile(t, "bad.yaml", topoYAML(ha, hb, "  - name: e3\n    host: "+ha+"\n    subnet: blue-1\n    ip: 10.0.1.1\n"))
	if err := l.Apply(context.Background(), bad); err == nil {
		t.Fatal("Apply accepted an invalid topology")
	}
	// A changed host: refused.
	moved := strings.Replace(topoYAML(ha, hb, ""), "198.18.0.12", "198.18.0.13", 1)
	if err := l.Apply(context.Background(), writeFile(t, "moved.yaml", moved)); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("Apply with a changed host: %v", err)
	}
	if nsExists(l.ENINS("e3")) {
		t.Fatal("failed Apply created a namespace")
	}

	// Remove e1, add e3, move e2 to another address.
	next := topoHead(ha, hb) + fmt.Sprintf(`enis:
  - name: e2
    host: %s
    subnet: blue-2
    ip: 10.0.2.21
  - name: e3
    host: %s
    subnet: blue-1
    ip: 10.0.1.30
`, hb, ha)
	if err := l.Apply(context.Background(), writeFile(t, "next.yaml", next)); err != nil {
		t.Fatal(err)
	}
	if nsExists(l.ENINS("e1")) {
		t.Error("e1's namespace survived its removal")
	}
	withHandle(t, l.HostNS(ha), func(h *netlink.Handle) {
		if _, err := h.LinkByName("vpc-e1"); err == nil {
			t.Error("vpc-e1 survived its removal")
		}
		mustLink(t, h, l.HostNS(ha), "vpc-e3")
	})
	withHandle(t, l.ENINS("e2"), func(h *netlink.Handle) {
		addrs, _ := h.AddrList(mustLink(t, h, l.ENINS("e2"), "eth0"), netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.2.21/25" {
			t.Errorf("e2 after apply: %v", addrs)
		}
	})
	l2, err := Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if got := l2.Topology().Hosts[0].PublicKey; got != keyBefore {
		t.Errorf("public key changed across Apply: %s -> %s", keyBefore, got)
	}
	if len(l2.Topology().ENIs) != 2 {
		t.Errorf("topology copy has %d ENIs, want 2", len(l2.Topology().ENIs))
	}
	if err := Down(name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name)
}

func TestUpDaemonExitTearsDown(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	bin, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1)")
	}
	name, ha, hb := testLab(t, "fail")
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	_, err = Up(context.Background(), Options{Name: name, TopologyPath: topo, Binary: bin, HandshakeTimeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "vpcd lab: starting") {
		t.Fatalf("Up with a failing daemon: %v", err)
	}
	assertGone(t, name)
}

// TestDaemons drives the daemon life cycle with the test binary standing in
// for `vpcd run` (fakeDaemon).
func TestDaemons(t *testing.T) {
	testkit.NeedRoot(t, "builds network namespaces")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(WireGuardSockDir); errors.Is(err, fs.ErrNotExist) {
		// The fake daemons create it; leave the machine as it was.
		t.Cleanup(func() { os.Remove(WireGuardSockDir) })
	}
	name, ha, hb := testLab(t, "d")
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	ctx := context.Background()
	l, err := Up(ctx, Options{Name: name, TopologyPath: topo, Binary: self, HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pidA := l.DaemonPID(ha)
	if pidA == 0 || l.DaemonPID(hb) == 0 {
		t.Fatalf("daemon PIDs %d %d", pidA, l.DaemonPID(hb))
	}
	// The daemon runs in its host's network namespace, in our mount namespace.
	if !sameNS(t, fmt.Sprintf("/proc/%d/ns/net", pidA), filepath.Join(netnsDir, l.HostNS(ha))) {
		t.Error("daemon is not in its host's network namespace")
	}
	if !sameNS(t, fmt.Sprintf("/proc/%d/ns/mnt", pidA), "/proc/self/ns/mnt") {
		t.Error("daemon is not in the root mount namespace")
	}
	var sb bytes.Buffer
	if err := l.Status(&sb); err != nil {
		t.Fatal(err)
	}
	t.Logf("status:\n%s", sb.String())
	if !strings.Contains(sb.String(), fmt.Sprintf("running pid %d", pidA)) || !strings.Contains(sb.String(), " ago") {
		t.Errorf("status:\n%s", sb.String())
	}

	// Kill, then start again; a running daemon is not started twice.
	if err := l.Kill(ha); err != nil {
		t.Fatal(err)
	}
	if l.DaemonPID(ha) != 0 || processAlive(pidA) {
		t.Fatal("killed daemon still runs")
	}
	if err := l.Start(ctx, ha); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(ctx, ha); err == nil {
		t.Error("Start of a running daemon: no error")
	}
	pidA2 := l.DaemonPID(ha)
	if err := l.Restart(ctx, ha); err != nil {
		t.Fatal(err)
	}
	if p := l.DaemonPID(ha); p == 0 || p == pidA2 {
		t.Errorf("restart: pid %d -> %d", pidA2, p)
	}
	if !strings.Contains(readFile(t, l.LogPath(ha)), "fake vpcd: stopped") {
		t.Error("Restart did not stop the daemon with SIGTERM")
	}

	// Apply makes every daemon reload.
	more := topoYAML(ha, hb, "  - name: e3\n    host: "+ha+"\n    subnet: blue-1\n    ip: 10.0.1.30\n")
	if err := l.Apply(ctx, writeFile(t, "more.yaml", more)); err != nil {
		t.Fatal(err)
	}
	if !nsExists(l.ENINS("e3")) {
		t.Error("no namespace for the new ENI")
	}
	testkit.WaitFor(t, 5*time.Second, "host B's daemon to reload with 3 ENIs", func() bool { return strings.Contains(readFile(t, l.LogPath(hb)), "fake vpcd: reload 3") })

	// Stop; Down then stops the rest.
	pidB := l.DaemonPID(hb)
	if err := l.Stop(hb); err != nil {
		t.Fatal(err)
	}
	if processAlive(pidB) {
		t.Error("stopped daemon still runs")
	}
	pidA3 := l.DaemonPID(ha)
	if err := Down(name); err != nil {
		t.Fatal(err)
	}
	if processAlive(pidA3) {
		t.Error("Down left a daemon running")
	}
	for _, h := range []string{ha, hb} {
		if _, err := os.Stat(filepath.Join(WireGuardSockDir, tunnel.DeviceName(h)+".sock")); err == nil {
			t.Errorf("UAPI socket of %s left behind", h)
		}
	}
	assertGone(t, name)
}

func sameNS(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeDaemon stands in for `vpcd run`: it serves the host's WireGuard UAPI
// socket, reporting a fresh handshake with every peer of the topology,
// prints "fake vpcd: reload N" (N = number of ENIs) on SIGHUP and exits on
// SIGTERM or SIGINT.
func fakeDaemon(args []string) int {
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	config := fl.String("config", "", "")
	host := fl.String("host", "", "")
	fl.String("state-dir", "", "")
	fl.String("bpffs", "", "")
	control := fl.String("socket", "", "")
	fl.String("metrics", "", "")
	fl.String("tunnel-device", "", "")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	var mu sync.Mutex
	load := func() (*topology.Topology, error) {
		t, err := topology.Load(*config)
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	topo, err := load()
	if err != nil {
		fmt.Println("fake vpcd:", err)
		return 1
	}
	sock := filepath.Join(WireGuardSockDir, tunnel.DeviceName(*host)+".sock")
	if err := os.MkdirAll(WireGuardSockDir, 0o755); err != nil {
		fmt.Println("fake vpcd:", err)
		return 1
	}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println("fake vpcd:", err)
		return 1
	}
	fmt.Println("fake vpcd: serving", sock)
	// The real daemon opens its control socket once the datapath is
	// programmed; the lab waits for it.
	os.Remove(*control)
	cl, err := net.Listen("unix", *control)
	if err != nil {
		fmt.Println("fake vpcd:", err)
		return 1
	}
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			t := topo
			mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				if n, _ := c.Read(buf); !bytes.HasPrefix(buf[:n], []byte("get=1\n")) {
					return
				}
				var w strings.Builder
				for _, h := range t.Hosts {
					if h.Name == *host {
						continue
					}
					fmt.Fprintf(&w, "public_key=%s\nendpoint=%s:%d\nlast_handshake_time_sec=%d\nlast_handshake_time_nsec=0\nrx_bytes=1\ntx_bytes=2\n",
						keyHex(h.PublicKey), h.UnderlayIP, h.ListenPort, time.Now().Unix())
				}
				w.WriteString("errno=0\n\n")
				io.WriteString(c, w.String())
			}()
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for s := range sigs {
		if s == syscall.SIGHUP {
			t, err := load()
			if err != nil {
				fmt.Println("fake vpcd: reload failed:", err)
				continue
			}
			mu.Lock()
			topo = t
			mu.Unlock()
			fmt.Println("fake vpcd: reload", len(t.ENIs))
			continue
		}
		ln.Close()
		fmt.Println("fake vpcd: stopped")
		return 0
	}
	return 0
}
