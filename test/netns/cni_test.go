package netns

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// The CNI tests (SPEC §12) run the reference runner, cnitool, in a lab
// host's namespace, as a runtime on that host would run the plugin. The
// containers' namespaces are ordinary named ones (/run/netns/cf-…): the
// plugin runs in the host's namespace and moves the veth's peer into the
// container's by its path, which every namespace of the machine can open.

// cniTools are the plugin and the reference plugins' directory, built
// once.
var cniTools struct {
	once sync.Once
	dir  string // holds vpcd-cni
	err  error
}

// cniPath is CNI_PATH: our plugin, then Debian's reference plugins.
func cniPath(t testing.TB) string {
	t.Helper()
	cniTools.once.Do(func() {
		cniTools.dir, cniTools.err = os.MkdirTemp("", "vpcd-cni-test")
		if cniTools.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-buildvcs=false", "-o", filepath.Join(cniTools.dir, "vpcd-cni"),
			"github.com/vpcd/vpcd/cmd/vpcd-cni").CombinedOutput()
		if err != nil {
			cniTools.err = fmt.Errorf("build vpcd-cni: %v: %s", err, out)
		}
	})
	if cniTools.err != nil {
		t.Fatal(cniTools.err)
	}
	if _, err := os.Stat("/usr/lib/cni/bandwidth"); err != nil {
		t.Fatalf("Debian's reference CNI plugins are missing (apt-get install containernetworking-plugins): %v", err)
	}
	return cniTools.dir + ":/usr/lib/cni"
}

// cnitool finds the reference runner: bin/cnitool of the repository
// (scripts/deps.sh installs it there) or one on PATH. Missing is a failure.
func cnitool(t testing.TB) string {
	t.Helper()
	if p, err := filepath.Abs("../../bin/cnitool"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("cnitool")
	if err != nil {
		t.Fatal("cnitool is missing: GOBIN=$PWD/bin go install github.com/containernetworking/cni/cnitool@v1.3.1 (scripts/deps.sh does)")
	}
	return p
}

// cniEnv is one lab host's runtime: its network configurations (one
// directory per host, for the host's daemon socket) and the runner.
type cniEnv struct {
	l       *lab.Lab
	host    string
	confDir string
	tool    string
	path    string
}

func newCNIEnv(t testing.TB, l *lab.Lab, host string) *cniEnv {
	t.Helper()
	e := &cniEnv{l: l, host: host, confDir: filepath.Join(t.TempDir(), host), tool: cnitool(t), path: cniPath(t)}
	if err := os.MkdirAll(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := l.SocketPath(host)
	e.conf(t, "blue-web.conf", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "blue-web", "type": "vpcd-cni",
		"subnet": "blue-web", "security_groups": ["web"], "socket": %q}`, sock))
	e.conf(t, "tiny.conf", fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "tiny", "type": "vpcd-cni",
		"subnet": "tiny", "security_groups": ["web"], "socket": %q}`, sock))
	e.conf(t, "nosubnet.conf", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "nosubnet", "type": "vpcd-cni",
		"subnet": "nope", "socket": %q}`, sock))
	e.conf(t, "nogroup.conf", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "nogroup", "type": "vpcd-cni",
		"subnet": "blue-web", "security_groups": ["nope"], "socket": %q}`, sock))
	e.conf(t, "malformed.conf", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "malformed", "type": "vpcd-cni", "socket": %q}`, sock))
	e.conf(t, "nodaemon.conf", `{"cniVersion": "1.0.0", "name": "nodaemon", "type": "vpcd-cni",
		"subnet": "blue-web", "socket": "/nonexistent/vpcd.sock"}`)
	e.conf(t, "blue-bw.conflist", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "blue-bw", "plugins": [
		{"type": "vpcd-cni", "subnet": "blue-web", "security_groups": ["web"], "socket": %q},
		{"type": "bandwidth", "ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000}]}`, sock))
	return e
}

func (e *cniEnv) conf(t testing.TB, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.confDir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs `cnitool op network netnsPath` in the host's namespace and
// returns its stdout and exit code.
func (e *cniEnv) run(t testing.TB, op, network, netns string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	argv := []string{"env", "NETCONFPATH=" + e.confDir, "CNI_PATH=" + e.path, e.tool, op, network, netns}
	code, err := e.l.Exec(ctx, lab.Host, e.host, argv, nil, &out, &errb)
	if err != nil {
		t.Fatalf("cnitool %s %s: %v: %s %s", op, network, err, out.String(), errb.String())
	}
	return out.String() + errb.String(), code
}

func (e *cniEnv) must(t testing.TB, op, network, netns string) string {
	t.Helper()
	out, code := e.run(t, op, network, netns)
	if code != 0 {
		t.Fatalf("cnitool %s %s %s on %s: exit %d:\n%s", op, network, netns, e.host, code, out)
	}
	return out
}

// cniResult is what we read of a CNI result.
type cniResult struct {
	Interfaces []struct {
		Name, Mac, Sandbox string
	}
	IPs []struct {
		Address, Gateway string
		Interface        *int
	}
	Routes []struct{ Dst, GW string }
}

func (e *cniEnv) add(t testing.TB, network, netns string) cniResult {
	t.Helper()
	out := e.must(t, "add", network, netns)
	var r cniResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.IPs) == 0 {
		t.Fatalf("ADD result: %v:\n%s", err, out)
	}
	return r
}

// plugin runs vpcd-cni itself, as a runtime does, for op (ADD, STATUS…)
// with the network configuration file conf of the host, and returns its
// stdout and exit code.
func (e *cniEnv) plugin(t testing.TB, op, conf, netns string) (string, int) {
	t.Helper()
	if !filepath.IsAbs(conf) {
		conf = filepath.Join(e.confDir, conf)
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	argv := []string{"env", "CNI_COMMAND=" + op, "CNI_PATH=" + e.path, "CNI_CONTAINERID=cf-direct",
		"CNI_NETNS=" + netns, "CNI_IFNAME=eth0", filepath.Join(cniTools.dir, "vpcd-cni")}
	code, err := e.l.Exec(ctx, lab.Host, e.host, argv, bytes.NewReader(data), &out, &errb)
	if err != nil {
		t.Fatalf("vpcd-cni %s: %v: %s", op, err, errb.String())
	}
	return out.String(), code
}

// pluginFails runs the plugin for an op that must fail and returns the
// error it printed on stdout.
func (e *cniEnv) pluginFails(t testing.TB, op, conf, netns string) cniError {
	t.Helper()
	out, code := e.plugin(t, op, conf, netns)
	var ce cniError
	if code == 0 || json.Unmarshal([]byte(out), &ce) != nil {
		t.Fatalf("vpcd-cni %s with %s: exit %d, stdout %q; want a CNI error", op, conf, code, out)
	}
	return ce
}

// cniError is a CNI error as a plugin prints it.
type cniError struct {
	Code    uint
	Msg     string
	Details string
}

// fails runs an op that must fail and returns the plugin's error.
func (e *cniEnv) fails(t testing.TB, op, network, netns string) cniError {
	t.Helper()
	out, code := e.run(t, op, network, netns)
	if code == 0 {
		t.Fatalf("cnitool %s %s succeeded, want an error:\n%s", op, network, out)
	}
	// cnitool prints the plugin's error; libcni keeps code and msg.
	var ce cniError
	start := strings.Index(out, "{")
	if start >= 0 && json.Unmarshal([]byte(out[start:strings.LastIndex(out, "}")+1]), &ce) == nil && ce.Code != 0 {
		return ce
	}
	ce.Msg = out
	return ce
}

// newNetns makes a named network namespace for a container; the test's
// cleanup deletes it.
func newNetns(t testing.TB, name string) string {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// inNetns runs fn in the namespace at path.
func inNetns(t testing.TB, path string, fn func() error) error {
	t.Helper()
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// hostLinks lists the interfaces of a lab host whose names start with
// prefix.
func hostLinks(t testing.TB, l *lab.Lab, host, prefix string) []string {
	t.Helper()
	var names []string
	err := l.Do(lab.Host, host, func() error {
		links, err := netlink.LinkList()
		for _, k := range links {
			if strings.HasPrefix(k.Attrs().Name, prefix) {
				names = append(names, k.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// dynamicENIs are a host's ENIs in its daemon's status that the lab's
// topology does not name: the containers'.
func dynamicENIs(t testing.TB, l *lab.Lab, host string) map[string]control.ENIStatus {
	t.Helper()
	st, err := control.QueryStatus(l.SocketPath(host))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]control.ENIStatus{}
	for _, e := range st.ENIs {
		if l.Topology().ENIByName(e.Name) == nil {
			m[e.Name] = e
		}
	}
	return m
}

// cniDial reports whether a TCP connection from the namespace at path to
// addr opens within a second.
func cniDial(t testing.TB, path, addr string) bool {
	t.Helper()
	var ok bool
	inNetns(t, path, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}

// pingFrom reports whether count pings from the namespace at path reach dst.
func pingFrom(t testing.TB, path, dst string, count int) bool {
	t.Helper()
	name := filepath.Base(path)
	return exec.Command("ip", "netns", "exec", name, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", dst).Run() == nil
}

// cniListen opens a TCP listener in an ENI's namespace of the lab that
// accepts and closes connections until the test ends.
func cniListen(t testing.TB, l *lab.Lab, eni, addr string) {
	t.Helper()
	var ln net.Listener
	if err := l.Do(lab.ENI, eni, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
}

func TestCNI(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "tcpdump", "tshark", "etcd")
	l := upEtcdLab(t, "cf", "cni.yaml")
	h1, h2 := newCNIEnv(t, l, "cf1"), newCNIEnv(t, l, "cf2")
	cniListen(t, l, "srv", "10.0.1.10:8080")
	cniListen(t, l, "srv", "10.0.1.10:9090")

	t.Run("status", func(t *testing.T) {
		// cnitool asks STATUS of 1.1.0 networks only (tiny is one).
		h1.must(t, "status", "tiny", "/run/netns/none")
		if out, code := h1.plugin(t, "STATUS", "tiny.conf", ""); code != 0 {
			t.Fatalf("STATUS: exit %d: %s", code, out)
		}
		h1.conf(t, "nodaemon11.conf", `{"cniVersion": "1.1.0", "name": "nodaemon11", "type": "vpcd-cni", "subnet": "blue-web", "socket": "/nonexistent/vpcd.sock"}`)
		if ce := h1.pluginFails(t, "STATUS", "nodaemon11.conf", ""); ce.Code != 50 || !strings.Contains(ce.Msg, "not running") {
			t.Errorf("STATUS without a daemon: %+v, want code 50", ce)
		}
		if out, code := h1.plugin(t, "VERSION", "tiny.conf", ""); code != 0 || !strings.Contains(out, `"1.1.0"`) || !strings.Contains(out, `"1.0.0"`) {
			t.Errorf("VERSION: exit %d: %s", code, out)
		}
	})

	t.Run("add, reach, check, del", func(t *testing.T) {
		c1 := newNetns(t, "cf-c1")
		rack, pcap := capture(t, l, lab.Rack, "", "rack0")
		r := h1.add(t, "blue-web", c1)
		// The lowest free address: .4 (.0–.3 reserved, srv has .10).
		if r.IPs[0].Address != "10.0.1.4/24" || r.IPs[0].Gateway != "10.0.1.1" {
			t.Fatalf("result: %+v", r)
		}
		if len(r.Interfaces) != 2 || r.Interfaces[1].Name != "eth0" || r.Interfaces[1].Sandbox != c1 ||
			r.Interfaces[1].Mac != "02:00:0a:00:01:04" || r.Interfaces[0].Sandbox != "" {
			t.Fatalf("interfaces: %+v", r.Interfaces)
		}
		// The container reaches srv on the other host at once: ADD
		// returned only once the ENI was attached and published.
		if !pingFrom(t, c1, "10.0.1.10", 3) {
			t.Fatal("the container cannot ping srv on cf2")
		}
		if !cniDial(t, c1, "10.0.1.10:8080") {
			t.Fatal("the container cannot open TCP 8080 on srv")
		}
		// srv's group refuses 9090; the container's refuses srv's 9090.
		if cniDial(t, c1, "10.0.1.10:9090") {
			t.Fatal("srv's security group let TCP 9090 in")
		}
		var cln net.Listener
		for _, port := range []string{"8080", "9090"} {
			if err := inNetns(t, c1, func() (err error) { cln, err = net.Listen("tcp", "10.0.1.4:"+port); return err }); err != nil {
				t.Fatal(err)
			}
			go func(ln net.Listener) {
				for c, err := ln.Accept(); err == nil; c, err = ln.Accept() {
					c.Close()
				}
			}(cln)
			defer cln.Close()
		}
		var ok8080, ok9090 bool
		l.Do(lab.ENI, "srv", func() error {
			for port, ok := range map[string]*bool{"8080": &ok8080, "9090": &ok9090} {
				if c, err := net.DialTimeout("tcp", "10.0.1.4:"+port, time.Second); err == nil {
					*ok = true
					c.Close()
				}
			}
			return nil
		})
		if !ok8080 || ok9090 {
			t.Fatalf("srv → container: 8080 opened %v (want true), 9090 opened %v (want false): the ENI's groups", ok8080, ok9090)
		}
		rack.stop()
		if got := tshark(t, pcap, "icmp || tcp.port == 8080"); len(got) != 0 {
			t.Fatalf("the rack saw VPC traffic in the clear:\n%s", strings.Join(got, "\n"))
		}
		if got := tshark(t, pcap, "wg"); len(got) == 0 {
			t.Fatal("no WireGuard on the rack")
		}

		h1.must(t, "check", "blue-web", c1)
		// A second ADD of the live attachment fails and breaks nothing.
		h1.fails(t, "add", "blue-web", c1)
		h1.must(t, "check", "blue-web", c1)
		if !pingFrom(t, c1, "10.0.1.10", 1) {
			t.Fatal("a second ADD broke the container's network")
		}
		dyn := dynamicENIs(t, l, "cf1")
		if len(dyn) != 1 {
			t.Fatalf("vpcd status: dynamic ENIs %v", dyn)
		}
		var hostIf string
		for _, e := range dyn {
			hostIf = e.Interface
			if e.IP != "10.0.1.4" || e.Subnet != "blue-web" || len(e.SecurityGroups) != 1 {
				t.Fatalf("vpcd status: %+v", e)
			}
		}

		h1.must(t, "del", "blue-web", c1)
		if len(dynamicENIs(t, l, "cf1")) != 0 || len(hostLinks(t, l, "cf1", hostIf)) != 0 {
			t.Fatalf("after DEL: ENIs %v, links %v", dynamicENIs(t, l, "cf1"), hostLinks(t, l, "cf1", "vc"))
		}
		inNetns(t, c1, func() error {
			if _, err := netlink.LinkByName("eth0"); err == nil {
				t.Error("eth0 is still in the container after DEL")
			}
			return nil
		})
		h1.must(t, "del", "blue-web", c1)    // a second DEL succeeds
		h1.fails(t, "check", "blue-web", c1) // what is gone does not check
	})

	t.Run("del after a daemon restart", func(t *testing.T) {
		c := newNetns(t, "cf-c2")
		h1.add(t, "blue-web", c)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := l.Restart(ctx, "cf1"); err != nil {
			t.Fatal(err)
		}
		h1.must(t, "check", "blue-web", c)
		h1.must(t, "del", "blue-web", c)
		h1.must(t, "del", "blue-web", c)
		if len(dynamicENIs(t, l, "cf1")) != 0 || len(hostLinks(t, l, "cf1", "vc")) != 0 {
			t.Fatal("DEL after a restart left something")
		}
	})

	t.Run("errors leave nothing behind", func(t *testing.T) {
		var full []string
		for i := range 3 {
			c := newNetns(t, fmt.Sprintf("cf-t%d", i))
			r := h1.add(t, "tiny", c)
			if want := fmt.Sprintf("10.0.9.%d/29", 4+i); r.IPs[0].Address != want {
				t.Fatalf("tiny %d: %s, want %s", i, r.IPs[0].Address, want)
			}
			full = append(full, c)
		}
		c := newNetns(t, "cf-tx")
		before := hostLinks(t, l, "cf1", "v")
		// Through the runner: a failure.
		h1.fails(t, "add", "tiny", c)
		// The plugin's own error JSON.
		// (garbage lives apart: cnitool reads every file of its directory.)
		garbage := filepath.Join(t.TempDir(), "garbage.conf")
		os.WriteFile(garbage, []byte(`{"cniVersion": "1.0.0", "name": `), 0o644)
		for _, tc := range []struct {
			network string
			code    uint
			msg     string
		}{
			{"tiny", 102, "subnet full"},
			{"nosubnet", 100, "unknown subnet"},
			{"nogroup", 101, "unknown security group"},
			{"malformed", 7, "subnet"},
			{garbage, 6, ""},
			{"nodaemon", 11, "not running"},
		} {
			conf := tc.network
			if !filepath.IsAbs(conf) {
				conf += ".conf"
			}
			ce := h1.pluginFails(t, "ADD", conf, c)
			if ce.Code != tc.code || !strings.Contains(ce.Msg+ce.Details, tc.msg) {
				t.Errorf("ADD %s: %+v, want code %d and %q", tc.network, ce, tc.code, tc.msg)
			}
		}
		if after := hostLinks(t, l, "cf1", "v"); len(after) != len(before) {
			t.Errorf("failed ADDs left interfaces: %v, before %v", after, before)
		}
		if n := len(dynamicENIs(t, l, "cf1")); n != 3 {
			t.Errorf("failed ADDs left ENIs: %d, want 3", n)
		}
		inNetns(t, c, func() error {
			if _, err := netlink.LinkByName("eth0"); err == nil {
				t.Error("a failed ADD left eth0 in the container")
			}
			return nil
		})
		// Freed addresses are given again.
		h1.must(t, "del", "tiny", full[1])
		if r := h1.add(t, "tiny", c); r.IPs[0].Address != "10.0.9.5/29" {
			t.Fatalf("after a DEL: %s, want 10.0.9.5/29", r.IPs[0].Address)
		}
		for _, p := range append(full, c) {
			h1.must(t, "del", "tiny", p)
		}
	})

	t.Run("50 parallel ADDs on two hosts", func(t *testing.T) {
		const n = 50
		paths := make([]string, n)
		for i := range n {
			paths[i] = newNetns(t, fmt.Sprintf("cf-p%d", i))
		}
		env := func(i int) *cniEnv { return []*cniEnv{h1, h2}[i%2] }
		addrs := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, code := env(i).run(t, "add", "blue-web", paths[i])
				var r cniResult
				if code != 0 || json.Unmarshal([]byte(out), &r) != nil || len(r.IPs) == 0 {
					t.Errorf("ADD %d: exit %d: %s", i, code, out)
					return
				}
				addrs[i] = r.IPs[0].Address
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		seen := map[string]int{}
		for i, a := range addrs {
			if j, dup := seen[a]; dup {
				t.Fatalf("ADD %d and %d both got %s", i, j, a)
			}
			seen[a] = i
		}
		// Every container reaches srv on cf2, wherever it is.
		for _, i := range []int{0, 1, n - 2, n - 1} {
			if !pingFrom(t, paths[i], "10.0.1.10", 1) {
				t.Errorf("container %d (%s) cannot reach srv", i, addrs[i])
			}
		}
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, code := env(i).run(t, "del", "blue-web", paths[i]); code != 0 {
					t.Errorf("DEL %d: exit %d: %s", i, code, out)
				}
			}()
		}
		wg.Wait()
		for _, h := range []string{"cf1", "cf2"} {
			if d := dynamicENIs(t, l, h); len(d) != 0 || len(hostLinks(t, l, h, "vc")) != 0 {
				t.Errorf("%s after the DELs: %d ENIs, links %v", h, len(d), hostLinks(t, l, h, "vc"))
			}
		}
	})

	t.Run("chained with bandwidth", func(t *testing.T) {
		c := newNetns(t, "cf-bw")
		h1.must(t, "add", "blue-bw", c)
		if !pingFrom(t, c, "10.0.1.10", 3) {
			t.Fatal("the chained container cannot reach srv")
		}
		var qdisc bool
		inNetns(t, c, func() error {
			link, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			qs, _ := netlink.QdiscList(link)
			for _, q := range qs {
				qdisc = qdisc || q.Type() == "tbf"
			}
			return nil
		})
		bw := len(hostLinks(t, l, "cf1", "bwp")) > 0
		if !qdisc && !bw {
			t.Error("bandwidth shaped nothing: no tbf qdisc, no ifb device")
		}
		h1.must(t, "check", "blue-bw", c)
		h1.must(t, "del", "blue-bw", c)
		if len(dynamicENIs(t, l, "cf1")) != 0 || len(hostLinks(t, l, "cf1", "bwp")) != 0 {
			t.Fatal("DEL of the chain left something")
		}
	})

	t.Run("gc", func(t *testing.T) {
		keep, drop := newNetns(t, "cf-gk"), newNetns(t, "cf-gd")
		h1.add(t, "blue-web", keep)
		h1.add(t, "blue-web", drop)
		if len(dynamicENIs(t, l, "cf1")) != 2 {
			t.Fatal("want two dynamic ENIs")
		}
		// The runtime lists only keep's attachment as valid (cnitool gc
		// passes none, so the plugin is run as a runtime would run it).
		sum := sha512.Sum512([]byte(keep))
		conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "blue-web", "type": "vpcd-cni", "subnet": "blue-web",
			"socket": %q, "cni.dev/valid-attachments": [{"containerID": "cnitool-%x", "ifname": "eth0"}]}`, l.SocketPath("cf1"), sum[:10])
		var out bytes.Buffer
		code, err := l.Exec(context.Background(), lab.Host, "cf1",
			[]string{"env", "CNI_COMMAND=GC", "CNI_PATH=" + h1.path, filepath.Join(cniTools.dir, "vpcd-cni")},
			strings.NewReader(conf), &out, &out)
		if err != nil || code != 0 {
			t.Fatalf("GC: exit %d, %v: %s", code, err, out.String())
		}
		d := dynamicENIs(t, l, "cf1")
		if len(d) != 1 {
			t.Fatalf("after GC: %d dynamic ENIs, want 1", len(d))
		}
		// Named after the container (SPEC 12): its ID, as cnitool gave it.
		if id := fmt.Sprintf("cnitool-%x", sum[:10]); d[id].Name != id {
			t.Errorf("the kept container's ENI is not named %s: %v", id, d)
		}
		h1.must(t, "check", "blue-web", keep)
		h1.must(t, "del", "blue-web", keep)
		h1.must(t, "del", "blue-web", drop)
	})

	t.Run("a container gone without DEL", func(t *testing.T) {
		c := newNetns(t, "cf-gone")
		h1.add(t, "blue-web", c)
		if len(dynamicENIs(t, l, "cf1")) != 1 {
			t.Fatal("want one dynamic ENI")
		}
		// The namespace goes, and its end of the veth pair with it, so the
		// other end: the daemon deletes the ENI by itself.
		if out, err := exec.Command("ip", "netns", "del", "cf-gone").CombinedOutput(); err != nil {
			t.Fatalf("ip netns del: %v: %s", err, out)
		}
		testkit.WaitFor(t, 15*time.Second, "the daemon deleting the ENI of a vanished container", func() bool {
			return len(dynamicENIs(t, l, "cf1")) == 0
		})
		h1.must(t, "del", "blue-web", c) // the runtime's late DEL still succeeds
	})

	t.Run("vpcd get, flow logs and a mirror session of a container's ENI", func(t *testing.T) { testCNIObservability(t, l, h1) })
	t.Run("a real runtime: containerd", func(t *testing.T) { testContainerd(t, l) })
}

// testCNIObservability: a container's ENI is an ordinary ENI: `vpcd get
// enis` lists it, a subnet's flow log records its traffic, and a file
// applied with `vpcd apply` may name it as a mirror session's source; its
// DEL takes the session along and the state stays valid.
func testCNIObservability(t *testing.T, l *lab.Lab, h1 *cniEnv) {
	cfg, _ := l.EtcdConfig()
	etcdFlags := []string{"--etcd", cfg.Endpoints[0], "--etcd-ca", cfg.CAFile, "--etcd-cert", cfg.CertFile, "--etcd-key", cfg.KeyFile}
	vpcd := func(args ...string) string {
		t.Helper()
		return mustRun(t, l, lab.Rack, "", append([]string{vpcdBinary}, args...)...)
	}
	c := newNetns(t, "cf-m1")
	ip := strings.Split(h1.add(t, "blue-web", c).IPs[0].Address, "/")[0]
	var name string
	for n := range dynamicENIs(t, l, "cf1") {
		name = n
	}
	if out := vpcd(append([]string{"get", "enis"}, etcdFlags...)...); !strings.Contains(out, name) {
		t.Fatalf("vpcd get enis does not list %s:\n%s", name, out)
	}

	dir := t.TempDir()
	base, err := os.ReadFile("testdata/cni.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(dir, "m.pcap")
	file := filepath.Join(dir, "topology.yaml")
	os.WriteFile(file, []byte(string(base)+fmt.Sprintf(`
flow_logs:
  - {name: web, resource: "subnet:blue-web", traffic_type: ALL, aggregation_interval: 1s, format: default,
     destination: "file://%s/{host}-flows.log"}
mirror_filters:
  - name: all
    ingress: [{rule_number: 1, action: accept, protocol: all, source_cidr: 0.0.0.0/0, destination_cidr: 0.0.0.0/0}]
    egress: [{rule_number: 1, action: accept, protocol: all, source_cidr: 0.0.0.0/0, destination_cidr: 0.0.0.0/0}]
mirror_sessions:
  - {name: m, source_eni: %s, filter: all, session_number: 1, virtual_network_id: 77, target: {pcap: "%s"}}
`, dir, name, pcap)), 0o644)
	vpcd(append([]string{"apply", "-f", file}, etcdFlags...)...)
	testkit.WaitFor(t, 10*time.Second, "cf1 running the mirror session", func() bool {
		st, err := control.QueryStatus(l.SocketPath("cf1"))
		return err == nil && len(st.Mirrors) == 1 && st.Mirrors[0].Source == name
	})
	if !pingFrom(t, c, "10.0.1.10", 3) {
		t.Fatal("the container cannot reach srv")
	}
	flows := filepath.Join(dir, "cf1-flows.log")
	testkit.WaitFor(t, 10*time.Second, "a flow record of the container and a mirrored copy", func() bool {
		b, _ := os.ReadFile(flows)
		fi, err := os.Stat(pcap)
		return strings.Contains(string(b), name) && strings.Contains(string(b), ip) && err == nil && fi.Size() > 24+100
	})

	h1.must(t, "del", "blue-web", c)
	testkit.WaitFor(t, 10*time.Second, "the session gone with its ENI", func() bool {
		st, err := control.QueryStatus(l.SocketPath("cf1"))
		return err == nil && len(st.Mirrors) == 0
	})
	// The state is still valid: containers still come and go.
	c2 := newNetns(t, "cf-m2")
	h1.add(t, "blue-web", c2)
	h1.must(t, "del", "blue-web", c2)
	vpcd(append([]string{"apply", "--prune", "-f", "testdata/cni.yaml"}, etcdFlags...)...)
}

// TestCNIFileMode: a daemon that runs from a topology file has no control
// plane to publish containers' ENIs through: ADD fails saying so and
// leaves nothing, STATUS fails.
func TestCNIFileMode(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	l := upLab(t, "cfx", "cni.yaml")
	h := newCNIEnv(t, l, "cf1")
	c := newNetns(t, "cf-f1")
	ce := h.pluginFails(t, "ADD", "blue-web.conf", c)
	if ce.Code != 103 || !strings.Contains(ce.Msg, "dynamic ENIs need the etcd control plane") {
		t.Fatalf("ADD in file mode: %+v", ce)
	}
	if ce := h.pluginFails(t, "STATUS", "tiny.conf", ""); ce.Code != 50 || !strings.Contains(ce.Msg, "etcd") {
		t.Fatalf("STATUS in file mode: %+v", ce)
	}
	if links := hostLinks(t, l, "cf1", "vc"); len(links) != 0 {
		t.Fatalf("a failed ADD left %v", links)
	}
}
