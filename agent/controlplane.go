package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/plan"
	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// ControlPlane is the etcd control plane a daemon in etcd mode registers
// with (SPEC §11); nil in file mode. cmd/vpcd wires package controlplane
// behind it.
type ControlPlane interface {
	// Register publishes this host and keeps it published (under a
	// lease) until ctx ends. It does not block: while etcd cannot be
	// reached it retries on its own.
	Register(ctx context.Context, h HostInfo)
	// UpdateKey publishes a new public key (rotate-key). An error means
	// it is not published yet; it is retried in the background.
	UpdateKey(ctx context.Context, publicKey string) error
	// Status reports the connection, registration and errors; the agent
	// adds the revision and apply latency.
	Status() control.ControlPlaneStatus
	// Collector holds the vpcd_controlplane_* series but apply_seconds,
	// which the agent measures.
	Collector() prometheus.Collector
}

// HostInfo is what a daemon registers of itself.
type HostInfo struct {
	UnderlayIP netip.Addr
	ListenPort uint16
	PublicKey  string
	MTU        int
}

// planFor plans this host's share of t: in etcd mode peers without a key
// (not registered) are left out rather than failing the plan, and the
// underlay filter lets the etcd endpoints' replies in.
func planFor(o *Options, t *topology.Topology) (*plan.Host, error) {
	p, err := plan.ForHostWith(t, o.Host, plan.Options{SkipKeyless: o.ControlPlane != nil})
	if err != nil {
		return nil, err
	}
	p.Datapath.UnderlayReplies = append(p.Datapath.UnderlayReplies, o.UnderlayReplies...)
	return p, nil
}

// register publishes this host to the control plane (etcd mode only).
func (a *Agent) register(t *topology.Topology, p *plan.Host) {
	cp := a.opts.ControlPlane
	if cp == nil {
		return
	}
	h := HostInfo{UnderlayIP: p.Datapath.UnderlayIP, ListenPort: p.Tunnel.ListenPort, PublicKey: a.publicKey()}
	if th := t.HostByName(a.opts.Host); th != nil {
		h.MTU = th.MTU
	}
	cp.Register(a.ctx, h)
}

// initControlPlaneMetrics registers the control plane's series (etcd
// mode only).
func (a *Agent) initControlPlaneMetrics() {
	cp := a.opts.ControlPlane
	if cp == nil {
		return
	}
	a.cpApply = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "vpcd_controlplane_apply_seconds",
		Help:    "Time from the daemon receiving an etcd revision's state to its datapath, tunnel and flow logs programmed.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	a.registry.MustRegister(a.cpApply, cp.Collector())
}

// observeApply records how long applying s took (etcd mode only).
func (a *Agent) observeApply(s source.Snapshot, took time.Duration) {
	if a.opts.ControlPlane == nil || s.Err != nil {
		return
	}
	if a.cpApply != nil {
		a.cpApply.Observe(took.Seconds())
	}
	a.cpState.Lock()
	a.cpState.revision, a.cpState.took = s.Revision, took
	a.cpState.Unlock()
}

// controlPlaneStatus is status's control-plane section; nil in file mode.
func (a *Agent) controlPlaneStatus() *control.ControlPlaneStatus {
	cp := a.opts.ControlPlane
	if cp == nil {
		return nil
	}
	st := cp.Status()
	a.cpState.Lock()
	st.Revision, st.LastApplySeconds = a.cpState.revision, a.cpState.took.Seconds()
	a.cpState.Unlock()
	return &st
}

// publicKey is this host's current public key.
func (a *Agent) publicKey() string {
	a.key.Lock()
	defer a.key.Unlock()
	return a.key.priv.PublicKey().String()
}

// privateKey is this host's current private key.
func (a *Agent) privateKey() tunnel.Key {
	a.key.Lock()
	defer a.key.Unlock()
	return a.key.priv
}

// errRotateFileMode is rotate-key's answer in file mode.
var errRotateFileMode = errors.New("rotate-key needs the etcd control plane (vpcd run --etcd); this daemon runs from a topology file: write a new key into the file of every host instead")

// RotateKey makes a new key pair, keeps the private key in the state
// directory (0600), switches the tunnel to it and publishes the public key
// (control.KeyRotator). The tunnel switches first: peers that learn the
// new key start handshakes towards us at once, and those must find us
// with it. Until a peer has learnt it, traffic to that peer waits.
func (a *Agent) RotateKey() error {
	if a.opts.ControlPlane == nil {
		return errRotateFileMode
	}
	a.key.Lock()
	defer a.key.Unlock()
	k, err := tunnel.GeneratePrivateKey()
	if err != nil {
		return err
	}
	if err := tunnel.WriteKeyFile(filepath.Join(a.opts.StateDir, tunnel.PrivateKeyFile), k); err != nil {
		return fmt.Errorf("rotate-key: keep the new key: %w", err)
	}
	if err := a.tun.SetPrivateKey(k); err != nil {
		return fmt.Errorf("rotate-key: %w", err)
	}
	a.key.priv = k
	pub := k.PublicKey().String()
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	if err := a.opts.ControlPlane.UpdateKey(ctx, pub); err != nil {
		a.log.Warn("rotate-key: new key in use, not published yet; retrying", "public_key", pub, "err", err)
		return fmt.Errorf("rotate-key: the new key is in use but not published yet (it will be once etcd answers): %w", err)
	}
	a.log.Info("rotated key pair; new public key published", "public_key", pub)
	return nil
}
