package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/topology"
)

// Where a lab's etcd lives: in the rack namespace, on the rack bridge, so
// that the hosts reach it over their underlay as a fleet would.
const (
	etcdDir        = "etcd"
	etcdClientPort = 2379
	etcdPeerPort   = 2380 // on the rack namespace's loopback only
)

// etcdState is a lab's etcd server (Options.Etcd).
type etcdState struct {
	Addr     netip.Addr `json:"addr"` // on rack0
	Endpoint string     `json:"endpoint"`
	PID      int        `json:"pid,omitempty"`
	PIDFile  string     `json:"pid_file"`
	Log      string     `json:"log"`
	DataDir  string     `json:"data_dir"`
	CA       string     `json:"ca"`
	Cert     string     `json:"client_cert"` // the daemons' (and apply's) client certificate
	Key      string     `json:"client_key"`
	Prefix   string     `json:"prefix"`
}

// etcdAddr picks the etcd server's underlay address: the highest address
// of the first host's /24 that no host has.
func etcdAddr(t *topology.Topology) (netip.Addr, error) {
	if len(t.Hosts) == 0 {
		return netip.Addr{}, errors.New("lab --etcd: no host")
	}
	used := map[netip.Addr]bool{}
	for i := range t.Hosts {
		used[t.Hosts[i].UnderlayIP] = true
	}
	b := t.Hosts[0].UnderlayIP.As4()
	for last := 254; last > 1; last-- {
		b[3] = byte(last)
		if a := netip.AddrFrom4(b); !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("lab --etcd: no free underlay address for etcd")
}

// newEtcdState returns the paths of a lab's etcd in dir.
func newEtcdState(dir string, addr netip.Addr) *etcdState {
	d := filepath.Join(dir, etcdDir)
	return &etcdState{
		Addr:     addr,
		Endpoint: "https://" + netip.AddrPortFrom(addr, etcdClientPort).String(),
		PIDFile:  filepath.Join(d, "etcd.pid"),
		Log:      filepath.Join(d, "etcd.log"),
		DataDir:  filepath.Join(d, "data"),
		CA:       filepath.Join(d, "ca.pem"),
		Cert:     filepath.Join(d, "client.pem"),
		Key:      filepath.Join(d, "client-key.pem"),
		Prefix:   controlplane.DefaultPrefix,
	}
}

// etcdFlags are the etcd flags of `vpcd run` and `vpcd apply` in the lab.
func (e *etcdState) etcdFlags() []string {
	return []string{"--etcd", e.Endpoint, "--etcd-prefix", e.Prefix, "--etcd-ca", e.CA, "--etcd-cert", e.Cert, "--etcd-key", e.Key}
}

// config is the client configuration of the lab's etcd.
func (e *etcdState) config() controlplane.Config {
	return controlplane.Config{Endpoints: []string{e.Endpoint}, CAFile: e.CA, CertFile: e.Cert, KeyFile: e.Key, DialTimeout: 2 * time.Second}
}

// plumbEtcd gives the rack bridge etcd's address and a route to every
// host, and every host a route to etcd: link scope, as between hosts.
func plumbEtcd(rackNS string, st *state, t *topology.Topology, addr netip.Addr) error {
	rh, br, done, err := rackBridge(rackNS)
	if err != nil {
		return err
	}
	defer done()
	if err := rh.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, 32))}); err != nil {
		return fmt.Errorf("add %s to %s in netns %s: %w", addr, bridgeName, rackNS, err)
	}
	for i := range t.Hosts {
		h := &t.Hosts[i]
		r := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: ipNet(netip.PrefixFrom(h.UnderlayIP, 32)), Scope: netlink.SCOPE_LINK}
		if err := rh.RouteAdd(r); err != nil {
			return fmt.Errorf("route %s dev %s in netns %s: %w", r.Dst, bridgeName, rackNS, err)
		}
		hs := st.host(h.Name)
		if hs == nil {
			continue
		}
		if err := routeTo(hs.NS, underlayIf(h), addr); err != nil {
			return err
		}
	}
	return nil
}

// routeTo adds a link-scope /32 route to addr via dev in namespace ns.
func routeTo(ns, dev string, addr netip.Addr) error {
	hh, hns, err := nsHandle(ns)
	if err != nil {
		return err
	}
	defer hns.Close()
	defer hh.Close()
	link, err := hh.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("interface %s in netns %s: %w", dev, ns, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(netip.PrefixFrom(addr, 32)), Scope: netlink.SCOPE_LINK}
	if err := hh.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s dev %s in netns %s: %w", r.Dst, dev, ns, err)
	}
	return nil
}

// setupEtcd generates the lab's TLS (a CA, etcd's server certificate, one
// client certificate for the daemons and apply; private keys 0600 in the
// lab directory) and starts etcd.
func setupEtcd(rackNS string, e *etcdState) error {
	d := filepath.Dir(e.PIDFile)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	files, err := controlplane.GenerateTLS(d, e.Addr.String())
	if err != nil {
		return fmt.Errorf("lab etcd TLS: %w", err)
	}
	e.CA, e.Cert, e.Key = files.CA, files.ClientCert, files.ClientKey
	return startEtcd(rackNS, e)
}

// etcdArgs is the etcd command line: clients over TLS with a certificate
// the lab's CA signed, on the rack bridge's address only; the peer port on
// the rack namespace's loopback.
func (e *etcdState) etcdArgs() []string {
	d := filepath.Dir(e.PIDFile)
	peer := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	return []string{
		"--name", "lab",
		"--data-dir", e.DataDir,
		"--listen-client-urls", e.Endpoint,
		"--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "lab=" + peer,
		"--initial-cluster-state", "new",
		"--cert-file", filepath.Join(d, "server.pem"),
		"--key-file", filepath.Join(d, "server-key.pem"),
		"--trusted-ca-file", e.CA,
		"--client-cert-auth",
		"--logger", "zap", "--log-outputs", e.Log,
	}
}

// startEtcd starts etcd in the rack namespace, in a session of its own,
// and waits until it answers.
func startEtcd(rackNS string, e *etcdState) error {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("lab --etcd needs the etcd server (Debian's etcd-server): %w", err)
	}
	cmd := exec.Command(bin, e.etcdArgs()...)
	cmd.Dir = filepath.Dir(e.PIDFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := inNS(rackNS, cmd.Start); err != nil {
		return fmt.Errorf("start etcd in netns %s: %w", rackNS, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	e.PID = cmd.Process.Pid
	if err := os.WriteFile(e.PIDFile, []byte(strconv.Itoa(e.PID)+"\n"), 0o644); err != nil {
		return err
	}
	return waitEtcd(rackNS, e, 30*time.Second, exited)
}

// waitEtcd waits until etcd answers a read from inside the rack, or the
// process exits (exited closes). Not its command line: right after the
// fork, before exec, /proc shows the parent's.
func waitEtcd(rackNS string, e *etcdState, within time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("etcd (pid %d) exited; last lines of %s:\n%s", e.PID, e.Log, logTail(e.Log, logTailLines))
		default:
		}
		last = func() error {
			cli, err := etcdClient(rackNS, e)
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err = cli.Get(ctx, e.Prefix+"/commit")
			return err
		}()
		if last == nil {
			return nil
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("etcd did not answer within %v: %v", within, last)
}

// etcdClient opens a client of the lab's etcd whose connections are made
// inside the namespace ns (the etcd address exists only inside the lab).
func etcdClient(ns string, e *etcdState) (*clientv3.Client, error) {
	tlsCfg, err := e.config().TLS()
	if err != nil {
		return nil, err
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{e.Endpoint},
		TLS:         tlsCfg,
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
}

// isEtcd reports whether pid is alive and is the lab's etcd.
func isEtcd(pid int, e *etcdState) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	i := slices.Index(args, "--data-dir")
	return i >= 0 && i+1 < len(args) && args[i+1] == e.DataDir
}

// stopEtcd stops the lab's etcd by PID (SIGTERM, SIGKILL after wait).
func stopEtcd(e *etcdState, wait time.Duration) error {
	pids := map[int]bool{}
	if e.PID > 0 {
		pids[e.PID] = true
	}
	if data, err := os.ReadFile(e.PIDFile); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && p > 0 {
			pids[p] = true
		}
	}
	for pid := range pids {
		if !isEtcd(pid, e) {
			continue
		}
		unix.Kill(pid, unix.SIGTERM)
		deadline := time.Now().Add(wait)
		for isEtcd(pid, e) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if isEtcd(pid, e) {
			unix.Kill(pid, unix.SIGKILL)
			for i := 0; i < 100 && isEtcd(pid, e); i++ {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	e.PID = 0
	return nil
}

// applyEtcd runs `vpcd apply` of path against the lab's etcd, inside the
// rack namespace. A file that does not validate leaves etcd untouched and
// returns apply's own error lines.
func applyEtcd(st *state, path string, prune bool) error {
	e := st.Etcd
	args := append([]string{"apply", "-f", path}, e.etcdFlags()...)
	if prune {
		args = append(args, "--prune")
	}
	var out strings.Builder
	cmd := exec.Command(st.Binary, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := inNS(rackNSName(st.Name), cmd.Start); err != nil {
		return fmt.Errorf("vpcd apply: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("vpcd apply %s: %v: %s", path, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// EtcdEndpoint returns the lab's etcd client URL, "" when the lab runs
// its daemons from a file.
func (l *Lab) EtcdEndpoint() string {
	if l.st.Etcd == nil {
		return ""
	}
	return l.st.Etcd.Endpoint
}

// EtcdConfig returns the client configuration of the lab's etcd (its
// address is reachable only inside the lab: use it from a lab namespace,
// or use EtcdClient); ok is false when the lab has no etcd.
func (l *Lab) EtcdConfig() (cfg controlplane.Config, ok bool) {
	if l.st.Etcd == nil {
		return controlplane.Config{}, false
	}
	return l.st.Etcd.config(), true
}

// EtcdClient opens a client of the lab's etcd from this process: its
// connections are made inside the rack namespace.
func (l *Lab) EtcdClient() (*clientv3.Client, error) {
	if l.st.Etcd == nil {
		return nil, errors.New("lab has no etcd")
	}
	return etcdClient(l.RackNS(), l.st.Etcd)
}

// EtcdPID returns the PID of the lab's etcd, 0 when it does not run.
func (l *Lab) EtcdPID() int {
	if e := l.st.Etcd; e != nil && isEtcd(e.PID, e) {
		return e.PID
	}
	return 0
}

// StopEtcd stops the lab's etcd (SIGTERM, as an outage would look to
// clients); StartEtcd starts it again with its data.
func (l *Lab) StopEtcd() error {
	if l.st.Etcd == nil {
		return errors.New("lab has no etcd")
	}
	if err := stopEtcd(l.st.Etcd, 5*time.Second); err != nil {
		return err
	}
	return l.st.save()
}

// StartEtcd starts the lab's stopped etcd and waits until it answers.
func (l *Lab) StartEtcd() error {
	e := l.st.Etcd
	if e == nil {
		return errors.New("lab has no etcd")
	}
	if isEtcd(e.PID, e) {
		return fmt.Errorf("etcd is already running (pid %d)", e.PID)
	}
	err := startEtcd(l.RackNS(), e)
	if serr := l.st.save(); err == nil {
		err = serr
	}
	return err
}
