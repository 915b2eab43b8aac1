package dataplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/internal/testkit"
)

// TestAdoptsLinksOfOlderProgramNames: a daemon of an older version left its
// links pinned, running programs under the names they had then (eni_ingress,
// eni_xdp, underlay_filter_tc). A daemon of this version takes each link
// over in place, by its pin, whatever its program is called: the same link
// then runs this version's program, alone and first on its hook, and the
// integrity check and repair know it.
func TestAdoptsLinksOfOlderProgramNames(t *testing.T) {
	d := testDatapath(t)
	defer testkit.FreshNamespace(t)()

	ifindex := map[string]int{}
	for _, pair := range [][2]string{{"hc-eni", "hc-eni-p"}, {"hc-tap", "hc-tap-p"}, {"hc-ul", "hc-ul-p"}} {
		va := netlink.NewLinkAttrs()
		va.Name = pair[0]
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: va, PeerName: pair[1]}); err != nil {
			t.Fatalf("veth %s: %v", pair[0], err)
		}
		for _, n := range pair {
			l, err := netlink.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			ifindex[n] = l.Attrs().Index
		}
	}

	// What the older daemon left: programs that pass everything, under
	// their old names, attached and pinned where that daemon pinned them.
	old := func(name string, typ ebpf.ProgramType, verdict int32) *ebpf.Program {
		var at ebpf.AttachType
		if typ == ebpf.XDP {
			at = ebpf.AttachXDP // as SEC("xdp") loads
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: typ, AttachType: at, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, verdict), asm.Return()}})
		if err != nil {
			t.Fatalf("load %s: %v", name, err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	pin := func(pinName string, l link.Link, err error) link.ID {
		if err != nil {
			t.Fatalf("attach for %s: %v", pinName, err)
		}
		defer l.Close()
		if err := os.MkdirAll(filepath.Dir(d.linkPin(pinName)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := l.Pin(d.linkPin(pinName)); err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	const tcOK, xdpPass = 0, 2
	ids := map[string]link.ID{}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex["hc-eni"], Program: old("eni_ingress", ebpf.SchedCLS, tcOK), Attach: ebpf.AttachTCXIngress})
	ids["eni-hc-eni"] = pin("eni-hc-eni", l, err)
	l, err = link.AttachXDP(link.XDPOptions{Interface: ifindex["hc-tap"], Program: old("eni_xdp", ebpf.XDP, xdpPass)})
	ids["eni-hc-tap"] = pin("eni-hc-tap", l, err)
	l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex["hc-ul"], Program: old("underlay_filte", ebpf.SchedCLS, tcOK), Attach: ebpf.AttachTCXIngress})
	ids["underlay-tcx"] = pin("underlay-tcx", l, err)

	if _, err := d.AttachENI("hc-eni", HookTCX); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AttachENI("hc-tap", HookXDP); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AttachUnderlay("hc-ul", HookTCX); err != nil {
		t.Fatal(err)
	}

	for pinName, want := range map[string]string{"eni-hc-eni": "from_workload", "eni-hc-tap": "from_workload_xdp", "underlay-tcx": "from_underlay"} {
		a := d.attached[pinName]
		if a.Program != want {
			t.Errorf("%s runs %q, want %q", pinName, a.Program, want)
		}
		l, err := link.LoadPinnedLink(d.linkPin(pinName), nil)
		if err != nil {
			t.Fatalf("%s: pin gone: %v", pinName, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		if info.ID != ids[pinName] {
			t.Errorf("%s: link %d replaced by %d, want the old link updated in place", pinName, ids[pinName], info.ID)
		}
		if ebpf.ProgramID(info.Program) != a.ProgramID {
			t.Errorf("%s: link runs program %d, want %d (%s)", pinName, info.Program, a.ProgramID, want)
		}
	}
	for _, ifname := range []string{"hc-eni", "hc-ul"} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex[ifname], Attach: ebpf.AttachTCXIngress})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Programs) != 1 {
			t.Errorf("%s: %d programs at tcx ingress, want ours alone", ifname, len(res.Programs))
		}
	}
	if probs := d.CheckIntegrity(); len(probs) != 0 {
		t.Errorf("integrity problems after adoption: %+v", probs)
	}
	for _, a := range d.Attachments() {
		if err := d.Repair(IntegrityProblem{Attachment: a, Reason: "detached"}); err != nil {
			t.Errorf("repair %s on %s: %v", a.Program, a.Interface, err)
		}
	}
}
