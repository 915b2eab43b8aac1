package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
	"github.com/vpcd/vpcd/topology"
)

// tcxProgram is one program at an interface's tcx ingress, in run order.
type tcxProgram struct {
	ID   ebpf.ProgramID
	Name string
}

// tcxIngress lists the programs at ifname's tcx ingress in a host's
// namespace, first first, and whether the interface is up.
func tcxIngress(t *testing.T, l *lab.Lab, host, ifname string) (progs []tcxProgram, up bool) {
	t.Helper()
	err := l.Do(lab.Host, host, func() error {
		iface, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		up = iface.Attrs().Flags&net.FlagUp != 0
		res, err := link.QueryPrograms(link.QueryOptions{Target: iface.Attrs().Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("query tcx ingress of %s: %w", ifname, err)
		}
		for _, p := range res.Programs {
			tp := tcxProgram{ID: p.ID}
			if prog, err := ebpf.NewProgramFromID(p.ID); err == nil {
				if info, err := prog.Info(); err == nil {
					tp.Name = info.Name
				}
				prog.Close()
			}
			progs = append(progs, tp)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("host %s: %v", host, err)
	}
	return progs, up
}

// firstIs reports whether the first program is named name.
func firstIs(progs []tcxProgram, name string) bool {
	return len(progs) > 0 && progs[0].Name == name
}

// TestOrderingAndRemoval covers SPEC §10's "Ordering", "Removal fails
// closed" and "Integrity repair restores first place" on one host.
func TestOrderingAndRemoval(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping", "ip")
	l := upLab(t, "h2o", "ordering.yaml")
	if !ping(t, l, "o-x1", "10.4.1.11", 2) {
		t.Fatal("no traffic between the ENIs after lab up")
	}

	t.Run("a foreign tcx program put first is moved behind vpcd's and counted until then", func(t *testing.T) {
		t.Run("ENI", func(t *testing.T) { foreignFirst(t, l, "vpc-o-x1", "from_workload") })
		t.Run("tunnel", func(t *testing.T) { foreignFirst(t, l, "wg-a", "from_tunnel") })
	})

	t.Run("a new ENI's interface carries nothing until its program is attached", func(t *testing.T) {
		p := editedTopology(t, "ordering.yaml", "  - {name: o-x2,",
			"  - {name: o-x3, host: a, subnet: o1, ip: 10.4.1.12, security_groups: [order-open]}\n  - {name: o-x2,")
		// With the daemon stopped, the lab builds the new ENI and
		// nobody attaches its program yet.
		resume := pauseDaemon(t, l, "a")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Apply(ctx, p); err != nil {
			t.Fatalf("apply: %v", err)
		}
		progs, up := tcxIngress(t, l, "a", "vpc-o-x3")
		if up {
			t.Fatalf("vpc-o-x3 is up before any program is attached to it (programs %v)", progs)
		}
		if !pingNone(t, l, "o-x3", "10.4.1.10", 2) {
			t.Fatal("the new ENI reached o-x1 with no program on its interface")
		}
		resume()
		if !testkit.Eventually(10*time.Second, func() bool {
			progs, up = tcxIngress(t, l, "a", "vpc-o-x3")
			return up
		}) {
			t.Fatal("the daemon did not bring vpc-o-x3 up within 10 s")
		}
		if !firstIs(progs, "from_workload") {
			t.Fatalf("vpc-o-x3 is up without vpcd's program first: %v", progs)
		}
		if !testkit.Eventually(5*time.Second, func() bool { return ping(t, l, "o-x3", "10.4.1.10", 1) }) {
			t.Fatal("the new ENI does not reach o-x1")
		}
	})

	t.Run("a removed ENI's interface drops everything as unknown_eni until it is gone", func(t *testing.T) {
		topo, err := topology.Load(l.TopologyPath())
		if err != nil {
			t.Fatal(err)
		}
		topo.ENIs = slices.DeleteFunc(topo.ENIs, func(e topology.ENI) bool { return e.Name == "o-x2" })
		data, err := topology.Marshal(topo)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(l.TopologyPath(), data, 0o644); err != nil {
			t.Fatal(err)
		}
		reloadNow(t, l.SocketPath("a"))

		pin := filepath.Join(l.BPFFSDir("a"), "links", "eni-vpc-o-x2")
		if _, err := os.Stat(pin); err != nil {
			t.Errorf("the removed ENI's link is gone while its interface exists: %v", err)
		}
		if progs, _ := tcxIngress(t, l, "a", "vpc-o-x2"); !firstIs(progs, "from_workload") {
			t.Errorf("the removed ENI's interface runs %v, want vpcd's program", progs)
		}
		// Give the host's stack every chance to answer: the workload's
		// gateway address on the host side of the veth.
		mustRun(t, l, lab.Host, "a", "ip", "addr", "add", "10.4.1.1/24", "dev", "vpc-o-x2")
		mustRun(t, l, lab.ENI, "o-x2", "ip", "neigh", "flush", "dev", "eth0")
		before := drops(t, l, "a")["unknown_eni"]
		if !pingNone(t, l, "o-x2", "10.4.1.1", 3) {
			t.Fatal("the host's stack answered a removed ENI")
		}
		if !pingNone(t, l, "o-x2", "10.4.1.10", 2) {
			t.Fatal("a removed ENI still reaches o-x1")
		}
		var after uint64
		if !testkit.Eventually(5*time.Second, func() bool {
			after = drops(t, l, "a")["unknown_eni"]
			return after >= before+3
		}) {
			t.Fatalf("unknown_eni drops went from %d to %d; want at least 3 more", before, after)
		}
		t.Logf("%d frames of the removed ENI dropped as unknown_eni", after-before)

		// A daemon that starts again keeps it closed: it adopts the
		// link its predecessor left for an ENI it does not know.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Restart(ctx, "a"); err != nil {
			t.Fatalf("restart the daemon: %v", err)
		}
		if progs, _ := tcxIngress(t, l, "a", "vpc-o-x2"); !firstIs(progs, "from_workload") {
			t.Errorf("after a restart the removed ENI's interface runs %v, want vpcd's program", progs)
		}
		mustRun(t, l, lab.ENI, "o-x2", "ip", "neigh", "flush", "dev", "eth0")
		if !pingNone(t, l, "o-x2", "10.4.1.1", 2) {
			t.Fatal("after a restart the host's stack answered a removed ENI")
		}

		// Once the interface is gone, its link goes, and nothing is
		// counted as an integrity fault.
		faults := integrityFailures(t, l, "a", "interface")
		mustRun(t, l, lab.Host, "a", "ip", "link", "del", "vpc-o-x2")
		if !testkit.Eventually(5*time.Second, func() bool {
			_, err := os.Stat(pin)
			return os.IsNotExist(err)
		}) {
			t.Fatal("the link of the removed ENI stayed pinned 5 s after its interface was deleted")
		}
		if n := integrityFailures(t, l, "a", "interface"); n != faults {
			t.Errorf("the removed ENI's deleted interface was counted as an integrity fault (%v → %v)", faults, n)
		}
		if l.Topology().ENIByName("o-x3") != nil && !ping(t, l, "o-x1", "10.4.1.12", 2) {
			t.Fatal("the remaining ENIs lost traffic")
		}
	})
}

// foreignFirst puts a foreign program in front of vpcd's program ours at
// ifname's tcx ingress on host a and checks that the daemon makes its
// program first again within 5 s, counts the fault as not_first, and
// stops counting once repaired.
func foreignFirst(t *testing.T, l *lab.Lab, ifname, ours string) {
	// A program that passes every packet on (TCX_NEXT), attached
	// in front of vpcd's as another agent on the host could.
	var foreign link.Link
	var foreignID ebpf.ProgramID
	err := l.Do(lab.Host, "a", func() error {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "h2_foreign", Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
		})
		if err != nil {
			return fmt.Errorf("load the foreign program: %w", err)
		}
		defer prog.Close()
		info, _ := prog.Info()
		foreignID, _ = info.ID()
		iface, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		foreign, err = link.AttachTCX(link.TCXOptions{Interface: iface.Attrs().Index, Program: prog,
			Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		return err
	})
	if err != nil {
		t.Fatalf("attach a foreign program first: %v", err)
	}
	defer foreign.Close()
	before := integrityFailures(t, l, "a", "not_first")
	if progs, _ := tcxIngress(t, l, "a", ifname); !firstIs(progs, "h2_foreign") {
		t.Fatalf("the foreign program is not first after attaching it at the head: %v", progs)
	}
	start := time.Now()
	var progs []tcxProgram
	if !testkit.Eventually(5*time.Second, func() bool {
		progs, _ = tcxIngress(t, l, "a", ifname)
		return firstIs(progs, ours)
	}) {
		t.Fatalf("vpcd's program is not first again 5 s after a foreign one was put in front: %v", progs)
	}
	t.Logf("first again %.1fs after the foreign program was put in front: %v", time.Since(start).Seconds(), progs)
	if len(progs) != 2 || progs[1].ID != foreignID {
		t.Errorf("want vpcd's program, then the foreign one (%d): %v", foreignID, progs)
	}
	counted := integrityFailures(t, l, "a", "not_first")
	if counted <= before {
		t.Errorf("the displaced program was not counted as not_first (%v before, %v after)", before, counted)
	}
	// Repaired means no longer counted: watch three checks (every 2 s).
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if n := integrityFailures(t, l, "a", "not_first"); n != counted {
			t.Fatalf("not_first went from %v to %v after the repair: the repair did not hold", counted, n)
		}
		time.Sleep(200 * time.Millisecond) // paces the checks of a steady state
	}
	if n := integrityFailures(t, l, "a", "repair_failed"); n != 0 {
		t.Errorf("%v failed repairs counted", n)
	}
	if !ping(t, l, "o-x1", "10.4.1.11", 2) {
		t.Fatal("no traffic after the repair")
	}
}
