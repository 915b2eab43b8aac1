// Package lab builds a whole vpcd topology on one machine with network
// namespaces and runs one `vpcd run` daemon per host (SPEC §1, "lab").
//
// A lab named N consists of:
//
//   - the rack namespace N-rack, holding the bridge rack0 that joins the
//     hosts' underlay interfaces (one veth pair per host, r-HOST on the
//     bridge side);
//   - one namespace N-h-HOST per host, holding the host's underlay interface
//     (underlay_ip/32 plus a link-scope /32 route to every other host), the
//     host side of its ENIs' veth pairs, and its daemon;
//   - one namespace N-e-ENI per ENI, holding the workload's eth0;
//   - the directory /run/vpcd/labs/N (state.json, the daemons' topology.yaml
//     with public keys filled in, and hosts/HOST/ with each host's private
//     key, log, PID file and control socket);
//   - the bpffs directory /sys/fs/bpf/vpcd-lab/N/HOST of each daemon.
//
// Namespaces are entered with setns on a locked OS thread, never with
// `ip netns exec`, which remounts /sys and would hide /sys/fs/bpf: the
// daemons share the machine's bpffs so their pins outlive them. Nothing is
// ever addressed or routed in the root namespace.
//
// The lab keeps no lock: every change is recorded by rewriting state.json
// atomically. Exec, Do, Status and the accessors of a Lab may be called
// from several goroutines at once; the methods that change it (Kill, Stop,
// Start, Restart, Apply) may not run concurrently with any other method.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/topology"
)

// DefaultHandshakeTimeout bounds how long Up and Start wait for handshakes.
const DefaultHandshakeTimeout = 30 * time.Second

// Options configure Up.
type Options struct {
	// Name of the lab; DefaultName() when empty.
	Name string
	// TopologyPath is the topology file to build.
	TopologyPath string
	// Binary is the vpcd executable started as each host's daemon,
	// normally os.Executable().
	Binary string
	// Out receives the summary; nothing is printed when nil.
	Out io.Writer
	// HandshakeTimeout bounds the wait for WireGuard handshakes
	// (DefaultHandshakeTimeout when zero); a deadline of ctx also applies.
	HandshakeTimeout time.Duration
	// NoDaemons builds the namespaces, interfaces and keys only: no daemon
	// is started and nothing is waited for.
	NoDaemons bool
	// DaemonFlags are added to every host's `vpcd run` command line
	// (e.g. --eni-hook xdp).
	DaemonFlags []string
	// Etcd runs the lab on the etcd control plane (SPEC §11): a real etcd
	// server in the rack namespace, on the rack bridge (TLS with client
	// certificates the lab generates), the topology written with `vpcd
	// apply`, and every daemon started with --etcd.
	Etcd bool
}

// Kind selects the kind of namespace Exec and Do enter.
type Kind int

// The kinds of namespace in a lab.
const (
	ENI  Kind = iota // a workload's namespace, named by its ENI
	Host             // a host's namespace, named by its host
	Rack             // the rack namespace; the target name is ignored
)

func (k Kind) String() string {
	switch k {
	case ENI:
		return "eni"
	case Host:
		return "host"
	case Rack:
		return "rack"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Lab is a lab that exists on this machine.
type Lab struct {
	st   *state
	topo *topology.Topology
}

// alreadyExists is the error of Up for an existing lab.
func alreadyExists(name string) error {
	cmd := "vpcd lab down"
	if name != DefaultName() {
		cmd += " --name " + name
	}
	return fmt.Errorf("lab %q already exists; run %q first", name, cmd)
}

// Up builds the lab described by o.TopologyPath, starts a daemon per host
// and waits until every pair of hosts has a WireGuard handshake, then prints
// a summary to o.Out. It refuses a lab that already exists (its directory or
// any of its namespaces is present). A topology that does not load changes
// nothing; any later failure tears down everything Up made before the error
// is returned.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if o.Name == "" {
		o.Name = DefaultName()
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if err := checkName("lab", o.Name); err != nil {
		return nil, err
	}
	if !o.NoDaemons || o.Binary != "" {
		bin, err := absBinary(o.Binary)
		if err != nil {
			return nil, err
		}
		o.Binary = bin
	}
	if _, err := os.Stat(labDir(o.Name)); err == nil {
		return nil, alreadyExists(o.Name)
	}
	if nss, err := labNamespaces(o.Name, nil); err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	} else if len(nss) > 0 {
		return nil, alreadyExists(o.Name)
	}
	if o.TopologyPath == "" {
		return nil, errors.New("lab up: no topology file given")
	}
	src, err := filepath.Abs(o.TopologyPath)
	if err != nil {
		return nil, err
	}
	t, err := topology.Load(src)
	if err != nil {
		return nil, err
	}
	if err := checkLabTopology(t); err != nil {
		return nil, err
	}
	// Fail before building anything.
	if err := canBootVMs(t, o.NoDaemons); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	if !o.NoDaemons {
		for i := range t.Hosts {
			hs := newHostState(o.Name, "", t.Hosts[i].Name)
			if uapiLive(hs.UAPI) {
				return nil, fmt.Errorf("host %s: tunnel socket %s is in use by a running daemon (another lab with this host name?)", hs.Name, hs.UAPI)
			}
		}
	}
	dir := labDir(o.Name)
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, err
	}
	// Mkdir claims the name atomically against a concurrent Up.
	if err := os.Mkdir(dir, 0o755); errors.Is(err, fs.ErrExist) {
		return nil, alreadyExists(o.Name)
	} else if err != nil {
		return nil, err
	}

	l, err := up(ctx, o, src, dir, t)
	if err != nil {
		if derr := Down(o.Name); derr != nil {
			err = fmt.Errorf("%w (and tearing the half-built lab down: %v)", err, derr)
		}
		return nil, err
	}
	return l, nil
}

// absBinary returns the absolute path of the daemon binary: the daemons run
// with the lab directory as their working directory.
func absBinary(bin string) (string, error) {
	switch {
	case bin == "":
		return "", errors.New("lab up: no vpcd binary given")
	case filepath.IsAbs(bin):
		return bin, nil
	case strings.Contains(bin, "/"):
		return filepath.Abs(bin)
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("lab up: %w", err)
	}
	return filepath.Abs(p)
}

// up does the work of Up once the lab directory is claimed.
func up(ctx context.Context, o Options, src, dir string, t *topology.Topology) (*Lab, error) {
	st := &state{
		Name:      o.Name,
		Dir:       dir,
		Source:    src,
		Topology:  filepath.Join(dir, topologyFile),
		Binary:    o.Binary,
		NoDaemons: o.NoDaemons,
		Created:   time.Now().UTC().Truncate(time.Second),
	}
	for i := range t.Hosts {
		hs := newHostState(o.Name, dir, t.Hosts[i].Name)
		hs.Flags = o.DaemonFlags
		st.Hosts = append(st.Hosts, hs)
	}
	if err := os.MkdirAll(filepath.Join(dir, hostsDir), 0o700); err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	if err := prepareKeys(t, dir); err != nil {
		return nil, err
	}
	if err := resolvePaths(t, dir, filepath.Dir(src)); err != nil {
		return nil, err
	}
	if err := writeTopology(st.Topology, t); err != nil {
		return nil, err
	}

	st.RackNS = rackNSName(o.Name)
	if err := buildRack(st.RackNS); err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	for i := range t.Hosts {
		if err := buildHost(st.RackNS, st.Hosts[i].NS, t, &t.Hosts[i]); err != nil {
			return nil, err
		}
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	if o.Etcd {
		addr, err := etcdAddr(t)
		if err != nil {
			return nil, err
		}
		st.Etcd = newEtcdState(dir, addr)
		if err := st.save(); err != nil {
			return nil, err
		}
		if err := plumbEtcd(st.RackNS, st, t, addr); err != nil {
			return nil, err
		}
		err = setupEtcd(st.RackNS, st.Etcd)
		if serr := st.save(); err == nil {
			err = serr
		}
		if err != nil {
			return nil, err
		}
		if st.Binary != "" {
			if err := applyEtcd(st, st.Topology, false); err != nil {
				return nil, err
			}
		}
	}
	for i := range t.ENIs {
		e := &t.ENIs[i]
		es := eniState{Name: e.Name, Host: e.Host, NS: eniNSName(o.Name, e.Name), Interface: eniIf(e)}
		if err := buildENI(hostNSName(o.Name, e.Host), es.NS, t, e); err != nil {
			return nil, err
		}
		st.ENIs = append(st.ENIs, es)
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	l := &Lab{st: st, topo: t}
	if !o.NoDaemons {
		for i := range st.Hosts {
			err := startDaemon(st.Binary, dir, st.Topology, &st.Hosts[i], st.Etcd)
			if serr := st.save(); err == nil {
				err = serr
			}
			if err != nil {
				return nil, err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, o.HandshakeTimeout)
		defer cancel()
		hosts := make([]*hostState, len(st.Hosts))
		for i := range st.Hosts {
			hosts[i] = &st.Hosts[i]
		}
		if err := waitHandshakes(wctx, t, hosts); err != nil {
			return nil, err
		}
		// The VMs of the topology, once the daemons made their taps;
		// Down (also of this half-built lab) stops them.
		for _, v := range t.VMs {
			if _, err := l.VMUp(ctx, v.ENI); err != nil {
				return nil, err
			}
		}
	}
	l.summary(o.Out)
	return l, nil
}

// Open returns the existing lab name, from its state.json and topology copy.
func Open(name string) (*Lab, error) {
	if name == "" {
		name = DefaultName()
	}
	if err := checkName("lab", name); err != nil {
		return nil, err
	}
	st, err := readState(labDir(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("lab %q does not exist (no %s)", name, filepath.Join(labDir(name), stateFile))
	}
	if err != nil {
		return nil, err
	}
	t, err := topology.Load(st.Topology)
	if err != nil {
		return nil, fmt.Errorf("lab %q: %w", name, err)
	}
	return &Lab{st: st, topo: t}, nil
}

// Down removes everything lab name made: it stops the daemons the lab
// recorded (SIGTERM, SIGKILL after 5 s), deletes the lab's namespaces, its
// bpffs directory (unpinning detaches what the daemons left attached), the
// stale WireGuard UAPI sockets of its hosts and the lab directory. It works
// after a crash or a half-made Up and on a lab that does not exist; it tries
// every step and returns the first error.
func Down(name string) error {
	if name == "" {
		name = DefaultName()
	}
	if err := checkName("lab", name); err != nil {
		return err
	}
	dir := labDir(name)
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	// Hosts and namespaces from state.json (if any) and the hosts/ directory.
	own := map[string]bool{}
	hosts := map[string]*hostState{}
	st, err := readState(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		note(err)
	}
	if st != nil {
		own[st.RackNS] = true
		for i := range st.Hosts {
			hs := st.Hosts[i]
			hosts[hs.Name] = &hs
			own[hs.NS] = true
		}
		for _, e := range st.ENIs {
			own[e.NS] = true
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, hostsDir)); err == nil {
		for _, e := range ents {
			if _, ok := hosts[e.Name()]; !ok && e.IsDir() {
				hs := newHostState(name, dir, e.Name())
				hosts[hs.Name] = &hs
			}
		}
	}

	// 1. Daemons: the recorded PID and the PID file, each only if it still
	// is our `vpcd run` for that host.
	done := make(chan error)
	n := 0
	for _, hs := range hosts {
		pids := map[int]bool{}
		if hs.PID > 0 {
			pids[hs.PID] = true
		}
		if data, err := os.ReadFile(hs.PIDFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && p > 0 {
				pids[p] = true
			}
		}
		for pid := range pids {
			n++
			go func() { done <- stopDaemon(pid, hs, unix.SIGTERM, downStopTimeout) }()
		}
	}
	for range n {
		note(<-done)
	}
	// The lab's etcd, by its recorded PID and PID file.
	if st != nil && st.Etcd != nil {
		note(stopEtcd(st.Etcd, downStopTimeout))
	} else {
		note(stopEtcd(newEtcdState(dir, netip.Addr{}), downStopTimeout))
	}

	// VMs on tap ENIs, by their PID files (vm.go).
	note(stopVMs(dir))

	// 2. Namespaces.
	nss, err := labNamespaces(name, own)
	note(err)
	for _, ns := range nss {
		note(deleteNS(ns))
	}

	// 3. bpffs.
	if err := os.RemoveAll(filepath.Join(BPFFSRoot, name)); err != nil {
		note(fmt.Errorf("remove bpffs %s: %w", filepath.Join(BPFFSRoot, name), err))
	}
	_ = os.Remove(BPFFSRoot) // only when empty

	// 4. UAPI sockets our daemons left (a live one belongs to someone else).
	for _, hs := range hosts {
		if !uapiLive(hs.UAPI) {
			if err := os.Remove(hs.UAPI); err != nil && !errors.Is(err, fs.ErrNotExist) {
				note(err)
			}
		}
	}

	// 5. The lab directory.
	note(os.RemoveAll(dir))
	_ = os.Remove(RunDir)
	_ = os.Remove(filepath.Dir(RunDir))

	if len(errs) > 0 {
		return fmt.Errorf("lab %q down: %w", name, errs[0])
	}
	return nil
}

// uapiLive reports whether something accepts connections on a UAPI socket.
func uapiLive(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Name returns the lab's name.
func (l *Lab) Name() string { return l.st.Name }

// Dir returns the lab's directory, /run/vpcd/labs/NAME.
func (l *Lab) Dir() string { return l.st.Dir }

// Topology returns the topology the daemons run: the given file with public
// keys filled in and relative paths resolved inside Dir.
func (l *Lab) Topology() *topology.Topology { return l.topo }

// TopologyPath returns the path of the daemons' topology file.
func (l *Lab) TopologyPath() string { return l.st.Topology }

// RackNS returns the name of the rack namespace.
func (l *Lab) RackNS() string { return rackNSName(l.st.Name) }

// HostNS returns the name of host's namespace.
func (l *Lab) HostNS(host string) string { return hostNSName(l.st.Name, host) }

// ENINS returns the name of the namespace of the ENI eni.
func (l *Lab) ENINS(eni string) string { return eniNSName(l.st.Name, eni) }

// DaemonPID returns the PID the lab recorded for host's daemon, or 0 when it
// is not running.
func (l *Lab) DaemonPID(host string) int {
	hs := l.st.host(host)
	if hs == nil || !running(hs) {
		return 0
	}
	return hs.PID
}

// LogPath returns the path of host's daemon log.
func (l *Lab) LogPath(host string) string { return l.hostPaths(host).Log }

// SocketPath returns the path of host's daemon control socket.
func (l *Lab) SocketPath(host string) string { return l.hostPaths(host).Socket }

// BPFFSDir returns host's daemon's bpffs directory.
func (l *Lab) BPFFSDir(host string) string { return l.hostPaths(host).BPFFS }

// StateDir returns host's daemon's state directory.
func (l *Lab) StateDir(host string) string { return l.hostPaths(host).StateDir }

func (l *Lab) hostPaths(host string) hostState {
	if hs := l.st.host(host); hs != nil {
		return *hs
	}
	return newHostState(l.st.Name, l.st.Dir, host)
}

// hostState returns the recorded state of host or an error naming the
// lab's hosts.
func (l *Lab) hostState(host string) (*hostState, error) {
	if hs := l.st.host(host); hs != nil {
		return hs, nil
	}
	names := make([]string, len(l.st.Hosts))
	for i := range l.st.Hosts {
		names[i] = l.st.Hosts[i].Name
	}
	return nil, fmt.Errorf("lab %q has no host %q (hosts: %s)", l.st.Name, host, strings.Join(names, ", "))
}

// nsFor returns the namespace of kind/target after checking it is the lab's.
func (l *Lab) nsFor(kind Kind, target string) (string, error) {
	switch kind {
	case Rack:
		return l.RackNS(), nil
	case Host:
		if _, err := l.hostState(target); err != nil {
			return "", err
		}
		return l.HostNS(target), nil
	case ENI:
		if l.st.eni(target) == nil {
			names := make([]string, len(l.st.ENIs))
			for i := range l.st.ENIs {
				names[i] = l.st.ENIs[i].Name
			}
			return "", fmt.Errorf("lab %q has no ENI %q (ENIs: %s)", l.st.Name, target, strings.Join(names, ", "))
		}
		return l.ENINS(target), nil
	}
	return "", fmt.Errorf("unknown namespace kind %v", kind)
}

// Exec runs argv inside the namespace of kind/target (the machine's mount
// namespace, so /sys/fs/bpf stays visible) with the given stdin, stdout and
// stderr, and returns its exit code: 128+N when a signal N ended it. err is
// non-nil only when the command could not be run or ctx ended it.
func (l *Lab) Exec(ctx context.Context, kind Kind, target string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (exitCode int, err error) {
	if len(argv) == 0 {
		return -1, errors.New("exec: no command")
	}
	ns, err := l.nsFor(kind, target)
	if err != nil {
		return -1, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := inNS(ns, cmd.Start); err != nil {
		return -1, fmt.Errorf("exec %s in netns %s: %w", argv[0], ns, err)
	}
	werr := cmd.Wait()
	if werr == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if !errors.As(werr, &ee) {
		return -1, fmt.Errorf("exec %s in netns %s: %w", argv[0], ns, werr)
	}
	code := ee.ExitCode()
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if ctx.Err() != nil {
		return code, ctx.Err()
	}
	return code, nil
}

// Do runs fn on an OS thread locked to it and switched into the namespace of
// kind/target, and switches the thread back afterwards. Sockets fn opens
// stay in that namespace. Goroutines fn starts run elsewhere, in the
// machine's namespace.
func (l *Lab) Do(kind Kind, target string, fn func() error) error {
	ns, err := l.nsFor(kind, target)
	if err != nil {
		return err
	}
	return inNS(ns, fn)
}

// Kill kills host's daemon with SIGKILL, as a crash would, and waits until
// it is gone. The datapath it pinned stays.
func (l *Lab) Kill(host string) error {
	hs, err := l.hostState(host)
	if err != nil {
		return err
	}
	if !running(hs) {
		return fmt.Errorf("daemon for host %s is not running", host)
	}
	gone, err := signalDaemon(hs.PID, hs, unix.SIGKILL, killTimeout)
	if err != nil {
		return err
	}
	if !gone {
		return fmt.Errorf("daemon for host %s (pid %d) survived SIGKILL", host, hs.PID)
	}
	return l.forget(hs)
}

// Stop stops host's daemon with SIGTERM, as an upgrade would, and kills it
// if it has not exited after 10 s.
func (l *Lab) Stop(host string) error {
	hs, err := l.hostState(host)
	if err != nil {
		return err
	}
	if !running(hs) {
		return fmt.Errorf("daemon for host %s is not running", host)
	}
	if err := stopDaemon(hs.PID, hs, unix.SIGTERM, stopTimeout); err != nil {
		return err
	}
	return l.forget(hs)
}

// forget records that hs's daemon is no longer running.
func (l *Lab) forget(hs *hostState) error {
	hs.PID = 0
	if err := os.Remove(hs.PIDFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return l.st.save()
}

// Start starts host's daemon, which must not be running, and waits (up to
// DefaultHandshakeTimeout or ctx's deadline) until it has a handshake with
// every peer.
func (l *Lab) Start(ctx context.Context, host string) error {
	hs, err := l.hostState(host)
	if err != nil {
		return err
	}
	if running(hs) {
		return fmt.Errorf("daemon for host %s is already running (pid %d)", host, hs.PID)
	}
	err = startDaemon(l.st.Binary, l.st.Dir, l.st.Topology, hs, l.st.Etcd)
	if serr := l.st.save(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if l.st.Etcd != nil {
		// rotate-key may have changed keys: wait for the current ones.
		if err := prepareKeys(l.topo, l.st.Dir); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	return waitHandshakes(wctx, l.topo, []*hostState{hs})
}

// Restart stops host's daemon (SIGTERM) and starts it again, as an upgrade
// would, waiting for its handshakes. A daemon that is not running is just
// started.
func (l *Lab) Restart(ctx context.Context, host string) error {
	hs, err := l.hostState(host)
	if err != nil {
		return err
	}
	if running(hs) {
		if err := l.Stop(host); err != nil {
			return err
		}
	}
	return l.Start(ctx, host)
}
