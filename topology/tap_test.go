package topology

import (
	"slices"
	"strings"
	"testing"
)

// TestTapENI reads interface_type and tap_owner (SPEC §12): veth by
// default, a tap with or without an owner, and both survive Marshal.
func TestTapENI(t *testing.T) {
	doc := base + `enis:
  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10}
  - {name: a2, host: h1, subnet: blue-1, ip: 10.0.1.11, interface_type: tap}
  - {name: a3, host: h1, subnet: blue-1, ip: 10.0.1.12, interface_type: tap, tap_owner: 1000, tap_multi_queue: true}
  - {name: a4, host: h1, subnet: blue-1, ip: 10.0.1.13, interface_type: veth}
`
	check := func(top *Topology) {
		t.Helper()
		want := map[string]struct {
			typ   string
			owner uint32
		}{"a1": {"", 0}, "a2": {InterfaceTap, 0}, "a3": {InterfaceTap, 1000}, "a4": {"", 0}}
		for name, w := range want {
			e := top.ENIByName(name)
			if e.InterfaceType != w.typ || e.TapOwner != w.owner || e.IsTap() != (w.typ == InterfaceTap) || e.TapMultiQueue != (name == "a3") {
				t.Errorf("%s: interface_type %q tap_owner %d tap_multi_queue %v; want %q %d %v", name, e.InterfaceType, e.TapOwner, e.TapMultiQueue, w.typ, w.owner, name == "a3")
			}
		}
	}
	top := mustParse(t, doc)
	check(top)
	out, err := Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	check(mustParse(t, string(out)))
	if strings.Count(string(out), "interface_type") != 2 {
		t.Errorf("Marshal writes interface_type for veths too:\n%s", out)
	}
}

func TestTapENIInvalid(t *testing.T) {
	tests := []struct{ name, eni, path, msg string }{
		{"unknown type", "interface_type: macvtap", "enis[0].interface_type", `invalid value "macvtap": want veth, tap`},
		{"type not a string", "interface_type: [tap]", "enis[0].interface_type", "expected a string"},
		{"owner without tap", "tap_owner: 1000", "enis[0].tap_owner", "only an ENI with interface_type: tap has a tap owner"},
		{"owner on a veth", "interface_type: veth, tap_owner: 1000", "enis[0].tap_owner", "only an ENI with interface_type: tap"},
		{"owner negative", "interface_type: tap, tap_owner: -1", "enis[0].tap_owner", "-1 is out of range 0..4294967294"},
		{"owner too big", "interface_type: tap, tap_owner: 4294967295", "enis[0].tap_owner", "out of range"},
		{"owner a name", "interface_type: tap, tap_owner: alice", "enis[0].tap_owner", "expected an integer"},
		{"queues without tap", "tap_multi_queue: true", "enis[0].tap_multi_queue", "only an ENI with interface_type: tap has tap queues"},
		{"queues not a bool", "interface_type: tap, tap_multi_queue: 4", "enis[0].tap_multi_queue", "expected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := base + "enis:\n  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10, " + tc.eni + "}\n"
			top, err := Parse([]byte(doc))
			if top != nil {
				t.Fatalf("Parse returned a Topology with errors")
			}
			list := errorList(t, err)
			if len(list) != 1 || list[0].Path != tc.path || !strings.Contains(list[0].Msg, tc.msg) {
				t.Errorf("got %v\nwant one error %s: ...%s...", list, tc.path, tc.msg)
			}
		})
	}
}

// vmENIs has a tap ENI on each host and a veth ENI, for the vms tests.
const vmENIs = base + `enis:
  - {name: t1, host: h1, subnet: blue-1, ip: 10.0.1.10, interface_type: tap}
  - {name: t2, host: h2, subnet: blue-1, ip: 10.0.1.11, interface_type: tap}
  - {name: v1, host: h1, subnet: blue-1, ip: 10.0.1.12}
`

// TestVMs reads vms (SPEC §12, the lab's guests) in both forms, an ENI's
// name and a mapping, and Marshal keeps them.
func TestVMs(t *testing.T) {
	top := mustParse(t, vmENIs+"vms:\n  - t1\n  - {eni: t2}\n")
	want := []VM{{ENI: "t1"}, {ENI: "t2"}}
	if !slices.Equal(top.VMs, want) {
		t.Fatalf("vms %+v, want %+v", top.VMs, want)
	}
	out, err := Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	if again := mustParse(t, string(out)); !slices.Equal(again.VMs, want) {
		t.Errorf("after Marshal vms %+v, want %+v\n%s", again.VMs, want, out)
	}
	if top := mustParse(t, vmENIs); top.VMs != nil {
		t.Errorf("no vms key: vms %+v", top.VMs)
	}
}

func TestVMsInvalid(t *testing.T) {
	tests := []struct{ name, vms, path, msg string }{
		{"unknown eni", "[t9]", "vms[0]", `unknown eni "t9"`},
		{"unknown eni in a mapping", "[{eni: t9}]", "vms[0].eni", `unknown eni "t9"`},
		{"a veth", "[v1]", "vms[0]", "eni v1 is no tap ENI (interface_type: tap): a VM needs a tap"},
		{"two VMs on one tap", "[t1, {eni: t1}]", "vms[1].eni", "eni t1 already has a VM, at vms[0]"},
		{"no eni", "[{}]", "vms[0].eni", `missing required key "eni"`},
		{"unknown key", "[{eni: t1, memory: 512}]", "vms[0].memory", `unknown key "memory"`},
		{"not a list", "t1", "vms", "expected a list"},
		{"a bad name", "[\"t 1\"]", "vms[0]", "must not contain spaces"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			top, err := Parse([]byte(vmENIs + "vms: " + tc.vms + "\n"))
			if top != nil {
				t.Fatalf("Parse returned a Topology with errors")
			}
			list := errorList(t, err)
			if len(list) != 1 || list[0].Path != tc.path || !strings.Contains(list[0].Msg, tc.msg) {
				t.Errorf("got %v\nwant one error %s: ...%s...", list, tc.path, tc.msg)
			}
		})
	}
}
