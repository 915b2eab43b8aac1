package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultTTL is the lease of a host's registration: a host whose daemon
// is gone this long disappears from every peer.
const DefaultTTL = 10 * time.Second

// RegisterOptions tune Register; the zero value is the default.
type RegisterOptions struct {
	TTL     time.Duration // DefaultTTL when zero; whole seconds (etcd's unit)
	Metrics *Metrics
	Logger  *slog.Logger
	// Backoff bounds of re-registration retries; 100 ms and 5 s when zero.
	MinBackoff, MaxBackoff time.Duration
}

// Registration is a host's registration kept alive under a lease: one key
// per lease, one lease per host. When the lease is lost (etcd was away
// longer than the TTL) it registers again under a new lease, with a
// jittered backoff, until Close.
type Registration struct {
	cli    *clientv3.Client
	key    string
	opts   RegisterOptions
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	rec   HostRecord
	lease clientv3.LeaseID
}

// Register writes rec as <prefix>/hosts/<rec.Name> under a new lease and
// keeps it alive in the background until ctx ends or Close. It returns
// once the first registration is written (or failed: the error).
func Register(ctx context.Context, cli *clientv3.Client, prefix string, rec HostRecord, opts *RegisterOptions) (*Registration, error) {
	if rec.Name == "" {
		return nil, errors.New("register: host name is empty")
	}
	r := &Registration{cli: cli, key: newKeys(prefix).host(rec.Name), done: make(chan struct{})}
	if opts != nil {
		r.opts = *opts
	}
	if r.opts.TTL <= 0 {
		r.opts.TTL = DefaultTTL
	}
	if r.opts.Logger == nil {
		r.opts.Logger = slog.Default()
	}
	if r.opts.MaxBackoff <= 0 {
		r.opts.MaxBackoff = 5 * time.Second
	}
	rec.Schema = SchemaVersion
	r.rec = rec
	if err := r.register(ctx); err != nil {
		r.opts.Metrics.countError(OpRegister)
		return nil, err
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go func() {
		defer close(r.done)
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		r.keep(bctx)
	}()
	return r, nil
}

// register grants a lease and writes the record under it.
func (r *Registration) register(ctx context.Context) error {
	ttl := int64((r.opts.TTL + time.Second - 1) / time.Second)
	lease, err := r.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("register %s: lease: %w", r.key, err)
	}
	r.mu.Lock()
	val, _ := json.Marshal(r.rec)
	r.mu.Unlock()
	if _, err := r.cli.Put(ctx, r.key, string(val), clientv3.WithLease(lease.ID)); err != nil {
		r.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return fmt.Errorf("register %s: %w", r.key, err)
	}
	// The lease is the registration's only once its key is written: a
	// Put cut short (Close during a re-registration) leaves the last
	// good lease in place, never the one just revoked.
	r.mu.Lock()
	r.lease = lease.ID
	if now := mustJSON(r.rec); now != string(val) {
		// UpdateKey ran while the Put was in flight, against the old
		// lease: write the newer record under the new one.
		r.mu.Unlock()
		if _, err := r.cli.Put(ctx, r.key, now, clientv3.WithLease(lease.ID)); err != nil {
			return fmt.Errorf("register %s: %w", r.key, err)
		}
		return nil
	}
	r.mu.Unlock()
	return nil
}

// keep keeps the lease alive and registers again when it is lost.
func (r *Registration) keep(ctx context.Context) {
	b := newBackoff(r.opts.MinBackoff, r.opts.MaxBackoff)
	for ctx.Err() == nil {
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		ka, err := r.cli.KeepAlive(ctx, lease)
		if err == nil {
			for range ka {
				b.reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The lease expired (etcd unreachable longer than the TTL, or
		// revoked): peers dropped this host; come back.
		r.opts.Metrics.countError(OpKeepAlive)
		r.opts.Logger.Warn("etcd lease lost, registering again", "key", r.key)
		for ctx.Err() == nil {
			b.wait(ctx)
			if err := r.register(ctx); err != nil {
				r.opts.Metrics.countError(OpRegister)
				r.opts.Logger.Warn("etcd registration failed", "key", r.key, "err", err)
				continue
			}
			break
		}
	}
}

// Record returns what is registered.
func (r *Registration) Record() HostRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec
}

// LeaseID returns the current lease.
func (r *Registration) LeaseID() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// UpdateKey publishes a new public key (rotate-key) under the current
// lease; peers watching the key switch to it.
func (r *Registration) UpdateKey(ctx context.Context, publicKey string) error {
	r.mu.Lock()
	r.rec.PublicKey = publicKey
	val, _ := json.Marshal(r.rec)
	lease := r.lease
	r.mu.Unlock()
	// Written only while the registration's lease still holds the key:
	// when the lease was just lost, the re-registration writes the new
	// key anyway.
	_, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", lease)).
		Then(clientv3.OpPut(r.key, string(val), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		r.opts.Metrics.countError(OpRegister)
		return fmt.Errorf("update key %s: %w", r.key, err)
	}
	return nil
}

// Close stops the keepalive and revokes the lease, which removes the
// registration at once (a daemon stopping on purpose).
func (r *Registration) Close(ctx context.Context) error {
	r.cancel()
	<-r.done
	_, err := r.cli.Revoke(ctx, r.LeaseID())
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// Already expired (etcd was away longer than the TTL): the
		// key went with it, which is what Close asks for.
		return nil
	}
	return err
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Done is closed when the registration stopped keeping itself alive
// (ctx ended or Close).
func (r *Registration) Done() <-chan struct{} { return r.done }
