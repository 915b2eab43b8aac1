package fleetsim

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/plan"
	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/tunnel"
)

// counter counts what one etcd client sends: unary calls, streams opened
// and messages sent on streams (watch creations, lease keepalives...).
type counter struct {
	unary, streams, sent atomic.Int64
}

// requests is unary calls plus stream messages: what etcd has to handle.
func (c *counter) requests() int64 { return c.unary.Load() + c.sent.Load() }

func (c *counter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.unary.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.streams.Add(1)
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &countedStream{s, c}, nil
		}),
	}
}

type countedStream struct {
	grpc.ClientStream
	c *counter
}

func (s *countedStream) SendMsg(m any) error {
	s.c.sent.Add(1)
	return s.ClientStream.SendMsg(m)
}

// newClient opens an etcd client as controlplane.Config.Client does, with
// c counting its requests.
func newClient(cfg controlplane.Config, c *counter) (*clientv3.Client, error) {
	cc, err := cfg.ClientConfig()
	if err != nil {
		return nil, err
	}
	cc.DialOptions = c.dialOptions()
	return clientv3.New(cc)
}

// probe is a condition on a host's programmed plan whose first time
// true each host records (e.g. "has a route to the new ENI").
type probe struct {
	id   int
	test func(h *simHost, p *plan.Host) bool
	hits atomic.Int64
}

// digest summarises a plan: what a datapath would program, hashed per
// part, so that a change of any part is seen without keeping the maps.
type digest struct {
	routes, enis, peers uint64
	nRoutes, nPeers     int
}

func digestOf(p *plan.Host) digest {
	d := digest{nRoutes: len(p.Datapath.Routes), nPeers: len(p.Tunnel.Peers)}
	h := uint64(fnvOffset)
	for _, r := range p.Datapath.Routes {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], r.VNI)
		ip, remote := r.IP.As16(), r.Remote.As16()
		h = fnvAdd(fnvAdd(fnvAdd(fnvAdd(h, b[:]), ip[:]), r.MAC), remote[:])
		h = fnvAddString(h, r.ENI)
	}
	d.routes = h
	h = fnvOffset
	for _, e := range p.Datapath.ENIs {
		h = fnvAddString(h, fmt.Sprintf("%v\n", e))
	}
	d.enis = h
	h = fnvOffset
	for _, pe := range p.Tunnel.Peers {
		ep := pe.Endpoint.Addr().As16()
		var port [2]byte
		binary.LittleEndian.PutUint16(port[:], pe.Endpoint.Port())
		h = fnvAdd(fnvAdd(fnvAdd(fnvAddString(h, pe.Name), pe.PublicKey[:]), ep[:]), port[:])
	}
	d.peers = h
	return d
}

// FNV-1a, inline: hash/fnv through its interface allocates per write.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, b []byte) uint64 {
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

func fnvAddString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// simHost is one simulated host: its own etcd client, registration,
// watching Source, planner run and a datapath that only records.
type simHost struct {
	sim     *Sim
	idx     int
	name    string
	pub     tunnel.Key
	cnt     counter
	cli     *clientv3.Client
	m       *controlplane.Metrics
	reg     *controlplane.Registration
	done    chan struct{} // closed when the source and recorder stopped
	first   chan struct{} // closed when the first snapshot was handled
	started atomic.Bool   // run was called

	// mu guards the recording datapath's fields below.
	mu         sync.Mutex
	rev        int64     // revision of the last programmed plan
	dig        digest    // of the last programmed plan
	programmed int       // plans programmed
	changedRev int64     // revision of the last plan that differed from the one before
	probeID    int       // the last probe this host satisfied
	probeAt    time.Time // when
	planErrs   int       // snapshots refused or unplannable
	lastErr    error
}

// run runs the host's Source and records its plans until ctx ends.
func (h *simHost) run(ctx context.Context) {
	h.started.Store(true)
	defer close(h.done)
	var once sync.Once
	defer once.Do(func() { close(h.first) })
	ch := make(chan source.Snapshot)
	src := &controlplane.Source{Client: h.cli, Prefix: h.sim.prefix, Origin: "fleet-sim", Metrics: h.m,
		Logger: h.sim.quiet, Shared: h.sim.shared}
	srcDone := make(chan struct{})
	go func() { defer close(srcDone); src.Run(ctx, ch) }()
	for {
		var snap source.Snapshot
		select {
		case snap = <-ch:
		case <-ctx.Done():
			<-srcDone
			return
		}
		// A newer snapshot already waiting replaces this one, as a busy
		// daemon programs the latest state.
		for more := true; more; {
			select {
			case s := <-ch:
				snap = s
			default:
				more = false
			}
		}
		h.program(snap)
		once.Do(func() { close(h.first) })
	}
}

// program plans snap for this host and records the result.
func (h *simHost) program(snap source.Snapshot) {
	if snap.Err != nil {
		h.mu.Lock()
		h.planErrs++
		h.lastErr = snap.Err
		h.mu.Unlock()
		return
	}
	// As a daemon in etcd mode plans: a host without a registration
	// (no public key) is no peer.
	p, err := plan.ForHostWith(snap.Topology, h.name, plan.Options{SkipKeyless: true})
	if err != nil {
		h.mu.Lock()
		h.planErrs++
		h.lastErr = err
		h.mu.Unlock()
		return
	}
	d := digestOf(p)
	pr := h.sim.probe.Load()
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if d != h.dig {
		h.changedRev = snap.Revision
	}
	h.dig = d
	h.rev = snap.Revision
	h.programmed++
	if pr != nil && h.probeID < pr.id && pr.test(h, p) {
		h.probeID, h.probeAt = pr.id, now
		pr.hits.Add(1)
	}
}

// view is a copy of a host's record.
type view struct {
	rev, changedRev int64
	probeID         int
	probeAt         time.Time
	planErrs        int
	lastErr         error
}

func (h *simHost) view() view {
	h.mu.Lock()
	defer h.mu.Unlock()
	return view{h.rev, h.changedRev, h.probeID, h.probeAt, h.planErrs, h.lastErr}
}
