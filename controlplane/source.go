package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/topology"
)

var errCompacted = rpctypes.ErrCompacted

// Source is the etcd control plane as a source.Source. It reads the whole
// prefix once, sends the committed state, then watches from the next
// revision and sends a new snapshot after every watch response that
// changed the committed objects or a registration. Object changes of an
// apply are held back until its commit record arrives, so every snapshot
// is one apply's whole state (plus the registrations live at that
// revision).
//
// Nothing is sent until something was applied under the prefix. A state
// that does not validate (e.g. two registrations claiming one address) is
// sent as a Snapshot with Err; the daemon keeps what it runs.
//
// Errors never end Run: a broken watch or read is retried after a
// jittered exponential backoff; the watch resumes from the last revision
// seen, and the whole prefix is read again only when that revision was
// compacted. Run returns nil when ctx ends.
type Source struct {
	Client *clientv3.Client
	// Prefix of the keys; DefaultPrefix when empty.
	Prefix string
	// Origin is copied into every snapshot, e.g. "etcd:https://10.0.0.1:2379".
	Origin string
	// Metrics, when set, get connected, revision, errors and counters.
	Metrics *Metrics
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Backoff bounds the wait before a retry; 100 ms and 10 s when zero.
	MinBackoff, MaxBackoff time.Duration
	// Shared, when set, assembles each revision's state once for all the
	// Sources of a process that share it (fleet-sim); nil in a daemon.
	Shared *SharedAssembly
}

// Run implements source.Source.
func (s *Source) Run(ctx context.Context, out chan<- source.Snapshot) error {
	r := &reader{Source: s, k: newKeys(s.Prefix), out: out}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	r.backoff = newBackoff(s.MinBackoff, s.MaxBackoff)
	go watchConnection(ctx, s.Client, s.Metrics)
	return r.run(ctx)
}

// reader is one Run's state.
type reader struct {
	*Source
	k       keys
	out     chan<- source.Snapshot
	backoff *backoff

	st    *state            // the committed state, with live registrations
	buf   []*clientv3.Event // object events after st's commit, not yet committed
	stale bool              // buf misses events (Run started during a half-written apply)
	rev   int64             // every event up to rev is in st or buf
}

func (r *reader) run(ctx context.Context) error {
	needRead := true
	for ctx.Err() == nil {
		if needRead {
			if err := r.read(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				r.Metrics.countError(OpRead)
				r.Logger.Warn("etcd read failed", "prefix", r.k.prefix, "err", err)
				r.backoff.wait(ctx)
				continue
			}
			needRead = false
			if !r.emit(ctx) {
				break
			}
		}
		var err error
		needRead, err = r.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		r.Metrics.countError(OpWatch)
		r.Logger.Warn("etcd watch broke", "prefix", r.k.prefix, "revision", r.rev, "reread", needRead, "err", err)
		r.backoff.wait(ctx)
	}
	return nil
}

// read reads the whole prefix.
func (r *reader) read(ctx context.Context) error {
	st, err := readState(ctx, r.Client, r.k)
	if err != nil {
		return err
	}
	if r.Metrics != nil {
		r.Metrics.fullReads.Add(1)
	}
	for _, e := range st.bad {
		r.Metrics.countError(OpDecode)
		r.Logger.Warn("etcd registration left out", "err", e)
	}
	r.st, r.buf, r.stale, r.rev = st, nil, st.pending, st.rev
	return nil
}

// watch watches from r.rev+1 until the watch breaks; it reports whether
// the whole prefix must be read again (the revision was compacted).
func (r *reader) watch(ctx context.Context) (reread bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.Client.Watch(wctx, r.k.all(), clientv3.WithPrefix(), clientv3.WithRev(r.rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return resp.CompactRevision != 0 || errors.Is(err, errCompacted), err
		}
		r.backoff.reset()
		if resp.IsProgressNotify() {
			// Every event up to the header's revision was delivered.
			r.rev = max(r.rev, resp.Header.Revision)
			continue
		}
		if r.Metrics != nil {
			r.Metrics.events.Add(int64(len(resp.Events)))
		}
		changed, err := r.apply(ctx, resp.Events)
		if err != nil {
			return true, err
		}
		if changed && !r.emit(ctx) {
			return false, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return false, errors.New("watch channel closed")
}

// apply applies events, one revision at a time; it reports whether the
// committed state or a registration changed.
func (r *reader) apply(ctx context.Context, events []*clientv3.Event) (changed bool, err error) {
	for len(events) > 0 {
		rev := events[0].Kv.ModRevision
		n := 1
		for n < len(events) && events[n].Kv.ModRevision == rev {
			n++
		}
		group := events[:n]
		events = events[n:]
		committed := false
		for _, ev := range group {
			key := string(ev.Kv.Key)
			switch {
			case strings.HasPrefix(key, r.k.hosts()):
				name := strings.TrimPrefix(key, r.k.hosts())
				delete(r.st.hosts, name)
				if ev.Type == mvccpb.PUT {
					h, err := decodeHost(key, ev.Kv.Value)
					if err != nil {
						r.Metrics.countError(OpDecode)
						r.Logger.Warn("etcd registration left out", "err", err)
					} else {
						r.st.hosts[name] = h
					}
				}
				changed = true
			case strings.HasPrefix(key, r.k.objects()):
				r.buf = append(r.buf, ev)
			case key == r.k.commit() && ev.Type == mvccpb.PUT:
				committed = true
			}
		}
		if committed {
			if r.stale {
				objs, err := readObjects(ctx, r.Client, r.k, rev)
				if err != nil {
					return changed, err
				}
				r.st.objs = objs
			} else {
				for _, ev := range r.buf {
					kind, name, ok := r.k.objectRef(string(ev.Kv.Key))
					if !ok {
						continue
					}
					if ev.Type == mvccpb.PUT {
						r.st.objs[kind+"/"+name] = ev.Kv.Value
					} else {
						delete(r.st.objs, kind+"/"+name)
					}
				}
			}
			r.st.commitRev = rev
			r.buf, r.stale, changed = nil, false, true
		}
		r.rev = rev
	}
	return changed, nil
}

// emit assembles and sends the current state; false when ctx ended.
func (r *reader) emit(ctx context.Context) bool {
	if r.st.commitRev == 0 {
		return true // nothing applied yet
	}
	snap := source.Snapshot{Revision: r.rev, Origin: r.Origin}
	var t *topology.Topology
	var err error
	if r.Shared != nil {
		t, err = r.Shared.assemble(r.rev, r.st)
	} else {
		t, err = assemble(r.st.objs, r.st.hosts)
	}
	if err != nil {
		r.Metrics.countError(OpDecode)
		r.Logger.Warn("etcd state refused", "revision", r.rev, "err", err)
		snap.Err = err
	} else {
		snap.Topology = t
	}
	select {
	case r.out <- snap:
	case <-ctx.Done():
		return false
	}
	if r.Metrics != nil {
		r.Metrics.revision.Store(r.rev)
		r.Metrics.snapshots.Add(1)
	}
	return true
}

// watchConnection keeps m's connected gauge in step with the client's
// connection until ctx ends.
func watchConnection(ctx context.Context, cli *clientv3.Client, m *Metrics) {
	if m == nil {
		return
	}
	conn := cli.ActiveConnection()
	for {
		st := conn.GetState()
		m.setConnected(st == connectivity.Ready)
		if !conn.WaitForStateChange(ctx, st) {
			m.setConnected(false)
			return
		}
	}
}

// backoff is a jittered exponential backoff: each wait is uniformly
// random in [d/2, d], d doubling from min up to max. The jitter spreads a
// fleet's retries after an etcd restart.
type backoff struct {
	min, max, d time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff {
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 10 * time.Second
	}
	return &backoff{min: lo, max: max(lo, hi), d: lo}
}

func (b *backoff) reset() { b.d = b.min }

func (b *backoff) next() time.Duration {
	d := b.d/2 + rand.N(b.d/2+1)
	b.d = min(b.d*2, b.max)
	return d
}

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
