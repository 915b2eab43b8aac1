package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/topology"
)

// Limits of one transaction. etcd refuses a transaction of more than
// --max-txn-ops operations (128 by default) or --max-request-bytes bytes
// (1.5 MiB by default); an apply stays well under both.
const (
	maxTxnOps   = 100
	maxTxnBytes = 1 << 20
)

// Changes is what an apply did (or, dry, would do), as "kind/name" refs
// compared with the last committed state.
type Changes struct {
	Created, Changed, Deleted []string
	// Generation and Revision of the commit the apply wrote (0 when it
	// wrote nothing: dry run or no change).
	Generation int64
	Revision   int64
	// Transactions the apply took: 1 when its changes fit one.
	Transactions int
	// Recovered is set when the apply found, and undid, what an
	// interrupted apply had left half written.
	Recovered bool
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Created)+len(c.Changed)+len(c.Deleted) == 0
}

// ErrLocked is returned when another apply holds the lock.
var ErrLocked = errors.New("another apply is running")

// MergeError is returned when the file is valid but the state it makes
// together with what etcd holds (objects the file does not name stay
// without --prune) is not.
type MergeError struct{ Err error }

func (e *MergeError) Error() string {
	return "the file together with the objects etcd holds that it does not name (no --prune) does not validate:\n" + e.Err.Error()
}

func (e *MergeError) Unwrap() error { return e.Err }

// Apply writes t's objects under prefix so that the committed state
// becomes t (prune) or t plus the objects etcd holds that t does not
// name (no prune). t must be a topology.Parse result (validated, defaults
// filled in); the resulting state is validated again before anything is
// written, and etcd is untouched on any error. With dryRun Apply only
// computes the changes.
//
// Readers never see a part of one apply or a mix of two (see the package
// doc); concurrent applies are serialised by a lease-bound lock and
// fail with ErrLocked rather than wait.
func Apply(ctx context.Context, cli *clientv3.Client, prefix string, t *topology.Topology, prune, dryRun bool) (Changes, error) {
	k := newKeys(prefix)
	// Plan once without the lock, so that a refused apply writes nothing
	// at all (not even the lock), then again under it.
	p, err := plan(ctx, cli, k, t, prune)
	if err != nil || dryRun || p.noop() {
		return p.ch, err
	}
	id := newID()
	unlock, err := lock(ctx, cli, k, id)
	if err != nil {
		return p.ch, err
	}
	defer unlock()
	if p, err = plan(ctx, cli, k, t, prune); err != nil || p.noop() {
		return p.ch, err
	}
	return p.write(ctx, cli, k, id)
}

// applyPlan is what an apply will write.
type applyPlan struct {
	ch      Changes
	ops     []clientv3.Op
	size    int
	pending bool
	commit  commitRecord
	objects int
}

func (p *applyPlan) noop() bool { return len(p.ops) == 0 && !p.pending }

// plan reads the head and computes the changes and the writes.
func plan(ctx context.Context, cli *clientv3.Client, k keys, t *topology.Topology, prune bool) (*applyPlan, error) {
	p := &applyPlan{}
	ch := &p.ch
	head, err := cli.Get(ctx, k.all(), clientv3.WithPrefix())
	if err != nil {
		return p, fmt.Errorf("read %s: %w", k.all(), err)
	}
	var commitRev int64
	headObjs := map[string][]byte{}
	for _, kv := range head.Kvs {
		key := string(kv.Key)
		switch {
		case key == k.commit():
			if err := json.Unmarshal(kv.Value, &p.commit); err != nil {
				return p, fmt.Errorf("%s: %w", key, err)
			}
			commitRev = kv.ModRevision
		case key == k.pending():
			p.pending = true
		default:
			if kind, name, ok := k.objectRef(key); ok {
				headObjs[kind+"/"+name] = kv.Value
			}
		}
	}
	// The state readers see is the objects at the last commit. Without an
	// interrupted apply that is the head; with one, etcd still has it
	// unless it was compacted (then the head is the best we know).
	base := headObjs
	if p.pending && commitRev != 0 {
		ch.Recovered = true
		if objs, err := readObjects(ctx, cli, k, commitRev); err == nil {
			base = objs
		} else if !errors.Is(err, rpctypes.ErrCompacted) {
			return p, err
		}
	}

	desired := map[string][]byte{}
	var order []string
	for _, o := range objectsOf(t) {
		desired[o.ref()] = o.value
		order = append(order, o.ref())
	}
	preserveDynamic(base, desired)
	if !prune {
		for ref, v := range base {
			if _, ok := desired[ref]; !ok {
				desired[ref] = v
			}
		}
		// The merged state must hold together as a file would.
		if _, err := assemble(desired, nil); err != nil {
			return p, &MergeError{err}
		}
	} else if keepDynamic(base, desired) {
		// Containers' ENIs stay; the file must still hold them up.
		if _, err := assemble(desired, nil); err != nil {
			return p, &MergeError{err}
		}
	}
	p.objects = len(desired)

	// What readers will see change, in file order then by ref.
	for _, ref := range order {
		old, ok := base[ref]
		switch {
		case !ok:
			ch.Created = append(ch.Created, ref)
		case !bytes.Equal(old, desired[ref]):
			ch.Changed = append(ch.Changed, ref)
		}
	}
	for _, ref := range sortedKeys(base) {
		if _, ok := desired[ref]; !ok {
			ch.Deleted = append(ch.Deleted, ref)
		}
	}

	// What must be written: the difference from the head, which also
	// undoes what an interrupted apply left.
	for _, ref := range sortedKeys(desired) {
		if old, ok := headObjs[ref]; !ok || !bytes.Equal(old, desired[ref]) {
			p.ops = append(p.ops, clientv3.OpPut(k.objects()+ref, string(desired[ref])))
			p.size += len(k.objects()) + len(ref) + len(desired[ref])
		}
	}
	for _, ref := range sortedKeys(headObjs) {
		if _, ok := desired[ref]; !ok {
			p.ops = append(p.ops, clientv3.OpDelete(k.objects()+ref))
			p.size += len(k.objects()) + len(ref)
		}
	}
	return p, nil
}

// write writes the plan under the lock id holds.
func (p *applyPlan) write(ctx context.Context, cli *clientv3.Client, k keys, id string) (Changes, error) {
	ch, ops, size := p.ch, p.ops, p.size
	now := time.Now().UTC().Format(time.RFC3339Nano)
	gen := p.commit.Generation + 1
	rec, _ := json.Marshal(commitRecord{Schema: SchemaVersion, Generation: gen, ID: id, Time: now, Objects: p.objects})
	held := clientv3.Compare(clientv3.Value(k.lock()), "=", id)
	final := []clientv3.Op{clientv3.OpPut(k.commit(), string(rec)), clientv3.OpDelete(k.pending())}

	if len(ops) <= maxTxnOps && size <= maxTxnBytes {
		// The common case: objects and commit record in one transaction.
		resp, err := cli.Txn(ctx).If(held).Then(append(ops, final...)...).Commit()
		if err != nil {
			return ch, fmt.Errorf("write: %w", err)
		}
		if !resp.Succeeded {
			return ch, errors.New("write: the apply lost its lock (lease expired?); nothing was written")
		}
		ch.Generation, ch.Revision, ch.Transactions = gen, resp.Header.Revision, 1
		return ch, nil
	}

	// Too big for one transaction: a pending record tells readers that
	// the objects are being written and not to be used until the commit.
	pend, _ := json.Marshal(pendingRecord{Schema: SchemaVersion, Generation: gen, ID: id, Time: now})
	batches := [][]clientv3.Op{{clientv3.OpPut(k.pending(), string(pend))}}
	cur, curSize := []clientv3.Op(nil), 0
	for i, op := range ops {
		cur = append(cur, op)
		curSize += opSize(op)
		if len(cur) == maxTxnOps || curSize >= maxTxnBytes/2 || i == len(ops)-1 {
			batches = append(batches, cur)
			cur, curSize = nil, 0
		}
	}
	batches = append(batches, final)
	for i, b := range batches {
		resp, err := cli.Txn(ctx).If(held).Then(b...).Commit()
		if err != nil {
			return ch, fmt.Errorf("write (transaction %d of %d; readers keep the last commit, the next apply undoes this one): %w", i+1, len(batches), err)
		}
		if !resp.Succeeded {
			return ch, fmt.Errorf("write (transaction %d of %d): the apply lost its lock; readers keep the last commit, the next apply undoes this one", i+1, len(batches))
		}
		ch.Revision = resp.Header.Revision
	}
	ch.Generation, ch.Transactions = gen, len(batches)
	return ch, nil
}

func opSize(op clientv3.Op) int {
	return len(op.KeyBytes()) + len(op.ValueBytes())
}

// lock takes <prefix>/lock under a lease of its own and keeps the lease
// alive until the returned function is called. A crashed apply's lock
// goes away with its lease.
func lock(ctx context.Context, cli *clientv3.Client, k keys, id string) (func(), error) {
	lease, err := cli.Grant(ctx, 10)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k.lock()), "=", 0)).
		Then(clientv3.OpPut(k.lock(), id, clientv3.WithLease(lease.ID))).
		Else(clientv3.OpGet(k.lock())).
		Commit()
	if err != nil {
		cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("lock: %w", err)
	}
	if !resp.Succeeded {
		cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		holder := ""
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			holder = " (" + string(r.Kvs[0].Value) + ")"
		}
		return nil, fmt.Errorf("%w%s: %s is held", ErrLocked, holder, k.lock())
	}
	kaCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ka, err := cli.KeepAlive(kaCtx, lease.ID)
	if err == nil {
		go func() {
			for range ka {
			}
		}()
	}
	return func() {
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		cli.Revoke(rctx, lease.ID)
	}, nil
}

// readObjects reads every object at rev (0: the head).
func readObjects(ctx context.Context, cli *clientv3.Client, k keys, rev int64) (map[string][]byte, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := cli.Get(ctx, k.objects(), opts...)
	if err != nil {
		return nil, err
	}
	objs := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if kind, name, ok := k.objectRef(string(kv.Key)); ok {
			objs[kind+"/"+name] = kv.Value
		}
	}
	return objs, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// newID names one apply run: host, pid and random bits.
func newID() string {
	var b [4]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
