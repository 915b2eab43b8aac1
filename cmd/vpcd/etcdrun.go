package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/agent"
	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/controlplane"
)

// etcdPlane is agent.ControlPlane on package controlplane: this host's
// registration under a lease, and its key updates.
type etcdPlane struct {
	cli        *clientv3.Client
	host       string
	prefix     string
	endpoints  []string
	underlayIP netip.Addr // --underlay-ip; invalid: the applied file's
	metrics    *controlplane.Metrics
	log        *slog.Logger

	mu  sync.Mutex
	rec controlplane.HostRecord    // what must be registered
	reg *controlplane.Registration // nil until the first registration is written
	fix chan struct{}              // wakes the publisher: rec changed
}

func newEtcdPlane(cli *clientv3.Client, host, prefix string, endpoints []string, underlayIP netip.Addr, log *slog.Logger) *etcdPlane {
	return &etcdPlane{cli: cli, host: host, prefix: prefix, endpoints: endpoints, underlayIP: underlayIP,
		metrics: controlplane.NewMetrics(), log: log, fix: make(chan struct{}, 1)}
}

// Register implements agent.ControlPlane: one goroutine registers (with a
// jittered backoff while etcd cannot be reached) and then publishes every
// key change until ctx ends. The registration is not revoked when the
// daemon stops: a restart registers again within the TTL and peers see no
// change; a daemon that stays away disappears when the lease expires.
func (e *etcdPlane) Register(ctx context.Context, h agent.HostInfo) {
	e.mu.Lock()
	e.rec = controlplane.HostRecord{Name: e.host, UnderlayIP: h.UnderlayIP, ListenPort: h.ListenPort, PublicKey: h.PublicKey, MTU: h.MTU}
	if e.underlayIP.IsValid() {
		e.rec.UnderlayIP = e.underlayIP
	}
	e.mu.Unlock()
	go e.publish(ctx)
}

func (e *etcdPlane) publish(ctx context.Context) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		e.mu.Lock()
		rec, reg := e.rec, e.reg
		e.mu.Unlock()
		var err error
		switch {
		case reg == nil:
			reg, err = controlplane.Register(ctx, e.cli, e.prefix, rec, &controlplane.RegisterOptions{Metrics: e.metrics, Logger: e.log})
			if err == nil {
				e.mu.Lock()
				e.reg = reg
				e.mu.Unlock()
				e.log.Info("registered in etcd", "host", e.host, "underlay_ip", rec.UnderlayIP, "listen_port", rec.ListenPort, "public_key", rec.PublicKey)
			}
		case reg.Record().PublicKey != rec.PublicKey:
			err = reg.UpdateKey(ctx, rec.PublicKey)
		default:
			select {
			case <-e.fix:
			case <-ctx.Done():
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("etcd registration", "host", e.host, "err", err)
			t := time.NewTimer(wait/2 + rand.N(wait/2+1))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			wait = min(2*wait, 5*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
	}
}

// UpdateKey implements agent.ControlPlane.
func (e *etcdPlane) UpdateKey(ctx context.Context, publicKey string) error {
	e.mu.Lock()
	e.rec.PublicKey = publicKey
	reg := e.reg
	e.mu.Unlock()
	if reg == nil {
		e.wake()
		return errors.New("not registered yet")
	}
	if err := reg.UpdateKey(ctx, publicKey); err != nil {
		e.wake() // the publisher retries
		return err
	}
	return nil
}

func (e *etcdPlane) wake() {
	select {
	case e.fix <- struct{}{}:
	default:
	}
}

// Status implements agent.ControlPlane.
func (e *etcdPlane) Status() control.ControlPlaneStatus {
	st := e.metrics.Stats()
	e.mu.Lock()
	registered := e.reg != nil
	e.mu.Unlock()
	errs := map[string]float64{}
	for _, op := range []string{controlplane.OpRead, controlplane.OpWatch, controlplane.OpDecode, controlplane.OpRegister, controlplane.OpKeepAlive} {
		if n := e.metrics.Errors(op); n > 0 {
			errs[op] = n
		}
	}
	return control.ControlPlaneStatus{Endpoints: e.endpoints, Prefix: e.prefix, Connected: st.Connected,
		Registered: registered, Errors: errs}
}

// Collector implements agent.ControlPlane.
func (e *etcdPlane) Collector() prometheus.Collector { return e.metrics }

// endpointAddrs resolves etcd client URLs to the addresses and ports
// whose replies the underlay filter must let in.
func endpointAddrs(endpoints []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, ep := range endpoints {
		hostport := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil {
				return nil, fmt.Errorf("etcd endpoint %q: %w", ep, err)
			}
			hostport = u.Host
		}
		host, portStr, err := net.SplitHostPort(hostport)
		if err != nil {
			host, portStr = hostport, "2379"
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("etcd endpoint %q: port: %w", ep, err)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("etcd endpoint %q: %w", ep, err)
		}
		for _, a := range ips {
			out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)))
		}
	}
	return out, nil
}
