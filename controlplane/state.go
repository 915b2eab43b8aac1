package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// state is a committed state as read from etcd: the objects of the last
// commit and the live registrations.
type state struct {
	rev       int64 // revision the read was made at (the head then)
	commitRev int64 // revision of the commit record; 0: nothing applied yet
	commit    commitRecord
	pending   bool                  // an apply was writing: objs were read at commitRev
	objs      map[string][]byte     // "kind/name" → value
	hosts     map[string]HostRecord // live registrations by host name
	bad       []error               // registrations that did not decode (left out)
}

// errPendingCompacted means an apply is (or was) half written and the
// last committed state is no longer in etcd's history: readers wait for
// the next commit.
var errPendingCompacted = errors.New("an apply is half written and the last commit's revision was compacted: waiting for the next apply to commit")

// readState reads the whole prefix at one revision. When an apply is half
// written (a pending record) it reads the objects again at the revision
// of the last commit, which is what readers must see.
func readState(ctx context.Context, cli *clientv3.Client, k keys) (*state, error) {
	resp, err := cli.Get(ctx, k.all(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	st := &state{rev: resp.Header.Revision, objs: map[string][]byte{}, hosts: map[string]HostRecord{}}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		switch {
		case key == k.commit():
			if err := json.Unmarshal(kv.Value, &st.commit); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			st.commitRev = kv.ModRevision
		case key == k.pending():
			st.pending = true
		case strings.HasPrefix(key, k.hosts()):
			h, err := decodeHost(key, kv.Value)
			if err != nil {
				st.bad = append(st.bad, err)
				continue
			}
			st.hosts[strings.TrimPrefix(key, k.hosts())] = h
		default:
			if kind, name, ok := k.objectRef(key); ok {
				st.objs[kind+"/"+name] = kv.Value
			}
		}
	}
	if st.pending && st.commitRev != 0 {
		objs, err := readObjects(ctx, cli, k, st.commitRev)
		if err != nil {
			if errors.Is(err, errCompacted) {
				return nil, errPendingCompacted
			}
			return nil, err
		}
		st.objs = objs
	}
	return st, nil
}
