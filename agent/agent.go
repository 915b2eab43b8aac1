// Package agent is the vpcd daemon of one host: it loads and attaches the
// eBPF datapath, runs the WireGuard tunnel to every peer host, keeps the
// maps in line with the topology its source sends (the file, reloaded on
// SIGHUP or a change of it, or the etcd control plane), and serves metrics
// and the local control socket (package control).
//
// A topology goes source (package source) → plan.ForHost (package plan,
// pure) → the datapath's Reconcile, the tunnel's peers, the flow logs and
// the mirror sessions. Only cmd/vpcd imports this package.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/flowlogs"
	"github.com/vpcd/vpcd/mirror"
	"github.com/vpcd/vpcd/plan"
	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/tunnel"
)

// Options configure a daemon.
type Options struct {
	// Source sends the topology; nil = the file at ConfigPath
	// (source.File), reloaded on the reload channel given to Run and on
	// a change of the file (every ReloadPoll).
	Source       source.Source
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
	// MirrorMaxPPS is the mirror path's capacity in copies per second;
	// 0: no limit.
	MirrorMaxPPS int
	// TapHook forces the ENI program's hook on tap ENIs, before ENIHook;
	// empty = ENIHook.
	TapHook dataplane.Hook
	// UnderlayHook forces the underlay filter's hook; empty = by interface
	// type (dataplane.ChooseHook).
	UnderlayHook dataplane.Hook
	// Profile serves net/http/pprof on the metrics address.
	Profile bool
	// ReloadPoll is how often the config file is checked for changes.
	ReloadPoll time.Duration
	// ControlPlane, in etcd mode, is where this host registers and
	// publishes its key; Source is then the control plane's. nil in file
	// mode.
	ControlPlane ControlPlane
	// UnderlayReplies are endpoints the daemon talks to over the underlay
	// (its etcd servers), whose TCP replies the underlay filter lets in.
	UnderlayReplies []netip.AddrPort
}

// Defaults for a real host.
const (
	DefaultStateDir     = "/var/lib/vpcd"
	DefaultSocket       = control.DefaultSocket
	DefaultMetricsAddr  = "127.0.0.1:9477"
	DefaultTunnelDevice = "vpcd0"
)

// Agent is a running daemon. Its fields are grouped by what guards them;
// when two locks are held, state's is taken first.
type Agent struct {
	// Set by Run before anything runs concurrently, read-only after.
	ctx      context.Context // Run's: ends when the daemon stops
	opts     Options
	log      *slog.Logger
	src      source.Source
	dp       *dataplane.Datapath
	tun      *tunnel.Tunnel
	psk      *tunnel.Key
	hub      *control.Hub           // serves `vpcd monitor`; nil until startMonitor
	events   *dataplane.EventReader // the datapath's drop events
	registry *prometheus.Registry
	// Counters (safe for concurrent use).
	reloads   *prometheus.CounterVec
	integrity *prometheus.CounterVec

	// state is what the daemon programmed. Its mutex also serializes the
	// datapath's maps and links (a.dp): reconciles, attachments,
	// integrity repair, and the reads of counters that name ENIs.
	state struct {
		sync.Mutex
		plan    *plan.Host        // the plan last applied
		enis    map[string]string // ENI name → attached interface
		ifENI   map[int]string    // attached interface's index → ENI name
		retired map[string]string // interface of a removed ENI that still exists → the ENI's former name
	}

	// mirrors delivers mirror copies; injectUp is whether the injection
	// interface exists for ENI targets. Guarded by state's mutex: the
	// sessions follow the datapath's mirror indexes.
	mirrors struct {
		m        *mirror.Mirror
		injectUp bool
		lost     queueLoss
	}

	// flowLogs turns the datapath's flow counters into flow-log records;
	// the aggregator and its specs are swapped on reload. The Aggregator
	// is safe for concurrent use once taken out.
	flowLogs struct {
		sync.Mutex
		agg   *flowlogs.Aggregator
		specs []flowlogs.LogSpec
		plans map[string]plan.FlowLog // by name: the destination as written
		// retired counts, by log name, what the runs of a log that a
		// reload ended had written, lost and failed, for the metrics.
		retired map[string]logCounts
	}
	// sinkErrLogged is when a sink failure was last logged (Run's loop
	// only).
	sinkErrLogged time.Time

	// conntrack is the occupancy the main loop samples: the table's size
	// and the LRU's evictions at the last sweep.
	conntrack struct {
		sync.Mutex
		entries   int
		evictions uint64
	}

	// applied is the revision of the last snapshot applied (or refused),
	// for Reload to wait on; changed is closed and replaced at each.
	applied struct {
		sync.Mutex
		revision int64
		changed  chan struct{}
	}

	trim memTrimmer // Run's loop only

	// dynamic serializes this host's dynamic-ENI creations in the
	// control plane (cni.go); reaping is set while reapDynamic runs.
	dynamic sync.Mutex
	reaping atomic.Bool

	// key is this host's private key; rotate-key replaces it.
	key struct {
		sync.Mutex
		priv tunnel.Key
	}
	// cpApply is vpcd_controlplane_apply_seconds (etcd mode; nil else);
	// cpState the revision and apply time of the last state applied.
	cpApply prometheus.Histogram
	cpState struct {
		sync.Mutex
		revision int64
		took     time.Duration
	}
}

// Run starts the daemon and blocks until ctx ends. The datapath stays
// pinned and attached when it returns; only the tunnel goes down. reload
// makes the default file source read the file again (SIGHUP); with
// another source, a Reloader is asked to.
func Run(ctx context.Context, o Options, reload <-chan struct{}) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TunnelDevice == "" {
		o.TunnelDevice = DefaultTunnelDevice
	}
	if o.ReloadPoll == 0 {
		o.ReloadPoll = source.DefaultPoll
	}
	src := o.Source
	if src == nil {
		src = &source.File{Path: o.ConfigPath, Host: o.Host, Poll: o.ReloadPoll, Trigger: reload}
		reload = nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the source
	snaps := make(chan source.Snapshot)
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(ctx, snaps) }()
	var first source.Snapshot
	select {
	case first = <-snaps:
	case err := <-srcDone:
		return fmt.Errorf("topology source: %w", err)
	case <-ctx.Done():
		return nil
	}
	if first.Err != nil {
		return first.Err
	}
	firstAt := time.Now()
	p, err := planFor(&o, first.Topology)
	if err != nil {
		return err
	}

	a := &Agent{ctx: ctx, opts: o, log: o.Logger, src: src}
	a.state.plan = p
	a.state.enis, a.state.retired = map[string]string{}, map[string]string{}
	a.applied.changed = make(chan struct{})
	if a.key.priv, err = tunnel.LoadOrCreateKey(o.StateDir); err != nil {
		return err
	}
	if mine := p.PublicKey; mine != "" && mine != a.publicKey() && o.ControlPlane == nil {
		a.log.Warn("the topology's public key for this host does not match the private key in the state directory; peers will refuse us",
			"host", o.Host, "state_dir", o.StateDir)
	}
	if f := p.PresharedKeyFile; f != "" {
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
	if err := a.dp.SetMirrorLimit(o.MirrorMaxPPS); err != nil {
		return err
	}

	// The tunnel starts with no device in the maps: remote traffic drops
	// (counted) until the encrypted path exists. Never a cleartext one.
	for _, err := range ensureTaps(p.Datapath.ENIs) {
		a.log.Warn("tap ENI", "err", err)
	}
	if err := a.dp.Reconcile(p.Datapath, ifindexByName); err != nil {
		a.log.Warn("reconcile", "err", err)
	}

	tcfg := p.Tunnel.Config(o.TunnelDevice, a.privateKey(), a.psk)
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
		"public_key", a.publicKey())
	a.register(first.Topology, p)

	if err := a.apply(p); err != nil {
		a.log.Warn("apply topology", "err", err)
	}
	hook, err := a.dp.AttachUnderlay(p.UnderlayInterface, o.UnderlayHook)
	if err != nil {
		return err
	}
	a.log.Info("attached underlay filter", "interface", p.UnderlayInterface, "hook", hook)

	a.initMetrics()
	a.initControlPlaneMetrics()
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
	if err := a.startFlowLogs(p); err != nil {
		a.log.Warn("flow logs", "err", err)
	}
	defer a.stopFlowLogs()
	if err := a.startMirror(p); err != nil {
		a.log.Warn("mirror sessions", "err", err)
	}
	defer a.stopMirror()
	a.markApplied(first.Revision)
	a.observeApply(first, time.Since(firstAt))
	flowTick := time.NewTicker(time.Second)
	defer flowTick.Stop()

	a.checkIntegrity() // at start, then every two seconds
	a.sampleConntrack()
	integrity := time.NewTicker(2 * time.Second)
	defer integrity.Stop()

	// The control socket opens last: the lab takes it as the sign that
	// the host is ready.
	if o.SocketPath != "" {
		l, err := control.Listen(o.SocketPath, a)
		if err != nil {
			return err
		}
		defer func() { l.Close(); os.Remove(o.SocketPath) }()
	}

	// Loading the programs parsed the kernel's BTF (tens of MiB, garbage
	// now): give it back to the system rather than hold it as resident
	// memory until the scavenger gets round to it.
	debug.FreeOSMemory()
	a.log.Info("vpcd running", "host", o.Host, "enis", len(p.Datapath.ENIs), "bpffs", o.BPFFS, "source", first.Origin)
	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping; the datapath stays pinned", "bpffs", o.BPFFS)
			return nil
		case err := <-srcDone:
			if ctx.Err() != nil {
				continue
			}
			if err == nil {
				err = errors.New("it stopped")
			}
			return fmt.Errorf("topology source: %w", err)
		case s := <-snaps:
			start := time.Now()
			a.applySnapshot(s)
			a.observeApply(s, time.Since(start))
		case now := <-flowTick.C:
			a.drainFlows(now)
		case now := <-integrity.C:
			a.checkIntegrity()
			a.sampleConntrack()
			a.trimMemory(now)
			a.reapDynamic()
		case <-reload:
			if r, ok := a.src.(source.Reloader); ok {
				go r.Reload(ctx, "signal")
			}
		}
	}
}

// checkIntegrity finds programs that are no longer attached where vpcd put
// them, or no longer first there, logs and counts each, and attaches them
// again.
func (a *Agent) checkIntegrity() {
	a.state.Lock()
	defer a.state.Unlock()
	// Interfaces of removed ENIs that are gone now lose their links
	// first, so that their absence is not counted as a fault.
	for ifname, name := range a.state.retired {
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
// previous daemon left the link). The caller holds a.state.
func (a *Agent) retireENI(name, ifname string) {
	if !a.dp.ENIInterfaceLive(ifname) {
		if err := a.dp.DetachENI(ifname); err != nil {
			a.log.Warn("remove the link of a removed ENI", "eni", name, "interface", ifname, "err", err)
			return
		}
		if _, ok := a.state.retired[ifname]; ok || name != "" {
			a.log.Info("detached removed ENI; its interface is gone", "eni", name, "interface", ifname)
		}
		delete(a.state.retired, ifname)
		return
	}
	if _, ok := a.state.retired[ifname]; ok {
		return
	}
	// A link a previous daemon left may run an older program: ours
	// replaces it in place, and the integrity check watches it.
	if _, err := a.dp.AttachENI(ifname, a.opts.ENIHook); err != nil {
		a.log.Warn("keep the program of a removed ENI", "eni", name, "interface", ifname, "err", err)
	}
	a.state.retired[ifname] = name
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
// conntrack table, recounting each ENI's (dataplane.SweepConntrack, which
// also works out how many connections the LRU table evicted).
func (a *Agent) sampleConntrack() {
	sw, err := a.dp.SweepConntrack()
	if err != nil {
		a.log.Warn("conntrack sweep", "err", err)
		return
	}
	ct := &a.conntrack
	ct.Lock()
	defer ct.Unlock()
	ct.entries, ct.evictions = sw.Entries, sw.Evicted
}

func ifindexByName(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// apply attaches and detaches ENI programs and reconciles every map for
// plan p. The caller holds no lock.
func (a *Agent) apply(p *plan.Host) error {
	a.state.Lock()
	defer a.state.Unlock()
	state := *p.Datapath
	state.TunnelIfindex = a.tun.Ifindex()
	state.TunnelBatches = a.tun.MakesBatches()
	// Tap ENIs' devices first: the maps key ENIs by their ifindex.
	errs := ensureTaps(state.ENIs)
	oldTaps := tapInterfaces(a.state.plan)
	// The tunnel makes the batches of copies the datapath marks, by
	// session index. An index stays with its session while the session
	// lasts, and a reconcile may give a removed session's index to a new
	// one: while it runs, the tunnel knows only the sessions that stay
	// (a new session's first copies fail, counted, rather than go to the
	// old session's target).
	a.tun.SetMirrorTargets(a.mirrorTargets(p))
	if err := a.dp.Reconcile(&state, ifindexByName); err != nil {
		errs = append(errs, err)
	}
	a.tun.SetMirrorTargets(a.mirrorTargets(p))
	want := map[string]string{}
	wantIf := map[string]bool{}
	for _, e := range state.ENIs {
		want[e.Name] = e.Interface
		wantIf[e.Interface] = true
	}
	enis, retired := a.state.enis, a.state.retired
	// Attach first, then bring the interface up: a new ENI's interface
	// carries nothing before its program runs on it.
	for _, e := range state.ENIs {
		hook, err := a.dp.AttachENI(e.Interface, a.eniHook(e))
		if err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: %w", e.Name, err))
			continue
		}
		delete(retired, e.Interface)
		if err := bringUp(e.Interface); err != nil {
			errs = append(errs, fmt.Errorf("ENI %s: %w", e.Name, err))
		}
		if _, ok := enis[e.Name]; !ok {
			a.log.Info("attached ENI", "eni", e.Name, "interface", e.Interface, "hook", hook,
				"ip", e.IP, "vni", e.VNI)
		}
		enis[e.Name] = e.Interface
	}
	// Removed ENIs fail closed: their program stays while their
	// interface exists (retireENI).
	for name, ifname := range enis {
		if want[name] == ifname {
			continue
		}
		delete(enis, name)
		if !wantIf[ifname] {
			if oldTaps[ifname] {
				// The daemon made it; it goes with the ENI.
				if err := removeTap(ifname); err != nil {
					errs = append(errs, fmt.Errorf("ENI %s: %w", name, err))
				}
			}
			a.retireENI(name, ifname)
		}
	}
	a.state.ifENI = map[int]string{}
	for name, ifname := range enis {
		if idx, err := ifindexByName(ifname); err == nil {
			a.state.ifENI[idx] = name
		}
	}
	// Links a previous daemon left for ENIs that no longer exist: kept
	// closed while their interface exists, removed once it is gone.
	attached := map[string]bool{}
	for _, ifname := range enis {
		attached[ifname] = true
	}
	for _, ifname := range a.dp.PinnedENILinks() {
		if !attached[ifname] && !wantIf[ifname] {
			if _, ok := retired[ifname]; !ok {
				a.retireENI("", ifname)
			}
		}
	}
	a.state.plan = p
	if err := a.applyMirror(p); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// applySnapshot brings the daemon to a snapshot from the source. A
// refused one (invalid, or not plannable for this host) changes nothing.
func (a *Agent) applySnapshot(s source.Snapshot) {
	defer a.markApplied(s.Revision)
	why := s.Cause
	var p *plan.Host
	err := s.Err
	if err == nil {
		p, err = planFor(&a.opts, s.Topology)
	}
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("reload refused; the running state is unchanged", "why", why, "origin", s.Origin, "err", err)
		return
	}
	err = a.tun.UpdatePeers(p.Tunnel.Config(a.opts.TunnelDevice, a.privateKey(), a.psk))
	if err == nil {
		err = a.apply(p)
	}
	if err == nil {
		err = a.reloadFlowLogs(p)
	}
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("reload applied with errors", "why", why, "err", err)
		return
	}
	a.reloads.WithLabelValues("success").Inc()
	a.log.Info("reloaded topology", "why", why, "origin", s.Origin, "revision", s.Revision, "enis", len(p.ENIs))
}

// markApplied records that the snapshot of revision rev is applied (or
// refused) and wakes Reload.
func (a *Agent) markApplied(rev int64) {
	a.applied.Lock()
	defer a.applied.Unlock()
	if rev > a.applied.revision {
		a.applied.revision = rev
	}
	close(a.applied.changed)
	a.applied.changed = make(chan struct{})
}

// Reload asks the source to read the topology again and waits until the
// daemon has applied or refused what it read (control.Daemon). A source
// that is not a source.Reloader sends its changes by itself: nothing to
// do.
func (a *Agent) Reload(cause string) {
	r, ok := a.src.(source.Reloader)
	if !ok {
		a.log.Info("reload asked; the topology source sends its changes by itself", "why", cause)
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	rev, err := r.Reload(ctx, cause)
	for err == nil {
		a.applied.Lock()
		done, changed := a.applied.revision >= rev, a.applied.changed
		a.applied.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	a.log.Warn("reload", "why", cause, "err", err)
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
