package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v3"

	"github.com/vpcd/vpcd/topology"
)

// Dynamic ENIs (SPEC §12) are ENIs a daemon creates at run time for a
// container runtime (the vpcd-cni plugin), not an operator's file. In etcd
// they are ordinary ENI objects (every host plans, routes and shows them
// like any ENI) whose spec also names the attachment that owns them
// (Attachment). Beside the object, the address is claimed by a key of its
// own, <prefix>/ipam/<subnet>/<ip>, created only if absent: two hosts
// that pick the same lowest free address cannot both win.
//
// A dynamic ENI's transaction also puts the commit record (readers only
// take objects in at a commit) and writes only while no apply holds the
// lock or is half written, so it never mixes with an apply. `vpcd apply
// --prune` keeps dynamic ENIs: a file cannot know them.

// Errors of CreateDynamicENI, for errors.Is.
var (
	ErrUnknownSubnet = errors.New("unknown subnet")
	ErrUnknownGroup  = errors.New("unknown security group")
	ErrSubnetFull    = errors.New("subnet full")
	ErrNameTaken     = errors.New("ENI name taken")
	ErrNotApplied    = errors.New("nothing applied to etcd yet")
)

// Attachment is what owns a dynamic ENI: a CNI network's attachment of
// one container's interface.
type Attachment struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

// DynamicENI is a dynamic ENI: the ENI (name, host, subnet, groups,
// interface; the address once created) and its owner.
type DynamicENI struct {
	topology.ENI
	Attachment Attachment
	// CIDR is the subnet's (filled by CreateDynamicENI and
	// ListDynamicENIs; not stored).
	CIDR netip.Prefix
}

// dynamicSpec is a dynamic ENI's spec in etcd: an ENI's spec plus its
// owner, which readers of plain ENIs ignore.
type dynamicSpec struct {
	eniSpec
	CNI *Attachment `json:"CNI,omitempty"`
}

func (k keys) ipam(subnet string) string { return k.prefix + "/ipam/" + subnet + "/" }

// dynamicOwner returns the owner of an ENI object's value, nil for an ENI
// an apply wrote (or any other object).
func dynamicOwner(value []byte) *Attachment {
	var v objectValue
	if json.Unmarshal(value, &v) != nil || v.Kind != KindENIs {
		return nil
	}
	var s struct {
		CNI *Attachment `json:"CNI"`
	}
	if json.Unmarshal(v.Spec, &s) != nil {
		return nil
	}
	return s.CNI
}

// keepDynamic adds to desired the dynamic ENIs of base it does not name:
// an apply with --prune deletes what its file lacks, but a file cannot
// know the ENIs containers got.
func keepDynamic(base, desired map[string][]byte) (kept bool) {
	for ref, v := range base {
		if _, ok := desired[ref]; ok || !strings.HasPrefix(ref, KindENIs+"/") {
			continue
		}
		if dynamicOwner(v) != nil {
			desired[ref] = v
			kept = true
		}
	}
	return kept
}

// dynamicRead is what a dynamic ENI's transaction is based on.
type dynamicRead struct {
	objs   map[string][]byte
	modRev map[string]int64 // object ref → mod revision
	commit commitRecord
	used   map[netip.Addr]bool // addresses claimed under ipam/<subnet>/
}

func readForDynamic(ctx context.Context, cli *clientv3.Client, k keys, subnet string) (*dynamicRead, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(k.objects(), clientv3.WithPrefix()),
		clientv3.OpGet(k.commit()),
		clientv3.OpGet(k.ipam(subnet), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, err
	}
	r := &dynamicRead{objs: map[string][]byte{}, modRev: map[string]int64{}, used: map[netip.Addr]bool{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if kind, name, ok := k.objectRef(string(kv.Key)); ok {
			r.objs[kind+"/"+name] = kv.Value
			r.modRev[kind+"/"+name] = kv.ModRevision
		}
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, ErrNotApplied
	}
	if err := json.Unmarshal(kvs[0].Value, &r.commit); err != nil {
		return nil, fmt.Errorf("%s: %w", k.commit(), err)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if a, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), k.ipam(subnet))); err == nil {
			r.used[a] = true
		}
	}
	return r, nil
}

// commitOp is the commit record a dynamic ENI's transaction writes: the
// next generation, so that every reader takes the change in.
func (r *dynamicRead) commitOp(k keys, id string, objects int) clientv3.Op {
	rec, _ := json.Marshal(commitRecord{Schema: SchemaVersion, Generation: r.commit.Generation + 1, ID: id,
		Time: time.Now().UTC().Format(time.RFC3339Nano), Objects: objects})
	return clientv3.OpPut(k.commit(), string(rec))
}

// noApply are the conditions of every dynamic ENI transaction: no apply
// holds the lock or is half written.
func noApply(k keys) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(k.lock()), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(k.pending()), "=", 0),
	}
}

// CreateDynamicENI creates the dynamic ENI e (Name, Host, Subnet,
// SecurityGroups, Interface and Attachment set; IP and MAC left empty) with
// the lowest free address of its subnet: not one of the four first or the
// last address (AWS reserves them), nor any ENI's, nor one claimed under
// ipam/. It returns the ENI as created. An ENI of that name owned by the
// same attachment is returned as it is (a repeated ADD).
//
// Transactions conflict when another host takes the same address at the
// same time, or an apply runs: CreateDynamicENI then reads again and
// retries until ctx ends.
func CreateDynamicENI(ctx context.Context, cli *clientv3.Client, prefix string, e DynamicENI) (DynamicENI, error) {
	k := newKeys(prefix)
	ref := KindENIs + "/" + e.Name
	wait := 5 * time.Millisecond
	for {
		r, err := readForDynamic(ctx, cli, k, e.Subnet)
		if err != nil {
			return e, err
		}
		if v, ok := r.objs[ref]; ok {
			if o := dynamicOwner(v); o != nil && *o == e.Attachment {
				d, err := decodeDynamic(v)
				if err == nil {
					d.CIDR = subnetCIDR(r.objs, d.Subnet)
				}
				return d, err
			}
			return e, fmt.Errorf("%w: eni %q exists and belongs to something else", ErrNameTaken, e.Name)
		}
		t, err := assemble(r.objs, nil)
		if err != nil {
			return e, fmt.Errorf("the committed state does not validate: %w", err)
		}
		s, _ := t.SubnetByName(e.Subnet)
		if s == nil {
			return e, fmt.Errorf("%w %q", ErrUnknownSubnet, e.Subnet)
		}
		for _, g := range e.SecurityGroups {
			if t.SecurityGroupByName(g) == nil {
				return e, fmt.Errorf("%w %q", ErrUnknownGroup, g)
			}
		}
		for _, x := range t.ENIs {
			if x.Subnet == e.Subnet {
				r.used[x.IP] = true
			}
		}
		ip, ok := lowestFree(s.CIDR, r.used)
		if !ok {
			return e, fmt.Errorf("%w: %s (%s) has no free address", ErrSubnetFull, e.Subnet, s.CIDR)
		}
		e.IP = ip
		e.SourceDestCheck = true
		owner := e.Attachment
		spec := dynamicSpec{eniSpec: eniSpec{ENI: e.ENI}, CNI: &owner}
		obj := encodeObject(KindENIs, e.Name, spec)
		// The whole state must still validate (interface names, hosts).
		r.objs[ref] = obj.value
		if _, err := assemble(r.objs, nil); err != nil {
			return e, err
		}
		cmps := append(noApply(k),
			clientv3.Compare(clientv3.CreateRevision(k.ipam(e.Subnet)+ip.String()), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(k.objects()+ref), "=", 0),
			clientv3.Compare(clientv3.ModRevision(k.object(KindSubnets, e.Subnet)), "=", r.modRev[KindSubnets+"/"+e.Subnet]),
		)
		resp, err := cli.Txn(ctx).If(cmps...).Then(
			clientv3.OpPut(k.ipam(e.Subnet)+ip.String(), e.Name),
			clientv3.OpPut(k.objects()+ref, string(obj.value)),
			r.commitOp(k, "dynamic-eni/"+e.Host+"/"+e.Name, len(r.objs)),
		).Commit()
		if err != nil {
			return e, err
		}
		if resp.Succeeded {
			d, err := decodeDynamic(obj.value)
			d.CIDR = s.CIDR
			return d, err
		}
		if err := sleep(ctx, &wait); err != nil {
			return e, err
		}
	}
}

// DeleteDynamicENI deletes the dynamic ENI name and frees its address. It
// reports whether there was one; deleting one that is not there is not an
// error. An ENI an apply wrote is refused.
//
// Mirror sessions that copy from or to the ENI and flow logs of the ENI
// go in the same transaction (returned as "kind/name" refs): without
// their ENI they would make the state invalid, and every daemon would
// refuse it.
func DeleteDynamicENI(ctx context.Context, cli *clientv3.Client, prefix, name string) (existed bool, dependents []string, err error) {
	k := newKeys(prefix)
	ref := KindENIs + "/" + name
	wait := 5 * time.Millisecond
	for {
		resp, err := cli.Txn(ctx).Then(
			clientv3.OpGet(k.objects(), clientv3.WithPrefix()),
			clientv3.OpGet(k.commit()),
		).Commit()
		if err != nil {
			return false, nil, err
		}
		objs, modRev := map[string][]byte{}, map[string]int64{}
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			if kind, n, ok := k.objectRef(string(kv.Key)); ok {
				objs[kind+"/"+n], modRev[kind+"/"+n] = kv.Value, kv.ModRevision
			}
		}
		v, ok := objs[ref]
		if !ok {
			return false, nil, nil
		}
		if dynamicOwner(v) == nil {
			return false, nil, fmt.Errorf("eni %q was applied from a file, not made for a container: not deleting it", name)
		}
		d, err := decodeDynamic(v)
		if err != nil {
			return false, nil, err
		}
		r := &dynamicRead{}
		if c := resp.Responses[1].GetResponseRange().Kvs; len(c) > 0 {
			json.Unmarshal(c[0].Value, &r.commit)
		}
		dependents = dependentsOf(objs, name)
		cmps := append(noApply(k), clientv3.Compare(clientv3.ModRevision(k.objects()+ref), "=", modRev[ref]))
		ops := []clientv3.Op{clientv3.OpDelete(k.objects() + ref)}
		for _, dep := range dependents {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.objects()+dep), "=", modRev[dep]))
			ops = append(ops, clientv3.OpDelete(k.objects()+dep))
		}
		ops = append(ops, r.commitOp(k, "dynamic-eni/"+d.Host+"/"+name+"/delete", len(objs)-1-len(dependents)))
		ipamKey := k.ipam(d.Subnet) + d.IP.String()
		// The address key goes with the ENI, unless it is another's.
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ipamKey), "=", name)},
			[]clientv3.Op{clientv3.OpDelete(ipamKey)}, nil))
		del, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return false, nil, err
		}
		if del.Succeeded {
			return true, dependents, nil
		}
		if err := sleep(ctx, &wait); err != nil {
			return false, nil, err
		}
	}
}

// dependentsOf lists the mirror sessions (source or target) and flow logs
// among objs that name the ENI name.
func dependentsOf(objs map[string][]byte, name string) []string {
	var deps []string
	for _, ref := range sortedKeys(objs) {
		v, err := decodeValue(ref, objs[ref])
		if err != nil {
			continue
		}
		switch v.Kind {
		case KindMirrorSessions:
			var m topology.MirrorSession
			if json.Unmarshal(v.Spec, &m) == nil && (m.SourceENI == name || m.Target.ENI == name) {
				deps = append(deps, ref)
			}
		case KindFlowLogs:
			var f topology.FlowLog
			if json.Unmarshal(v.Spec, &f) == nil && f.ResourceKind == "eni" && f.ResourceName == name {
				deps = append(deps, ref)
			}
		}
	}
	return deps
}

// preserveDynamic keeps, for every ENI of desired that is a dynamic ENI in
// base with the same identity (host, subnet, address, groups, interface),
// base's value: a file that names a container's ENI (WithDynamicENIs) does
// not turn it into a file's ENI.
func preserveDynamic(base, desired map[string][]byte) {
	for ref, v := range base {
		dv, ok := desired[ref]
		if !ok || !strings.HasPrefix(ref, KindENIs+"/") || dynamicOwner(v) == nil {
			continue
		}
		have, err1 := decodeDynamic(v)
		want, err2 := decodeDynamic(dv)
		if err1 == nil && err2 == nil && have.Host == want.Host && have.Subnet == want.Subnet && have.IP == want.IP &&
			slices.Equal(have.SecurityGroups, want.SecurityGroups) && have.Interface == want.Interface {
			desired[ref] = v
		}
	}
}

// WithDynamicENIs returns the topology file data with the dynamic ENIs
// etcd holds added to its enis (those it does not name itself), so that
// a file may refer to a container's ENI, e.g. as a mirror session's
// source. The result is for parsing, not for showing: its line numbers
// are not the file's.
func WithDynamicENIs(ctx context.Context, cli *clientv3.Client, prefix string, data []byte) ([]byte, int, error) {
	dyn, err := ListDynamicENIs(ctx, cli, prefix, "")
	if err != nil || len(dyn) == 0 {
		return data, 0, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return data, 0, err
	}
	root := doc.Content[0]
	var enis *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "enis" {
			enis = root.Content[i+1]
		}
	}
	if enis == nil || enis.Kind != yaml.SequenceNode {
		if enis != nil && !(enis.Kind == yaml.ScalarNode && enis.Tag == "!!null") {
			return data, 0, nil
		}
		if enis == nil {
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "enis"}, &yaml.Node{})
			enis = root.Content[len(root.Content)-1]
		}
		*enis = yaml.Node{Kind: yaml.SequenceNode}
	}
	named := map[string]bool{}
	for _, e := range enis.Content {
		for i := 0; e.Kind == yaml.MappingNode && i+1 < len(e.Content); i += 2 {
			if e.Content[i].Value == "name" {
				named[e.Content[i+1].Value] = true
			}
		}
	}
	added := 0
	for _, d := range dyn {
		if named[d.Name] {
			continue
		}
		var n yaml.Node
		if err := n.Encode(map[string]any{"name": d.Name, "host": d.Host, "subnet": d.Subnet, "ip": d.IP.String(),
			"security_groups": d.SecurityGroups, "interface": d.Interface}); err != nil {
			return data, 0, err
		}
		enis.Content = append(enis.Content, &n)
		added++
	}
	out, err := yaml.Marshal(&doc)
	return out, added, err
}

// ListDynamicENIs lists the committed dynamic ENIs of host ("" for every
// host), by name.
func ListDynamicENIs(ctx context.Context, cli *clientv3.Client, prefix, host string) ([]DynamicENI, error) {
	k := newKeys(prefix)
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(k.objects()+KindENIs+"/", clientv3.WithPrefix()),
		clientv3.OpGet(k.objects()+KindSubnets+"/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	subnets := map[string][]byte{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if kind, name, ok := k.objectRef(string(kv.Key)); ok {
			subnets[kind+"/"+name] = kv.Value
		}
	}
	var out []DynamicENI
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if dynamicOwner(kv.Value) == nil {
			continue
		}
		d, err := decodeDynamic(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		if host == "" || d.Host == host {
			d.CIDR = subnetCIDR(subnets, d.Subnet)
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b DynamicENI) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func decodeDynamic(value []byte) (DynamicENI, error) {
	var v objectValue
	if err := json.Unmarshal(value, &v); err != nil {
		return DynamicENI{}, err
	}
	var s dynamicSpec
	if err := json.Unmarshal(v.Spec, &s); err != nil {
		return DynamicENI{}, err
	}
	d := DynamicENI{ENI: s.ENI}
	if s.CNI != nil {
		d.Attachment = *s.CNI
	}
	return d, nil
}

// lowestFree is the lowest address of p that is neither reserved (the
// first four and the last) nor used.
func lowestFree(p netip.Prefix, used map[netip.Addr]bool) (netip.Addr, bool) {
	p = p.Masked()
	last := lastAddr(p)
	a := p.Addr()
	for range 4 {
		a = a.Next()
	}
	for ; a.IsValid() && a.Less(last); a = a.Next() {
		if !used[a] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// sleep waits a jittered, growing time before a retry.
func sleep(ctx context.Context, wait *time.Duration) error {
	b := &backoff{min: *wait, max: 200 * time.Millisecond, d: *wait}
	t := time.NewTimer(b.next())
	defer t.Stop()
	*wait = min(2**wait, 200*time.Millisecond)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// subnetCIDR is the CIDR of the subnet name among objs ("kind/name" →
// value); invalid when it is not there.
func subnetCIDR(objs map[string][]byte, name string) netip.Prefix {
	v, err := decodeValue(name, objs[KindSubnets+"/"+name])
	if err != nil {
		return netip.Prefix{}
	}
	var s topology.Subnet
	if json.Unmarshal(v.Spec, &s) != nil {
		return netip.Prefix{}
	}
	return s.CIDR
}
