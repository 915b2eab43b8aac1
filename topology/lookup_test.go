package topology

import (
	"net/netip"
	"testing"
)

func names[T any](list []*T, name func(*T) string) []string {
	var out []string
	for _, x := range list {
		out = append(out, name(x))
	}
	return out
}

func eniName(e *ENI) string               { return e.Name }
func hostName(h *Host) string             { return h.Name }
func sessionName(s *MirrorSession) string { return s.Name }

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLookups(t *testing.T) {
	top := mustParse(t, baseMirror+`flow_logs:
  - {name: fv, resource: 'vpc:blue', destination: stdout}
  - {name: fs, resource: 'subnet:red-1', destination: stdout}
  - {name: fe, resource: 'eni:a2', destination: stdout}
mirror_sessions:
  - {name: late, source_eni: a1, filter: all, session_number: 9, virtual_network_id: 1, target: {eni: a2}}
  - {name: early, source_eni: a1, filter: all, session_number: 2, virtual_network_id: 1, target: {pcap: x.pcap}}
  - {name: other, source_eni: a2, filter: all, session_number: 1, virtual_network_id: 1, target: {pcap: y.pcap}}
`)
	if top.HostByName("h2") != &top.Hosts[1] || top.HostByName("nope") != nil {
		t.Error("HostByName")
	}
	if top.VPCByName("red") != &top.VPCs[1] || top.VPCByVNI(1001) != &top.VPCs[0] || top.VPCByName("x") != nil {
		t.Error("VPCByName / VPCByVNI")
	}
	if s, v := top.SubnetByName("red-1"); s != &top.VPCs[1].Subnets[0] || v != &top.VPCs[1] {
		t.Error("SubnetByName")
	}
	if s, v := top.SubnetByName("x"); s != nil || v != nil {
		t.Error("SubnetByName of an unknown subnet")
	}
	if got := names(top.ENIsOnHost("h2"), eniName); !equal(got, []string{"b1", "a2"}) {
		t.Errorf("ENIsOnHost(h2) = %v", got)
	}
	if got := names(top.Peers("h1"), hostName); !equal(got, []string{"h2"}) {
		t.Errorf("Peers(h1) = %v", got)
	}
	if got := names(top.ENIsInVPC("blue"), eniName); !equal(got, []string{"a1", "a2"}) {
		t.Errorf("ENIsInVPC(blue) = %v", got)
	}
	for f, want := range map[string][]string{"fv": {"a1", "a2"}, "fs": {"b1"}, "fe": {"a2"}} {
		if got := names(top.FlowLogENIs(top.FlowLogByName(f)), eniName); !equal(got, want) {
			t.Errorf("FlowLogENIs(%s) = %v, want %v", f, got, want)
		}
	}
	if got := names(top.MirrorSessionsOf("a1"), sessionName); !equal(got, []string{"early", "late"}) {
		t.Errorf("MirrorSessionsOf(a1) = %v", got)
	}
	a1 := top.ENIByName("a1")
	if top.ENIVPC(a1).Name != "blue" || top.ENIPrefix(a1) != netip.MustParsePrefix("10.0.1.10/24") ||
		top.ENIGateway(a1) != netip.MustParseAddr("10.0.1.1") {
		t.Errorf("ENI helpers: %v %v %v", top.ENIVPC(a1), top.ENIPrefix(a1), top.ENIGateway(a1))
	}
	if top.MirrorFilterByName("all") == nil || top.MirrorSessionByName("other") == nil || top.ENIByName("zz") != nil {
		t.Error("MirrorFilterByName / MirrorSessionByName / ENIByName")
	}
}

func TestSubnetAddresses(t *testing.T) {
	s := Subnet{CIDR: netip.MustParsePrefix("10.0.4.0/22")}
	if s.Gateway() != netip.MustParseAddr("10.0.4.1") || s.Broadcast() != netip.MustParseAddr("10.0.7.255") {
		t.Errorf("gateway %s broadcast %s", s.Gateway(), s.Broadcast())
	}
	for ip, want := range map[string]string{
		"10.0.4.0": "network address", "10.0.4.1": "gateway", "10.0.7.255": "broadcast address",
		"10.0.4.2": "", "10.0.4.3": "", "10.0.5.0": "",
	} {
		if got := s.Reserved(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Reserved(%s) = %q, want %q", ip, got, want)
		}
	}
}

func TestRequireKeys(t *testing.T) {
	top := mustParse(t, `version: 1
hosts:
  - {name: h1, underlay_ip: 192.0.2.1}
  - {name: h2, underlay_ip: 192.0.2.2, public_key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
  - {name: h3, underlay_ip: 192.0.2.3}
`)
	if err := top.RequireKeys("h3"); err == nil || err.Error() != "hosts[0].public_key: host h1 has no public key: run needs the key of every peer" {
		t.Errorf("RequireKeys(h3) = %v", err)
	}
	if err := top.RequireKeys("h2"); len(errorList(t, err)) != 2 {
		t.Errorf("RequireKeys(h2) = %v, want two errors", err)
	}
	if err := top.RequireKeys("h9"); err == nil || errorList(t, err)[0].Path != "hosts" {
		t.Errorf("RequireKeys(h9) = %v, want an unknown host error", err)
	}
}

func TestFlowLogHelpers(t *testing.T) {
	f := FlowLog{Format: "${srcaddr}  ${vni}"}
	if got := f.Fields(); !equal(got, []string{"srcaddr", "vni"}) {
		t.Errorf("Fields = %v", got)
	}
	if got := (&FlowLog{Format: "default"}).Fields(); len(got) != 14 || got[0] != "version" || got[13] != "log-status" {
		t.Errorf("default Fields = %v", got)
	}
	for dest, want := range map[string][2]string{
		"stdout":                     {DestStdout, ""},
		"file:///var/log/{host}.log": {DestFile, "/var/log/{host}.log"},
		"jsonl+file://flows.jsonl":   {DestJSONL, "flows.jsonl"},
		"ipfix+udp://127.0.0.1:4739": {DestIPFIX, "127.0.0.1:4739"},
	} {
		kind, target, err := SplitDestination(dest)
		if err != nil || kind != want[0] || target != want[1] {
			t.Errorf("SplitDestination(%q) = %q %q %v", dest, kind, target, err)
		}
	}
	for _, dest := range []string{"", "file://", "udp://x:1", "ipfix+udp://x:0", "ipfix+udp://:99", "stdout:"} {
		if _, _, err := SplitDestination(dest); err == nil {
			t.Errorf("SplitDestination(%q): want an error", dest)
		}
	}
	if DefaultInterface("abcdefghijklmnop") != "vpc-abcdefghijk" || DefaultInterface("ééééééé") != "vpc-ééééé" {
		t.Errorf("DefaultInterface = %q, %q", DefaultInterface("abcdefghijklmnop"), DefaultInterface("ééééééé"))
	}
}
