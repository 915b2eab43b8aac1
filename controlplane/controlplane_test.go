package controlplane_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/controlplane/etcdtest"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/topology"
)

const prefix = "/vpcd-test"

func load(t *testing.T, path string) *topology.Topology {
	t.Helper()
	top, err := topology.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func parse(t *testing.T, data string) *topology.Topology {
	t.Helper()
	top, err := topology.Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// canonical is t as etcd gives it back: every list sorted by name, no
// public keys (hosts publish their own), as a file.
func canonical(t *testing.T, top *topology.Topology) string {
	t.Helper()
	c := *top
	c.Hosts = slices.Clone(c.Hosts)
	for i := range c.Hosts {
		c.Hosts[i].PublicKey = ""
	}
	byName := func(a, b string) int { return cmp.Compare(a, b) }
	slices.SortFunc(c.Hosts, func(a, b topology.Host) int { return byName(a.Name, b.Name) })
	c.VPCs = slices.Clone(c.VPCs)
	for i := range c.VPCs {
		c.VPCs[i].Subnets = slices.Clone(c.VPCs[i].Subnets)
		slices.SortFunc(c.VPCs[i].Subnets, func(a, b topology.Subnet) int { return byName(a.Name, b.Name) })
	}
	slices.SortFunc(c.VPCs, func(a, b topology.VPC) int { return byName(a.Name, b.Name) })
	c.SecurityGroups = slices.Clone(c.SecurityGroups)
	slices.SortFunc(c.SecurityGroups, func(a, b topology.SecurityGroup) int { return byName(a.Name, b.Name) })
	c.NetworkACLs = slices.Clone(c.NetworkACLs)
	slices.SortFunc(c.NetworkACLs, func(a, b topology.NetworkACL) int { return byName(a.Name, b.Name) })
	c.ENIs = slices.Clone(c.ENIs)
	slices.SortFunc(c.ENIs, func(a, b topology.ENI) int { return byName(a.Name, b.Name) })
	c.FlowLogs = slices.Clone(c.FlowLogs)
	slices.SortFunc(c.FlowLogs, func(a, b topology.FlowLog) int { return byName(a.Name, b.Name) })
	c.MirrorFilters = slices.Clone(c.MirrorFilters)
	slices.SortFunc(c.MirrorFilters, func(a, b topology.MirrorFilter) int { return byName(a.Name, b.Name) })
	c.MirrorSessions = slices.Clone(c.MirrorSessions)
	slices.SortFunc(c.MirrorSessions, func(a, b topology.MirrorSession) int { return byName(a.Name, b.Name) })
	data, err := topology.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// startSource runs a Source until the test ends and returns its snapshots.
func startSource(t *testing.T, cli *clientv3.Client, m *controlplane.Metrics) <-chan source.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan source.Snapshot, 1000)
	done := make(chan struct{})
	s := &controlplane.Source{Client: cli, Prefix: prefix, Origin: "etcd:test", Metrics: m,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	go func() {
		defer close(done)
		if err := s.Run(ctx, out); err != nil {
			t.Errorf("Source.Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

// next waits for a snapshot that satisfies ok; it fails on a timeout.
func next(t *testing.T, ch <-chan source.Snapshot, within time.Duration, ok func(source.Snapshot) bool) source.Snapshot {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case s := <-ch:
			if ok(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("no matching snapshot within %v", within)
		}
	}
}

func equals(t *testing.T, want string) func(source.Snapshot) bool {
	return func(s source.Snapshot) bool {
		if s.Err != nil {
			t.Fatalf("snapshot error: %v", s.Err)
		}
		return canonical(t, s.Topology) == want
	}
}

func apply(t *testing.T, cli *clientv3.Client, top *topology.Topology, prune bool) controlplane.Changes {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := controlplane.Apply(ctx, cli, prefix, top, prune, false)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestApplyReadBack(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	top := load(t, "../topology/testdata/example.yaml")

	dry, err := controlplane.Apply(context.Background(), cli, prefix, top, false, true)
	if err != nil || len(dry.Created) == 0 || dry.Generation != 0 {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}
	if r, _ := controlplane.Get(context.Background(), cli, prefix, controlplane.KindENIs, ""); len(r.Items) != 0 {
		t.Fatalf("dry run wrote: %+v", r)
	}
	ch := apply(t, cli, top, false)
	if ch.Transactions != 1 || ch.Generation != 1 || len(ch.Created) != len(dry.Created) || len(ch.Changed)+len(ch.Deleted) != 0 {
		t.Fatalf("first apply: %+v", ch)
	}
	snaps := startSource(t, cli, nil)
	s := next(t, snaps, 10*time.Second, equals(t, canonical(t, top)))
	if s.Revision < ch.Revision || s.Origin != "etcd:test" {
		t.Errorf("snapshot revision %d origin %q, want ≥ %d etcd:test", s.Revision, s.Origin, ch.Revision)
	}

	// The same file again changes nothing and writes nothing.
	if again := apply(t, cli, top, false); !again.Empty() || again.Transactions != 0 {
		t.Fatalf("second apply: %+v", again)
	}

	// Get: every ENI, one by name, and hosts without a live daemon.
	r, err := controlplane.Get(context.Background(), cli, prefix, controlplane.KindENIs, "")
	if err != nil || len(r.Items) != len(top.ENIs) || r.Generation != 1 {
		t.Fatalf("get enis: %+v, %v", r, err)
	}
	name := top.ENIs[0].Name
	r, err = controlplane.Get(context.Background(), cli, prefix, controlplane.KindENIs, name)
	if err != nil || len(r.Items) != 1 || r.Items[0].Name != name {
		t.Fatalf("get eni %s: %+v, %v", name, r, err)
	}
	r, err = controlplane.Get(context.Background(), cli, prefix, controlplane.KindHosts, "")
	if err != nil || len(r.Items) != len(top.Hosts) || *r.Items[0].Live {
		t.Fatalf("get hosts: %+v, %v", r, err)
	}
	if _, err := controlplane.Get(context.Background(), cli, prefix, "nonsense", ""); err == nil {
		t.Error("get of an unknown kind: no error")
	}

	// Without prune a removed ENI stays; with prune it goes.
	smaller := load(t, "../topology/testdata/example.yaml")
	gone := smaller.ENIs[len(smaller.ENIs)-1].Name
	smaller.MirrorSessions = slices.DeleteFunc(smaller.MirrorSessions, func(m topology.MirrorSession) bool {
		return m.SourceENI == gone || m.Target.ENI == gone
	})
	smaller.FlowLogs = slices.DeleteFunc(smaller.FlowLogs, func(f topology.FlowLog) bool { return f.ResourceName == gone })
	smaller.ENIs = smaller.ENIs[:len(smaller.ENIs)-1]
	if ch := apply(t, cli, smaller, false); !ch.Empty() {
		t.Fatalf("apply of a subset without prune: %+v", ch)
	}
	ch = apply(t, cli, smaller, true)
	if !slices.Contains(ch.Deleted, "enis/"+gone) || len(ch.Created)+len(ch.Changed) != 0 {
		t.Fatalf("apply with prune: %+v", ch)
	}
	next(t, snaps, 10*time.Second, equals(t, canonical(t, smaller)))
}

// TestApplyRefusedWritesNothing: a file that is valid but clashes with
// what etcd holds (no prune) changes nothing, not even the revision.
func TestApplyRefusedWritesNothing(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	top := load(t, "../topology/testdata/example.yaml")
	apply(t, cli, top, false)
	before, err := cli.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	// The same ENI under a new name: duplicate address once merged.
	clash := load(t, "../topology/testdata/example.yaml")
	clash.ENIs[0].Name += "-renamed"
	clash.ENIs[0].Interface = "vpc-renamed"
	clash.MirrorSessions = nil
	clash.FlowLogs = nil
	_, err = controlplane.Apply(context.Background(), cli, prefix, clash, false, false)
	var me *controlplane.MergeError
	if !errors.As(err, &me) {
		t.Fatalf("apply of a clashing file: %v, want a MergeError", err)
	}
	after, _ := cli.Get(context.Background(), "/")
	if after.Header.Revision != before.Header.Revision {
		t.Fatalf("refused apply moved the revision %d → %d", before.Header.Revision, after.Header.Revision)
	}
}

// big makes a topology of n ENIs over hosts; variant changes every
// ENI, group and host so that a reader mixing two applies would notice.
func big(t *testing.T, n int, variant string) *topology.Topology {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\naccount_id: \"%s\"\nhosts:\n", variant)
	for h := range 20 {
		fmt.Fprintf(&b, "  - {name: h%d, underlay_ip: 192.0.2.%d, mtu: %d}\n", h, h+1, 1400+len(variant))
	}
	b.WriteString("vpcs:\n  - name: v\n    vni: 7\n    cidr: 10.0.0.0/16\n    subnets:\n      - {name: s, cidr: 10.0.0.0/20}\n")
	b.WriteString("security_groups:\n")
	for g := range 10 {
		fmt.Fprintf(&b, "  - {name: g%d, vpc: v, ingress: [{protocol: tcp, from_port: %d, to_port: %d, cidr: 0.0.0.0/0}]}\n", g, 1000+len(variant), 1000+len(variant))
	}
	b.WriteString("enis:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: e%d, host: h%d, subnet: s, ip: 10.0.%d.%d, instance: %s-%d, security_groups: [g%d]}\n",
			i, i%20, 1+i/200, 10+i%200, variant, i, i%10)
	}
	return parse(t, b.String())
}

// TestReaderSeesWholeApplies applies, in a loop, topologies too big for
// one transaction, while a Source asserts that every snapshot is one of
// the applied files and never a mix.
func TestReaderSeesWholeApplies(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	variants := map[string]string{}
	tops := map[string]*topology.Topology{}
	for _, v := range []string{"aaaa", "bb", "c"} {
		tops[v] = big(t, 400, v)
		variants[canonical(t, tops[v])] = v
	}
	apply(t, cli, tops["c"], true)
	m := controlplane.NewMetrics()
	snaps := startSource(t, cli, m)
	seen := 0
	check := func(s source.Snapshot) {
		t.Helper()
		if s.Err != nil {
			t.Fatalf("snapshot error: %v", s.Err)
		}
		if _, ok := variants[canonical(t, s.Topology)]; !ok {
			t.Fatalf("snapshot at revision %d is none of the applied files", s.Revision)
		}
		seen++
	}
	check(next(t, snaps, 10*time.Second, func(source.Snapshot) bool { return true }))
	for i := range 6 {
		v := []string{"aaaa", "bb", "c"}[i%3]
		ch := apply(t, cli, tops[v], true)
		if ch.Transactions < 3 {
			t.Fatalf("apply %d took %d transactions, want several", i, ch.Transactions)
		}
		want := canonical(t, tops[v])
		for {
			s := next(t, snaps, 20*time.Second, func(source.Snapshot) bool { return true })
			check(s)
			if canonical(t, s.Topology) == want && s.Revision >= ch.Revision {
				break
			}
		}
	}
	if st := m.Stats(); st.FullReads != 1 {
		t.Errorf("full reads = %d, want 1", st.FullReads)
	}
	t.Logf("%d snapshots, all whole", seen)
}

// TestInterruptedApply: objects a crashed apply half wrote are never
// seen; a reader starting then reads the last commit; the next apply
// undoes them.
func TestInterruptedApply(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	a, b := big(t, 50, "a"), big(t, 50, "bbb")
	apply(t, cli, a, true)
	// What a crashed multi-transaction apply of b leaves: a pending
	// record and some of its objects, no commit.
	ctx := context.Background()
	if _, err := cli.Put(ctx, prefix+"/pending", `{"schema":1,"generation":2,"id":"crashed"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := controlplane.Apply(ctx, cli, prefix+"-scratch", b, true, false); err != nil {
		t.Fatal(err)
	}
	scratch, err := cli.Get(ctx, prefix+"-scratch/objects/enis/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range scratch.Kvs[:20] {
		key := strings.Replace(string(kv.Key), prefix+"-scratch", prefix, 1)
		if _, err := cli.Put(ctx, key, string(kv.Value)); err != nil {
			t.Fatal(err)
		}
	}
	snaps := startSource(t, cli, nil)
	next(t, snaps, 10*time.Second, equals(t, canonical(t, a)))
	r, err := controlplane.Get(ctx, cli, prefix, controlplane.KindENIs, "e0")
	if err != nil || len(r.Items) != 1 || !strings.Contains(string(r.Items[0].Spec), "a-0") {
		t.Fatalf("get during a half-written apply: %+v %v", r, err)
	}
	// The next apply (of a itself, without prune) recovers.
	ch := apply(t, cli, a, false)
	if !ch.Recovered || !ch.Empty() {
		t.Fatalf("recovering apply: %+v", ch)
	}
	heads, _ := cli.Get(ctx, prefix+"/pending")
	if len(heads.Kvs) != 0 {
		t.Fatal("pending record left after a recovering apply")
	}
	enis, _ := cli.Get(ctx, prefix+"/objects/enis/e0")
	if !strings.Contains(string(enis.Kvs[0].Value), "a-0") {
		t.Fatalf("half-written object left: %s", enis.Kvs[0].Value)
	}
	apply(t, cli, b, true)
	next(t, snaps, 10*time.Second, equals(t, canonical(t, b)))
}

// TestWatchResumesAfterRestart: etcd stopped and started on the same
// data: the Source resumes its watch, no full read.
func TestWatchResumesAfterRestart(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	a, b := big(t, 10, "a"), big(t, 10, "bb")
	apply(t, cli, a, true)
	m := controlplane.NewMetrics()
	snaps := startSource(t, cli, m)
	next(t, snaps, 10*time.Second, equals(t, canonical(t, a)))
	testkit.WaitFor(t, 20*time.Second, "connected", func() bool { return m.Stats().Connected })
	srv.Stop()
	testkit.WaitFor(t, 20*time.Second, "disconnected", func() bool { return !m.Stats().Connected })
	srv.Restart()
	apply(t, cli, b, true)
	next(t, snaps, 20*time.Second, equals(t, canonical(t, b)))
	if st := m.Stats(); st.FullReads != 1 {
		t.Errorf("full reads = %d after a restart, want 1 (resumed watch)", st.FullReads)
	}
	testkit.WaitFor(t, 20*time.Second, "connected again", func() bool { return m.Stats().Connected })
}

// TestRereadAfterCompaction: a Source cut off while etcd compacts past
// its revision reads everything again and converges.
func TestRereadAfterCompaction(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	proxy := etcdtest.NewProxy(t, strings.TrimPrefix(srv.Endpoint(), "http://"))
	cfg := srv.Config()
	cfg.Endpoints = []string{"http://" + proxy.Addr}
	pcli, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer pcli.Close()

	a, b, c := big(t, 10, "a"), big(t, 10, "bb"), big(t, 10, "ccc")
	apply(t, cli, a, true)
	m := controlplane.NewMetrics()
	snaps := startSource(t, pcli, m)
	next(t, snaps, 10*time.Second, equals(t, canonical(t, a)))
	proxy.Block()
	apply(t, cli, b, true)
	ch := apply(t, cli, c, true)
	if _, err := cli.Compact(context.Background(), ch.Revision); err != nil {
		t.Fatal(err)
	}
	proxy.Unblock()
	next(t, snaps, 30*time.Second, equals(t, canonical(t, c)))
	if st := m.Stats(); st.FullReads != 2 {
		t.Errorf("full reads = %d, want 2 (one after the compaction)", st.FullReads)
	}
	if m.Errors(controlplane.OpWatch) == 0 {
		t.Error("no watch error counted")
	}
}

// TestRegistration: a registered host is live with its key; UpdateKey
// reaches readers; a host cut off past its TTL disappears (no key) and
// comes back by itself.
func TestRegistration(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	proxy := etcdtest.NewProxy(t, strings.TrimPrefix(srv.Endpoint(), "http://"))
	cfg := srv.Config()
	cfg.Endpoints = []string{"http://" + proxy.Addr}
	hcli, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer hcli.Close()

	top := big(t, 10, "a")
	apply(t, cli, top, true)
	snaps := startSource(t, cli, nil)
	key1 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	key2 := "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
	hostKey := func(name string) func(source.Snapshot) string {
		return func(s source.Snapshot) string {
			for _, h := range s.Topology.Hosts {
				if h.Name == name {
					return h.PublicKey
				}
			}
			return "absent"
		}
	}
	h3 := hostKey("h3")
	hasKey := func(k string) func(source.Snapshot) bool {
		return func(s source.Snapshot) bool { return s.Err == nil && h3(s) == k }
	}
	next(t, snaps, 10*time.Second, hasKey(""))

	m := controlplane.NewMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg, err := controlplane.Register(ctx, hcli, prefix, controlplane.HostRecord{
		Name: "h3", UnderlayIP: netip.MustParseAddr("192.0.2.4"), ListenPort: 51999, PublicKey: key1, MTU: 1450,
	}, &controlplane.RegisterOptions{TTL: 2 * time.Second, Metrics: m, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := next(t, snaps, 10*time.Second, hasKey(key1))
	for _, h := range s.Topology.Hosts {
		if h.Name == "h3" && (h.ListenPort != 51999 || h.MTU != 1450) {
			t.Errorf("h3 = %+v, want the registered port and MTU", h)
		}
	}
	if err := reg.UpdateKey(ctx, key2); err != nil {
		t.Fatal(err)
	}
	next(t, snaps, 10*time.Second, hasKey(key2))
	r, err := controlplane.Get(ctx, cli, prefix, controlplane.KindHosts, "h3")
	if err != nil || len(r.Items) != 1 || !*r.Items[0].Live || r.Items[0].Registration.PublicKey != key2 {
		t.Fatalf("get hosts h3: %+v %v", r, err)
	}

	// Cut off: the lease expires, the host is gone from readers.
	proxy.Block()
	start := time.Now()
	next(t, snaps, 10*time.Second, hasKey(""))
	if d := time.Since(start); d < time.Second {
		t.Errorf("host gone after %v, before its TTL", d)
	}
	// Back: it registers again by itself, with its current key.
	proxy.Unblock()
	next(t, snaps, 20*time.Second, hasKey(key2))
	if m.Errors(controlplane.OpKeepAlive) == 0 {
		t.Error("lost lease not counted")
	}

	// Close revokes at once.
	if err := reg.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	next(t, snaps, 5*time.Second, hasKey(""))
}

// TestTLS: a client with the generated certificate applies; one without
// a certificate is refused.
func TestTLS(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{TLS: true})
	if !strings.HasPrefix(srv.Endpoint(), "https://") {
		t.Fatalf("endpoint %s", srv.Endpoint())
	}
	cli := srv.Client(t)
	apply(t, cli, big(t, 5, "a"), true)

	cfg := srv.Config()
	cfg.CertFile, cfg.KeyFile = "", ""
	bare, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := bare.Get(ctx, prefix+"/commit"); err == nil {
		t.Fatal("a client without a certificate read etcd")
	}
	if _, err := os.Stat(srv.TLS.CAKey); err != nil {
		t.Fatal(err)
	}
}
