// Package fleetsim is `vpcd fleet-sim` (SPEC §11): N simulated hosts in
// one process against a real etcd, each running the real control-plane
// code of a daemon — its own etcd client, controlplane.Register under its
// own lease with its own WireGuard public key, controlplane.Source
// watching the prefix, plan.ForHost — with a datapath that only records
// what it would program (a digest of routes, ENIs with their rules and
// tunnel peers, and when a watched-for condition first held).
//
// It applies a base topology, waits until every host has programmed it
// (with every peer's public key), then applies changes (a new ENI, a
// security-group rule) and measures the time from the start of the apply
// until every host that needs the change has programmed it, the etcd
// requests and watch events per host, and the heap per simulated host;
// with a Restart hook it restarts etcd and measures the herd.
//
// One piece of work is shared: decoding and validating a revision's
// state (controlplane.SharedAssembly), which every real daemon does once
// per change on its own CPU; N copies on this machine's CPUs would
// measure the simulator. Every host still runs its own watch, its own
// event handling, its own plan and its own digest. Result.SharedAssembly
// says whether sharing was on and what one assembly costs.
package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/plan"
	"github.com/vpcd/vpcd/tunnel"
)

// startAtOnce is how many hosts may be starting (reading the prefix,
// planning the first state) at the same time.
const startAtOnce = 32

// DefaultPrefix is where fleet-sim keeps its keys: its own, so that a
// simulation never touches a real fleet's /vpcd. It is deleted before and
// after a run.
const DefaultPrefix = "/vpcd-fleetsim"

// Config configures Run.
type Config struct {
	Etcd        controlplane.Config
	Prefix      string // DefaultPrefix when empty
	Hosts       int    // simulated hosts (≥ 2)
	ENIsPerHost int    // 2 when zero
	VPCs        int    // 4 when zero (fewer when there are fewer ENIs)
	// NoShare makes every host assemble every state itself (see the
	// package doc): the simulator's CPU then grows with N².
	NoShare bool
	// Timeout bounds each phase's wait; 2 minutes when zero.
	Timeout time.Duration
	// Restart, when set, restarts etcd (stop it, start it on the same
	// data, return once it answers) for the herd measurement.
	Restart func(ctx context.Context) error
	// Logger reports progress; nothing when nil.
	Logger *slog.Logger
	// HeapProfile, when set, is written (pprof) once the base converged.
	HeapProfile io.Writer
}

// Result is what Run measured. Durations are milliseconds.
type Result struct {
	Hosts       int `json:"hosts"`
	ENIsPerHost int `json:"enis_per_host"`
	VPCs        int `json:"vpcs"`
	Objects     int `json:"objects"` // applied objects in the base state
	TTLSeconds  int `json:"lease_ttl_seconds"`

	RegisterMs float64 `json:"register_ms"` // registering every host
	BaseMs     float64 `json:"base_ms"`     // from starting every watch to every host programmed the base
	BaseReads  int64   `json:"base_reads"`  // full reads of the prefix during start (1 per host)
	MemPerHost int64   `json:"heap_per_host_bytes"`
	// TopologyBytes is the heap of one decoded base topology, which a
	// daemon holds once and which the simulated hosts share.
	TopologyBytes int64 `json:"topology_bytes"`

	SharedAssembly bool    `json:"shared_assembly"`
	AssembleMs     float64 `json:"assemble_ms"` // mean time to decode and validate one state
	PlanMs         float64 `json:"plan_ms"`     // mean time of one plan.ForHost plus digest, measured once

	Changes []Change `json:"changes"`
	Herd    *Herd    `json:"herd,omitempty"`

	// IdleRequestsPerSecond is the fleet's background load, measured
	// over TTL/2 while nothing changes: lease keepalives only.
	IdleRequestsPerSecond float64 `json:"idle_requests_per_second"`
	PlanErrors            int     `json:"plan_errors"`
	Limits                string  `json:"limits"`
}

// Change is the convergence of one applied change.
type Change struct {
	Name     string  `json:"name"`
	Revision int64   `json:"revision"`
	ApplyMs  float64 `json:"apply_ms"` // the apply call itself (reads, lock, write)
	// Needed is how many hosts must program it; Converged how many did
	// within the timeout; Changed how many hosts' programmed state
	// changed at all (should equal Needed).
	Needed    int     `json:"needed"`
	Converged int     `json:"converged"`
	Changed   int     `json:"changed"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	// Per host, from the apply until the last needed host converged.
	RequestsPerHost  float64 `json:"etcd_requests_per_host"`
	EventsPerHost    float64 `json:"watch_events_per_host"`
	SnapshotsPerHost float64 `json:"snapshots_per_host"`
}

// Herd is what an etcd restart did to the fleet.
type Herd struct {
	RestartMs float64 `json:"restart_ms"` // from stopping etcd until it answered again
	// ReconnectMs: from etcd answering until every host's client was
	// connected again; ResumeMs: until every host programmed a change
	// applied right after etcd answered (its watch works again).
	ReconnectMs float64 `json:"reconnect_ms"`
	ResumeMs    float64 `json:"resume_ms"`
	Resumed     int     `json:"resumed"`
	// FullReads is how many hosts read the whole prefix again (a
	// re-list); 0 when every watch resumed from its revision.
	FullReads int64 `json:"full_reads"`
	// Peak requests per second the fleet sent (client side, 100 ms
	// buckets) and etcd received (its grpc_server_msg_received_total,
	// 250 ms samples; -1 when /metrics was unreadable).
	PeakClientRPS float64 `json:"peak_client_rps"`
	PeakServerRPS float64 `json:"peak_server_rps"`
	// Registrations live after the herd (should be Hosts: no lease lost).
	Registrations int `json:"registrations"`
}

// Sim is one run's state.
type Sim struct {
	cfg    Config
	prefix string
	fleet  fleet
	log    *slog.Logger
	quiet  *slog.Logger
	shared *controlplane.SharedAssembly
	hosts  []*simHost
	driver *clientv3.Client
	dcnt   counter
	probe  atomic.Pointer[probe]
	keys   map[string]tunnel.Key // public keys by host
	nextID int
}

// Run runs a simulation and returns its measurements.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Hosts < 2 {
		return nil, errors.New("fleet-sim: at least 2 hosts")
	}
	if cfg.ENIsPerHost <= 0 {
		cfg.ENIsPerHost = 2
	}
	if cfg.VPCs <= 0 {
		cfg.VPCs = 4
	}
	cfg.VPCs = min(cfg.VPCs, cfg.Hosts*cfg.ENIsPerHost)
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	s := &Sim{cfg: cfg, prefix: cfg.Prefix, fleet: fleet{cfg.Hosts, cfg.ENIsPerHost, cfg.VPCs},
		log: cfg.Logger, quiet: slog.New(slog.NewTextHandler(io.Discard, nil)), keys: map[string]tunnel.Key{}}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.log == nil {
		s.log = s.quiet
	}
	if !cfg.NoShare {
		s.shared = controlplane.NewSharedAssembly()
	}
	var err error
	if s.driver, err = newClient(cfg.Etcd, &s.dcnt); err != nil {
		return nil, err
	}
	defer s.driver.Close()
	if err := s.clear(ctx); err != nil {
		return nil, err
	}
	hctx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		s.close()
		s.clear(context.WithoutCancel(ctx))
	}()
	res := &Result{Hosts: cfg.Hosts, ENIsPerHost: cfg.ENIsPerHost, VPCs: cfg.VPCs,
		TTLSeconds: int(controlplane.DefaultTTL / time.Second), SharedAssembly: s.shared != nil}
	if err := s.run(hctx, res); err != nil {
		return res, err
	}
	return res, nil
}

// clear deletes the prefix.
func (s *Sim) clear(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := s.driver.Delete(ctx, s.prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("fleet-sim: clear %s: %w", s.prefix, err)
	}
	return nil
}

// close stops every host: revokes its lease and closes its client.
func (s *Sim) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, h := range s.hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if h.reg != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				h.reg.Close(ctx)
				cancel()
			}
			if h.started.Load() {
				<-h.done
			}
			h.cli.Close()
		}()
	}
	wg.Wait()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func heap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func (s *Sim) run(ctx context.Context, res *Result) error {
	cfg := s.cfg
	base, err := s.fleet.topology(nil, false)
	if err != nil {
		return fmt.Errorf("fleet-sim: base topology: %w", err)
	}
	// The heap of one decoded topology: what a daemon holds once.
	h0 := heap()
	probeTopo, _ := s.fleet.topology(nil, false)
	res.TopologyBytes = heap() - h0
	runtime.KeepAlive(probeTopo)
	probeTopo = nil

	heapBefore := heap()
	s.log.Info("registering hosts", "hosts", cfg.Hosts)
	start := time.Now()
	s.hosts = make([]*simHost, cfg.Hosts)
	for i := range s.hosts {
		priv, err := tunnel.GeneratePrivateKey()
		if err != nil {
			return err
		}
		h := &simHost{sim: s, idx: i, name: hostName(i), pub: priv.PublicKey(), m: controlplane.NewMetrics(),
			done: make(chan struct{}), first: make(chan struct{})}
		if h.cli, err = newClient(cfg.Etcd, &h.cnt); err != nil {
			return err
		}
		s.hosts[i] = h
		s.keys[h.name] = h.pub
	}
	if err := s.parallel(ctx, func(h *simHost) error {
		rec := controlplane.HostRecord{Name: h.name, UnderlayIP: underlayIP(h.idx), ListenPort: 51820, PublicKey: h.pub.String(), MTU: 1500}
		var err error
		h.reg, err = controlplane.Register(ctx, h.cli, s.prefix, rec, &controlplane.RegisterOptions{Metrics: h.m, Logger: s.quiet})
		return err
	}); err != nil {
		return err
	}
	res.RegisterMs = ms(time.Since(start))

	s.log.Info("applying the base topology", "enis", len(base.ENIs))
	ch, err := controlplane.Apply(ctx, s.driver, s.prefix, base, true, false)
	if err != nil {
		return fmt.Errorf("fleet-sim: apply base: %w", err)
	}
	res.Objects = len(ch.Created)

	// Every host converged: every peer with its key, every route, its ENIs.
	wantRoutes, wantPeers := len(base.ENIs), cfg.Hosts-1
	pr := s.newProbe(func(h *simHost, p *plan.Host) bool {
		if len(p.Datapath.Routes) != wantRoutes || len(p.Tunnel.Peers) != wantPeers || len(p.ENIs) != cfg.ENIsPerHost {
			return false
		}
		for _, pe := range p.Tunnel.Peers {
			if s.keys[pe.Name] != pe.PublicKey {
				return false
			}
		}
		return true
	})
	// Hosts start a few at a time, as a fleet boots: a host's watch starts
	// when one of the previous ones has programmed its first state. All
	// at once, 1,000 full reads and plans starve etcd and the keepalives
	// on this machine's two cores, leases expire, and every expiry is one
	// more state for every host (see docs/controlplane.md).
	s.log.Info("starting every host's watch", "at_once", startAtOnce)
	start = time.Now()
	go func() {
		sem := make(chan struct{}, startAtOnce)
		for _, h := range s.hosts {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go h.run(ctx)
			go func() {
				select {
				case <-h.first:
				case <-ctx.Done():
				}
				<-sem
			}()
		}
	}()
	if err := s.wait(ctx, func() bool { return pr.hits.Load() == int64(cfg.Hosts) }); err != nil {
		return fmt.Errorf("fleet-sim: base: %d of %d hosts converged: %w%s", pr.hits.Load(), cfg.Hosts, err, s.errSample())
	}
	res.BaseMs = ms(time.Since(start))
	for _, h := range s.hosts {
		res.BaseReads += h.m.Stats().FullReads
	}
	res.MemPerHost = (heap() - heapBefore) / int64(cfg.Hosts)
	if cfg.HeapProfile != nil {
		if err := pprof.WriteHeapProfile(cfg.HeapProfile); err != nil {
			return fmt.Errorf("fleet-sim: heap profile: %w", err)
		}
	}
	s.log.Info("base converged", "ms", res.BaseMs, "heap_per_host", res.MemPerHost)

	// One plan's cost, measured alone.
	if t, err := s.fleet.topology(nil, false); err == nil {
		for i := range t.Hosts {
			t.Hosts[i].PublicKey = s.keys[t.Hosts[i].Name].String()
		}
		start := time.Now()
		const n = 20
		for i := range n {
			if p, err := plan.ForHostWith(t, hostName(i%cfg.Hosts), plan.Options{SkipKeyless: true}); err == nil {
				digestOf(p)
			}
		}
		res.PlanMs = ms(time.Since(start)) / n
	}

	// Idle load: keepalives only (one per host every TTL/3).
	r0, t0 := s.requests(), time.Now()
	idle := min(controlplane.DefaultTTL/2, cfg.Timeout)
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	res.IdleRequestsPerSecond = float64(s.requests()-r0) / time.Since(t0).Seconds()

	newENI := s.fleet.newENI(1)
	c, err := s.change(ctx, "new ENI", []eniRef{newENI}, false, nil)
	if err != nil {
		return err
	}
	res.Changes = append(res.Changes, *c)

	needSG := map[string]bool{}
	for _, e := range s.fleet.enis() {
		if e.group == "app-0" {
			needSG[e.host] = true
		}
	}
	c, err = s.change(ctx, "security-group rule", []eniRef{newENI}, true, needSG)
	if err != nil {
		return err
	}
	res.Changes = append(res.Changes, *c)

	if cfg.Restart != nil {
		if res.Herd, err = s.herd(ctx, []eniRef{newENI, s.fleet.newENI(2)}); err != nil {
			return err
		}
	}
	if st := s.shared; st != nil {
		a := st.Stats()
		if a.Assemblies > 0 {
			res.AssembleMs = ms(a.Total) / float64(a.Assemblies)
		}
	}
	for _, h := range s.hosts {
		res.PlanErrors += h.view().planErrs
	}
	res.Limits = s.limits(res)
	return nil
}

// parallel runs f for every host, 64 at a time.
func (s *Sim) parallel(ctx context.Context, f func(h *simHost) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 64)
	for _, h := range s.hosts {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(h); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", h.name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func (s *Sim) newProbe(test func(h *simHost, p *plan.Host) bool) *probe {
	s.nextID++
	p := &probe{id: s.nextID, test: test}
	s.probe.Store(p)
	return p
}

// wait polls cond every 5 ms until it holds or the phase times out.
func (s *Sim) wait(ctx context.Context, cond func() bool) error {
	deadline := time.Now().Add(s.cfg.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", s.cfg.Timeout)
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// errSample names one host's last planning error, for a failed wait.
func (s *Sim) errSample() string {
	for _, h := range s.hosts {
		if v := h.view(); v.lastErr != nil {
			return fmt.Sprintf(" (%s: %v)", h.name, v.lastErr)
		}
	}
	return ""
}

// requests is every host's etcd requests so far.
func (s *Sim) requests() int64 {
	var n int64
	for _, h := range s.hosts {
		n += h.cnt.requests()
	}
	return n
}

type totals struct{ requests, events, snapshots int64 }

func (s *Sim) totals() totals {
	var t totals
	for _, h := range s.hosts {
		st := h.m.Stats()
		t.requests += h.cnt.requests()
		t.events += st.Events
		t.snapshots += st.Snapshots
	}
	return t
}

// change applies the base plus extra ENIs (and the security-group rule
// when sg) and measures its convergence on the hosts in need (every host
// when need is nil).
func (s *Sim) change(ctx context.Context, name string, extra []eniRef, sg bool, need map[string]bool) (*Change, error) {
	t, err := s.fleet.topology(extra, sg)
	if err != nil {
		return nil, fmt.Errorf("fleet-sim: %s: %w", name, err)
	}
	last := extra[len(extra)-1]
	var test func(h *simHost, p *plan.Host) bool
	if sg {
		test = func(h *simHost, p *plan.Host) bool {
			for _, e := range p.Datapath.ENIs {
				for _, r := range e.SGIngress {
					if r.PortLo == 9090 {
						return true
					}
				}
			}
			return false
		}
	} else {
		test = func(h *simHost, p *plan.Host) bool {
			for _, r := range slices.Backward(p.Datapath.Routes) {
				if r.IP == last.ip && r.VNI == uint32(1000+last.vpc) {
					return true
				}
			}
			return false
		}
	}
	needed := len(s.hosts)
	if need != nil {
		needed = len(need)
	}
	s.log.Info("applying a change", "change", name, "hosts_in_need", needed)
	pr := s.newProbe(test)
	// The simulator's heap holds every host's state (N times a daemon's);
	// collecting it now keeps a collection of the simulator's garbage out
	// of the change's latency, which a daemon's small heap would not have.
	runtime.GC()
	before := s.totals()
	start := time.Now()
	ch, err := controlplane.Apply(ctx, s.driver, s.prefix, t, true, false)
	if err != nil {
		return nil, fmt.Errorf("fleet-sim: %s: apply: %w", name, err)
	}
	c := &Change{Name: name, Revision: ch.Revision, ApplyMs: ms(time.Since(start)), Needed: needed}
	werr := s.wait(ctx, func() bool {
		if pr.hits.Load() < int64(needed) {
			return false
		}
		for _, h := range s.hosts {
			if h.view().rev < ch.Revision {
				return false
			}
		}
		return true
	})
	after := s.totals()
	var lat []time.Duration
	for _, h := range s.hosts {
		v := h.view()
		if v.changedRev >= ch.Revision {
			c.Changed++
		}
		if v.probeID == pr.id && (need == nil || need[h.name]) {
			lat = append(lat, v.probeAt.Sub(start))
		}
	}
	c.Converged = len(lat)
	c.P50Ms, c.P99Ms, c.MaxMs = percentiles(lat)
	n := float64(len(s.hosts))
	c.RequestsPerHost = float64(after.requests-before.requests) / n
	c.EventsPerHost = float64(after.events-before.events) / n
	c.SnapshotsPerHost = float64(after.snapshots-before.snapshots) / n
	s.log.Info("change converged", "change", name, "p50_ms", c.P50Ms, "p99_ms", c.P99Ms, "max_ms", c.MaxMs)
	if werr != nil {
		return c, fmt.Errorf("fleet-sim: %s: %d of %d hosts converged: %w%s", name, c.Converged, needed, werr, s.errSample())
	}
	return c, nil
}

// percentiles returns p50, p99 and max in milliseconds (nearest rank).
func percentiles(d []time.Duration) (p50, p99, mx float64) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(float64(len(d))*p+0.999999) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	return ms(rank(0.50)), ms(rank(0.99)), ms(d[len(d)-1])
}
