// Package agent is the vpcd daemon of one host: it loads and attaches the
// eBPF datapath, runs the WireGuard tunnel to every peer host, keeps the
// maps in line with the topology file (reloading on SIGHUP or a change of
// the file), and serves metrics and a local control socket.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/mirror"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// Options configure a daemon.
type Options struct {
	ConfigPath   string
	Host         string
	StateDir     string // private key lives here (0600)
	BPFFS        string // where maps and links are pinned
	MetricsAddr  string // "" disables the metrics server
	SocketPath   string // control socket
	TunnelDevice string // "" = vpcd0
	Logger       *slog.Logger
	// ENIHook forces the ENI program's hook; empty = by interface type.
	ENIHook dataplane.Hook
	// UnderlayHook forces the underlay filter's hook; empty = by interface
	// type (dataplane.ChooseHook).
	UnderlayHook dataplane.Hook
	// Profile serves net/http/pprof on the metrics address.
	Profile bool
	// ReloadPoll is how often the config file is checked for changes.
	ReloadPoll time.Duration
}

// Defaults for a real host.
const (
	DefaultStateDir     = "/var/lib/vpcd"
	DefaultSocket       = "/run/vpcd/vpcd.sock"
	DefaultMetricsAddr  = "127.0.0.1:9477"
	DefaultTunnelDevice = "vpcd0"
)

// Agent is a running daemon.
type Agent struct {
	opts Options
	log  *slog.Logger
	dp   *dataplane.Datapath
	tun  *tunnel.Tunnel
	trim memTrimmer // used by Run's loop only
	priv tunnel.Key
	psk  *tunnel.Key

	mu      sync.Mutex // guards topo, enis, retired, fileMod and the datapath's maps
	topo    *topology.Topology
	enis    map[string]string // ENI name → attached interface
	ifENI   map[int]string    // attached interface's index → ENI name
	retired map[string]string // interface of a removed ENI that still exists → the ENI's former name
	fileMod time.Time

	// flows turns the datapath's flow counters into flow-log records; the
	// field is swapped on reload under mu.
	flows     *flowlogs.Aggregator
	flowSpecs []flowlogs.LogSpec
	// sinkErrLogged is when a sink failure was last logged (drain
	// goroutine only).
	sinkErrLogged time.Time

	// Conntrack occupancy, sampled by the main loop: the last size and
	// insert count seen, and the evictions worked out from them.
	ctEntries   int
	ctInserts   uint64
	ctEvictions uint64
	ctSampled   bool

	// mirror delivers mirror copies; injectUp is whether the injection
	// interface exists for ENI targets (both under mu).
	mirror   *mirror.Mirror
	injectUp bool

	// hub and events serve `vpcd monitor`.
	hub    *hub
	events *dataplane.EventReader

	reloads   *prometheus.CounterVec
	integrity *prometheus.CounterVec
	registry  *prometheus.Registry
}

// LoadTopology reads and validates the topology for host: the file must be
// valid and name host, and every peer must have a public key.
func LoadTopology(path, host string) (*topology.Topology, error) {
	t, err := topology.Load(path)
	if err != nil {
		return nil, err
	}
	if t.HostByName(host) == nil {
		return nil, fmt.Errorf("%s: host %q is not in hosts", path, host)
	}
	if err := t.RequireKeys(host); err != nil {
		return nil, err
	}
	return t, nil
}

// Run starts the daemon and blocks until ctx ends. The datapath stays
// pinned and attached when it returns; only the tunnel goes down.
func Run(ctx context.Context, o Options, reload <-chan struct{}) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TunnelDevice == "" {
		o.TunnelDevice = DefaultTunnelDevice
	}
	if o.ReloadPoll == 0 {
		o.ReloadPoll = 2 * time.Second
	}
	topo, err := LoadTopology(o.ConfigPath, o.Host)
	if err != nil {
		return err
	}
	a := &Agent{opts: o, log: o.Logger, topo: topo, enis: map[string]string{}, retired: map[string]string{}}
	if st, err := os.Stat(o.ConfigPath); err == nil {
		a.fileMod = st.ModTime()
	}
	if a.priv, err = tunnel.LoadOrCreateKey(o.StateDir); err != nil {
		return err
	}
	if mine := topo.HostByName(o.Host).PublicKey; mine != "" && mine != a.priv.PublicKey().String() {
		a.log.Warn("the topology's public key for this host does not match the private key in the state directory; peers will refuse us",
			"host", o.Host, "state_dir", o.StateDir)
	}
	if f := topo.Tunnel.PresharedKeyFile; f != "" {
		k, err := tunnel.ReadKeyFile(f)
		if err != nil {
			return fmt.Errorf("tunnel.preshared_key_file: %w", err)
		}
		a.psk = &k
	}

	if a.dp, err = dataplane.Open(o.BPFFS, a.log); err != nil {
		return err
	}
	defer a.dp.Close()

	state, err := desiredState(topo, o.Host)
	if err != nil {
		return err
	}
	// The tunnel starts with no device in the maps: remote traffic drops
	// (counted) until the encrypted path exists. Never a cleartext one.
	if err := a.dp.Reconcile(state, ifindexByName); err != nil {
		a.log.Warn("reconcile", "err", err)
	}

	tcfg, err := tunnelConfig(topo, o.Host, o.TunnelDevice, a.priv, a.psk)
	if err != nil {
		return err
	}
	// The tunnel program is attached while the device is still down: a
	// decrypted packet never reaches the host's stack, which could answer
	// it with an ICMP error quoting VPC addresses on the underlay.
	tcfg.BeforeUp = func(name string, _ int) error { return a.dp.AttachTunnel(name) }
	if a.tun, err = tunnel.Start(tcfg, a.log); err != nil {
		return err
	}
	defer func() {
		// Point remote traffic at nothing before the device disappears.
		a.dp.SetTunnelIfindex(0)
		a.tun.Close()
	}()
	a.log.Info("tunnel up", "device", a.tun.Name(), "ifindex", a.tun.Ifindex(),
		"listen_port", tcfg.ListenPort, "peers", len(tcfg.Peers), "mtu", tcfg.MTU,
		"public_key", a.priv.PublicKey().String())

	if err := a.apply(topo); err != nil {
		a.log.Warn("apply topology", "err", err)
	}
	h := topo.HostByName(o.Host)
	hook, err := a.dp.AttachUnderlay(h.UnderlayInterface, o.UnderlayHook)
	if err != nil {
		return err
	}
	a.log.Info("attached underlay filter", "interface", h.UnderlayInterface, "hook", hook)

	a.initMetrics()
	if o.MetricsAddr != "" {
		srv, err := a.serveMetrics(o.MetricsAddr)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	if err := a.startMonitor(); err != nil {
		a.log.Warn("monitor unavailable", "err", err)
	} else {
		defer a.events.Close()
	}
	if err := a.startFlowLogs(topo); err != nil {
		a.log.Warn("flow logs", "err", err)
	}
	defer a.stopFlowLogs()
	if err := a.startMirror(topo); err != nil {
		a.log.Warn("mirror sessions", "err", err)
	}
	defer func() {
		a.mu.Lock()
		m := a.mirror
		a.mirror = nil
		a.mu.Unlock()
		if m != nil {
			if err := m.Close(); err != nil {
				a.log.Warn("mirror close", "err", err)
			}
		}
	}()
	flowTick := time.NewTicker(time.Second)
	defer flowTick.Stop()

	a.checkIntegrity() // at start, then every two seconds
	a.sampleConntrack()
	integrity := time.NewTicker(2 * time.Second)
	defer integrity.Stop()

	// The control socket opens last: the lab takes it as the sign that
	// the host is ready.
	if o.SocketPath != "" {
		l, err := a.serveControl(o.SocketPath)
		if err != nil {
			return err
		}
		defer func() { l.Close(); os.Remove(o.SocketPath) }()
	}

	ticker := time.NewTicker(o.ReloadPoll)
	defer ticker.Stop()
	// Loading the programs parsed the kernel's BTF (tens of MiB, garbage
	// now): give it back to the system rather than hold it as resident
	// memory until the scavenger gets round to it.
	debug.FreeOSMemory()
	a.log.Info("vpcd running", "host", o.Host, "enis", len(state.ENIs), "bpffs", o.BPFFS)
	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping; the datapath stays pinned", "bpffs", o.BPFFS)
			return nil
		case now := <-flowTick.C:
			a.drainFlows(now)
		case now := <-integrity.C:
			a.checkIntegrity()
			a.sampleConntrack()
			a.trimMemory(now)
		case <-reload:
			a.Reload("signal")
		case <-ticker.C:
			if st, err := os.Stat(o.ConfigPath); err == nil && !st.ModTime().Equal(a.fileMod) {
				a.Reload("file change")
			}
		}
	}
}

// checkIntegrity finds programs that are no longer attached where vpcd put
// them, or no longer first there, logs and counts each, and attaches them
// again.
func (a *Agent) checkIntegrity() {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Interfaces of removed ENIs that are gone now lose their links
	// first, so that their absence is not counted as a fault.
	for ifname, name := range a.retired {
		a.retireENI(name, ifname)
	}
	for _, p := range a.dp.CheckIntegrity() {
		a.integrity.WithLabelValues(p.Reason).Inc()
		if err := a.dp.Repair(p); err != nil {
			a.integrity.WithLabelValues("repair_failed").Inc()
			a.log.Error("datapath integrity: repair failed", "interface", p.Attachment.Interface, "program", p.Attachment.Program,
				"hook", p.Attachment.Hook, "reason", p.Reason, "detail", p.Detail, "err", err)
			continue
		}
		a.log.Warn("datapath integrity: repaired", "interface", p.Attachment.Interface, "program", p.Attachment.Program,
			"hook", p.Attachment.Hook, "reason", p.Reason, "detail", p.Detail)
	}
}

// retireENI keeps an interface that no ENI names any more closed: while
// it exists the ENI program stays attached, and with no entry for it in
// the ENI map the program drops everything the interface sends (reason
// unknown_eni), so nothing reaches the host's stack. Once the interface is
// gone its link and pin go too. name is the ENI's former name ("" when a
// previous daemon left the link). The caller holds a.mu.
func (a *Agent) retireENI(name, ifname string) {
	if !a.dp.ENIInterfaceLive(ifname) {
		if err := a.dp.DetachENI(ifname); err != nil {
			a.log.Warn("remove the link of a removed ENI", "eni", name, "interface", ifname, "err", err)
			return
		}
		if _, ok := a.retired[ifname]; ok || name != "" {
			a.log.Info("detached removed ENI; its interface is gone", "eni", name, "interface", ifname)
		}
		delete(a.retired, ifname)
		return
	}
	if _, ok := a.retired[ifname]; ok {
		return
	}
	// A link a previous daemon left may run an older program: ours
	// replaces it in place, and the integrity check watches it.
	if _, err := a.dp.AttachENI(ifname, a.opts.ENIHook); err != nil {
		a.log.Warn("keep the program of a removed ENI", "eni", name, "interface", ifname, "err", err)
	}
	a.retired[ifname] = name
	a.log.Info("ENI removed; its interface still exists, so its program stays and drops all it sends (unknown_eni) until the interface is gone",
		"eni", name, "interface", ifname)
}

// bringUp sets an ENI's interface up when it is down. It runs only after
// the ENI's program is attached: a new ENI's interface carries no traffic
// before.
func bringUp(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifname, err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", ifname, err)
	}
	return nil
}

// sampleConntrack sweeps the closed and expired connections out of the
// conntrack table, recounting each ENI's (dataplane.SweepConntrack), and
// works out how many connections the LRU table evicted since the last
// sample: what it gained minus what it grew and what the sweep deleted.
func (a *Agent) sampleConntrack() {
	sw, err := a.dp.SweepConntrack()
	if err != nil {
		a.log.Warn("conntrack sweep", "err", err)
		return
	}
	entries, inserts := sw.Entries, sw.Inserts
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctSampled {
		gained := inserts - a.ctInserts
		grew := entries - a.ctEntries + sw.Deleted
		if grew < 0 || uint64(grew) < gained {
			evicted := gained
			if grew > 0 {
				evicted -= uint64(grew)
			}
			a.ctEvictions += evicted
		}
	}
	a.ctEntries, a.ctInserts, a.ctSampled = entries, inserts, true
}

func ifindexByName(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// apply attaches and detaches ENI programs and reconciles every map for
// topology t. The caller holds no lock.
func (a *Agent) apply(t *topology.Topology) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	state, err := desiredState(t, a.opts.Host)
	if err != nil {
		return err
	}
	state.TunnelIfindex = a.tun.Ifindex()
	var errs []error
	if err := a.dp.Reconcile(state, ifindexByName); err != nil {
		errs = append(errs, err)
	}
	want := map[string]string{}
	wantIf := map[string]bool{}
	for _, e := range state.ENIs {
		want[e.Name] = e.Interface
		wantIf[e.Interface] = true
	}
	// Attach first, then bring the interface up: a new ENI's interface
	// carries nothing before its program runs on it.
	for _, e := range state.ENIs {
		hook, err := a.dp.AttachENI(e.Interface, a.opts.ENIHook)
		if err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: %w", e.Name, err))
			continue
		}
		delete(a.retired, e.Interface)
		if err := bringUp(e.Interface); err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: %w", e.Name, err))
		}
		if _, ok := a.enis[e.Name]; !ok {
			a.log.Info("attached ENI", "eni", e.Name, "interface", e.Interface, "hook", hook,
				"ip", e.IP, "vni", e.VNI)
		}
		a.enis[e.Name] = e.Interface
	}
	// Removed ENIs fail closed: their program stays while their
	// interface exists (retireENI).
	for name, ifname := range a.enis {
		if want[name] == ifname {
			continue
		}
		delete(a.enis, name)
		if !wantIf[ifname] {
			a.retireENI(name, ifname)
		}
	}
	a.ifENI = map[int]string{}
	for name, ifname := range a.enis {
		if idx, err := ifindexByName(ifname); err == nil {
			a.ifENI[idx] = name
		}
	}
	// Links a previous daemon left for ENIs that no longer exist: kept
	// closed while their interface exists, removed once it is gone.
	attached := map[string]bool{}
	for _, ifname := range a.enis {
		attached[ifname] = true
	}
	for _, ifname := range a.dp.PinnedENILinks() {
		if !attached[ifname] && !wantIf[ifname] {
			if _, ok := a.retired[ifname]; !ok {
				a.retireENI("", ifname)
			}
		}
	}
	a.topo = t
	if err := a.applyMirror(t); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Reload re-reads the topology file. An invalid file changes nothing.
func (a *Agent) Reload(why string) {
	if st, err := os.Stat(a.opts.ConfigPath); err == nil {
		a.mu.Lock()
		a.fileMod = st.ModTime()
		a.mu.Unlock()
	}
	t, err := LoadTopology(a.opts.ConfigPath, a.opts.Host)
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("reload refused; the running state is unchanged", "why", why, "err", err)
		return
	}
	tcfg, err := tunnelConfig(t, a.opts.Host, a.opts.TunnelDevice, a.priv, a.psk)
	if err == nil {
		err = a.tun.UpdatePeers(tcfg)
	}
	if err == nil {
		err = a.apply(t)
	}
	if err == nil {
		a.stopFlowLogs()
		err = a.startFlowLogs(t)
	}
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("reload applied with errors", "why", why, "err", err)
		return
	}
	a.reloads.WithLabelValues("success").Inc()
	a.log.Info("reloaded topology", "why", why, "enis", len(t.ENIsOnHost(a.opts.Host)))
}

func (a *Agent) serveMetrics(addr string) (*http.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	if a.opts.Profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	a.log.Info("metrics", "addr", l.Addr().String())
	return srv, nil
}

// localENIs lists this host's ENIs sorted by name, under a.mu.
func (a *Agent) localENIs() []*topology.ENI {
	enis := a.topo.ENIsOnHost(a.opts.Host)
	sort.Slice(enis, func(i, j int) bool { return enis[i].Name < enis[j].Name })
	return enis
}

func ensureDir(path string) error {
	return os.MkdirAll(filepath.Dir(path), 0o700)
}
