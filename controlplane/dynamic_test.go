package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/controlplane/etcdtest"
	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/topology"
)

// dynTopology has a /27 subnet: 32 addresses, of which .4 to .30 can be
// given (27), one of them (.5) to a file's ENI.
const dynTopology = `
version: 1
hosts:
  - {name: h1, underlay_ip: 192.0.2.1}
  - {name: h2, underlay_ip: 192.0.2.2}
vpcs:
  - name: v
    vni: 7
    cidr: 10.1.0.0/16
    subnets:
      - {name: s, cidr: 10.1.0.0/27}
security_groups:
  - name: web
    vpc: v
    ingress: [{protocol: tcp, from_port: 80, to_port: 80, cidr: 0.0.0.0/0}]
enis:
  - {name: e1, host: h1, subnet: s, ip: 10.1.0.5}
`

func dyn(name, host string, groups ...string) controlplane.DynamicENI {
	return controlplane.DynamicENI{
		ENI:        topology.ENI{Name: name, Host: host, Subnet: "s", SecurityGroups: groups, Interface: "vc" + name},
		Attachment: controlplane.Attachment{Network: "net", ContainerID: "c-" + name, IfName: "eth0"},
	}
}

func TestDynamicENIs(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top := parse(t, dynTopology)
	apply(t, cli, top, false)
	snaps := startSource(t, cli, nil)

	// The lowest free address: .4 (the first four are reserved).
	d, err := controlplane.CreateDynamicENI(ctx, cli, prefix, dyn("a", "h1", "web"))
	if err != nil || d.IP != netip.MustParseAddr("10.1.0.4") || d.CIDR.String() != "10.1.0.0/27" {
		t.Fatalf("first: %+v, %v", d, err)
	}
	// Every reader sees it as an ordinary ENI, with its default MAC.
	next(t, snaps, 10*time.Second, func(s source.Snapshot) bool {
		e := s.Topology.ENIByName("a")
		return e != nil && e.IP == d.IP && e.MAC.String() == "02:00:0a:01:00:04" && e.Interface == "vca"
	})
	// A repeated ADD gets the same ENI; another owner of the name is refused.
	if again, err := controlplane.CreateDynamicENI(ctx, cli, prefix, dyn("a", "h1", "web")); err != nil || again.IP != d.IP {
		t.Fatalf("again: %+v, %v", again, err)
	}
	other := dyn("a", "h2")
	other.Attachment.ContainerID = "x"
	if _, err := controlplane.CreateDynamicENI(ctx, cli, prefix, other); !errors.Is(err, controlplane.ErrNameTaken) {
		t.Fatalf("name of another: %v", err)
	}
	for _, c := range []struct {
		e    controlplane.DynamicENI
		want error
	}{
		{controlplane.DynamicENI{ENI: topology.ENI{Name: "b", Host: "h1", Subnet: "nope", Interface: "vcb"}}, controlplane.ErrUnknownSubnet},
		{dyn("b", "h1", "nope"), controlplane.ErrUnknownGroup},
	} {
		if _, err := controlplane.CreateDynamicENI(ctx, cli, prefix, c.e); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.e, err, c.want)
		}
	}

	// Two hosts racing: every ENI gets its own address, the lowest ones,
	// and the 26th finds the subnet full.
	var wg sync.WaitGroup
	ips := make([]netip.Addr, 25)
	errs := make([]error, 25)
	for i := range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := []string{"h1", "h2"}[i%2]
			r, err := controlplane.CreateDynamicENI(ctx, cli, prefix, dyn(fmt.Sprintf("p%d", i), host))
			ips[i], errs[i] = r.IP, err
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{d.IP: true, netip.MustParseAddr("10.1.0.5"): true}
	for i := range 25 {
		if errs[i] != nil {
			t.Fatalf("p%d: %v", i, errs[i])
		}
		if seen[ips[i]] || ips[i].Less(netip.MustParseAddr("10.1.0.6")) || netip.MustParseAddr("10.1.0.30").Less(ips[i]) {
			t.Fatalf("p%d got %v twice or reserved", i, ips[i])
		}
		seen[ips[i]] = true
	}
	if !seen[netip.MustParseAddr("10.1.0.30")] || seen[netip.MustParseAddr("10.1.0.31")] {
		t.Errorf("addresses given: %v", seen)
	}
	if _, err := controlplane.CreateDynamicENI(ctx, cli, prefix, dyn("full", "h1")); !errors.Is(err, controlplane.ErrSubnetFull) {
		t.Fatalf("full subnet: %v", err)
	}
	list, err := controlplane.ListDynamicENIs(ctx, cli, prefix, "h2")
	if err != nil || len(list) != 12 || list[0].Attachment.Network != "net" || list[0].CIDR.String() != "10.1.0.0/27" {
		t.Fatalf("h2's dynamic ENIs: %d, %v", len(list), err)
	}

	// apply --prune keeps them; a file's ENI is never deleted as dynamic.
	apply(t, cli, top, true)
	if list, _ := controlplane.ListDynamicENIs(ctx, cli, prefix, ""); len(list) != 26 {
		t.Fatalf("after apply --prune: %d dynamic ENIs", len(list))
	}
	if _, _, err := controlplane.DeleteDynamicENI(ctx, cli, prefix, "e1"); err == nil {
		t.Fatal("deleted a file's ENI")
	}

	// Delete frees the address (the lowest again), twice is fine.
	if ok, _, err := controlplane.DeleteDynamicENI(ctx, cli, prefix, "a"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, _, err := controlplane.DeleteDynamicENI(ctx, cli, prefix, "a"); ok || err != nil {
		t.Fatalf("delete again: %v %v", ok, err)
	}
	next(t, snaps, 10*time.Second, func(s source.Snapshot) bool { return s.Topology.ENIByName("a") == nil })
	if r, err := controlplane.CreateDynamicENI(ctx, cli, prefix, dyn("c", "h2")); err != nil || r.IP != d.IP {
		t.Fatalf("after delete: %+v, %v", r, err)
	}
}

// TestMirrorSessionOfDynamicENI: a file may name a container's ENI once it
// exists (here as a mirror session's source), apply keeps that ENI the
// container's, and deleting the ENI takes the session with it so the state
// stays valid.
func TestMirrorSessionOfDynamicENI(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply(t, cli, parse(t, dynTopology), false)
	snaps := startSource(t, cli, nil)
	d, err := controlplane.CreateDynamicENI(ctx, cli, prefix, dyn("a", "h1", "web"))
	if err != nil {
		t.Fatal(err)
	}
	file := dynTopology + `
mirror_filters:
  - name: all
    ingress: [{rule_number: 1, action: accept, protocol: all, source_cidr: 0.0.0.0/0, destination_cidr: 0.0.0.0/0}]
mirror_sessions:
  - {name: m, source_eni: a, filter: all, session_number: 1, virtual_network_id: 9, target: {eni: e1}}
`
	if _, err := topology.Parse([]byte(file)); err == nil {
		t.Fatal("the file alone validates; the test needs one that names the container's ENI")
	}
	merged, added, err := controlplane.WithDynamicENIs(ctx, cli, prefix, []byte(file))
	if err != nil || added != 1 {
		t.Fatalf("WithDynamicENIs: %d added, %v", added, err)
	}
	ch := apply(t, cli, parse(t, string(merged)), true)
	if len(ch.Created) != 2 || len(ch.Changed)+len(ch.Deleted) != 0 {
		t.Fatalf("apply: %+v (want the filter and the session created, the ENI unchanged)", ch)
	}
	next(t, snaps, 10*time.Second, func(s source.Snapshot) bool {
		return s.Err == nil && s.Topology.MirrorSessionByName("m") != nil
	})
	list, err := controlplane.ListDynamicENIs(ctx, cli, prefix, "h1")
	if err != nil || len(list) != 1 || list[0].Attachment.ContainerID != "c-a" || list[0].IP != d.IP {
		t.Fatalf("the ENI after apply: %+v, %v", list, err)
	}
	ok, deps, err := controlplane.DeleteDynamicENI(ctx, cli, prefix, "a")
	if !ok || err != nil || len(deps) != 1 || deps[0] != "mirror-sessions/m" {
		t.Fatalf("delete: %v %v %v", ok, deps, err)
	}
	next(t, snaps, 10*time.Second, func(s source.Snapshot) bool {
		if s.Err != nil {
			t.Fatalf("the state after the delete does not validate: %v", s.Err)
		}
		return s.Topology.ENIByName("a") == nil && s.Topology.MirrorSessionByName("m") == nil
	})
}
