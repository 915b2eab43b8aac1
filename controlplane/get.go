package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GetKinds are the kinds `vpcd get` lists: Kinds without settings.
var GetKinds = []string{KindHosts, KindVPCs, KindSubnets, KindENIs, KindSecurityGroups,
	KindNetworkACLs, KindFlowLogs, KindMirrorFilters, KindMirrorSessions}

// Item is one object as `vpcd get` shows it.
type Item struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Spec is the applied object (a host's applied config; absent for a
	// host that registered without one).
	Spec json.RawMessage `json:"spec,omitempty"`
	// Hosts only: whether a daemon holds a registration, and what it
	// registered (address, port, MTU, public key).
	Live         *bool       `json:"live,omitempty"`
	Registration *HostRecord `json:"registration,omitempty"`
}

// GetResult is what Get read.
type GetResult struct {
	Revision   int64  `json:"revision"`   // the etcd revision read
	Generation int64  `json:"generation"` // of the last commit; 0 when nothing was applied
	Applied    string `json:"applied"`    // time of the last commit
	Items      []Item `json:"items"`
}

// Get reads the committed objects of one kind (name "" for all of them),
// sorted by name. For hosts it joins the applied config with the live
// registrations: a host shows when it has either.
func Get(ctx context.Context, cli *clientv3.Client, prefix, kind, name string) (GetResult, error) {
	if !slices.Contains(Kinds, kind) {
		return GetResult{}, fmt.Errorf("unknown kind %q: want one of %s", kind, strings.Join(GetKinds, ", "))
	}
	st, err := readState(ctx, cli, newKeys(prefix))
	if err != nil {
		return GetResult{}, err
	}
	res := GetResult{Revision: st.rev, Generation: st.commit.Generation, Applied: st.commit.Time, Items: []Item{}}
	items := map[string]*Item{}
	for ref, data := range st.objs {
		k, n, _ := strings.Cut(ref, "/")
		if k != kind || (name != "" && n != name) {
			continue
		}
		v, err := decodeValue(ref, data)
		if err != nil {
			return res, err
		}
		items[n] = &Item{Kind: k, Name: n, Spec: v.Spec}
	}
	if kind == KindHosts {
		for n, h := range st.hosts {
			if name != "" && n != name {
				continue
			}
			it := items[n]
			if it == nil {
				it = &Item{Kind: kind, Name: n}
				items[n] = it
			}
			h := h
			it.Registration = &h
		}
		for _, it := range items {
			live := it.Registration != nil
			it.Live = &live
		}
	}
	for _, n := range sortedKeys(items) {
		res.Items = append(res.Items, *items[n])
	}
	return res, nil
}
