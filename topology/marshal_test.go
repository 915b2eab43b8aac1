package topology

import (
	"reflect"
	"strings"
	"testing"
)

// tricky exercises values that must survive Marshal: strings that look like
// numbers, booleans and null, protocol numbers, ICMP types, explicit full
// port ranges, an empty egress list and non-default settings everywhere.
const tricky = `version: 1
account_id: 012345678901
tunnel: {preshared_key_file: psk}
hosts:
  - {name: "123", underlay_ip: 192.0.2.1, listen_port: 4500, mtu: 9000, underlay_interface: ens5,
     underlay_allow: [{protocol: udp}, {protocol: 50}, {protocol: all}, {protocol: tcp, port: 0}]}
  - {name: "true", underlay_ip: 192.0.2.2, public_key: "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="}
vpcs:
  - name: "null"
    vni: 16777215
    cidr: 172.16.0.0/12
    subnets: [{name: "1", cidr: 172.16.0.0/30, network_acl: acl}]
security_groups:
  - name: g
    vpc: "null"
    ingress:
      - {protocol: icmp, icmp_type: 3, icmp_code: 4, cidr: 0.0.0.0/0}
      - {protocol: tcp, from_port: 0, to_port: 65535, cidr: 10.0.0.0/8}
      - {protocol: 132, source_group: g}
    egress: []
  - {name: open, vpc: "null"}
network_acls:
  - name: acl
    vpc: "null"
    egress:
      - {rule_number: 32766, action: deny, protocol: udp, from_port: 53, to_port: 53, cidr: 0.0.0.0/0}
      - {rule_number: 1, action: allow, protocol: icmp, icmp_type: 0, cidr: 172.16.0.0/12}
enis:
  - {name: e, host: "123", subnet: "1", ip: 172.16.0.2, source_dest_check: false,
     mac: "0A-BB-CC-DD-EE-FF", interface: tap0, security_groups: [g, open], instance: i-0abc,
     max_connections: 5000}
flow_logs:
  - {name: f1, resource: "eni:e", traffic_type: REJECT, aggregation_interval: 1500ms,
     format: "${version} ${vni}", destination: "ipfix+udp://[::1]:4739"}
  - {name: f2, resource: "subnet:1", aggregation_interval: 2m, destination: "jsonl+file://flows.jsonl"}
mirror_filters:
  - name: mf
    ingress:
      - {rule_number: 7, action: reject, protocol: udp, source_cidr: 10.0.0.0/8,
         source_port_range: "1-1024", destination_port_range: "53"}
      - {rule_number: 3, action: accept, protocol: tcp, destination_port_range: 0-65535}
  - {name: none}
mirror_sessions:
  - {name: m, source_eni: e, filter: mf, session_number: 32766, virtual_network_id: 1, target: {pcap: "/tmp/m.pcap"}}
`

func TestMarshalRoundTrip(t *testing.T) {
	docs := map[string]string{
		"example": "", "minimal": "", "tricky": tricky, "base": baseGroups, "enis": baseMirror,
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			var want *Topology
			if doc == "" {
				want = mustLoad(t, name+".yaml")
			} else {
				want = mustParse(t, doc)
			}
			out, err := Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Marshal(t)): %v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip changed the topology:\ngot  %+v\nwant %+v\n%s", got, want, out)
			}
		})
	}
}

func TestMarshalEgress(t *testing.T) {
	top := mustParse(t, tricky)
	out, err := Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "    egress: []\n") {
		t.Errorf("egress: [] was not written:\n%s", s)
	}
	if strings.Count(s, "egress:") != 2 { // group g and network acl acl, not group open
		t.Errorf("want egress only for group g and acl acl:\n%s", s)
	}
	if !strings.Contains(s, `account_id: "012345678901"`) {
		t.Errorf("account_id lost its leading zero or quotes:\n%s", s)
	}
}

// TestMarshalFilledKeys is what lab up does: fill in generated keys and
// write the file back for the daemons.
func TestMarshalFilledKeys(t *testing.T) {
	top := mustLoad(t, "minimal.yaml")
	if err := top.RequireKeys("h1"); err == nil {
		t.Fatal("RequireKeys: want an error before keys are filled in")
	}
	for i := range top.Hosts {
		top.Hosts[i].PublicKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	}
	out, err := Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.RequireKeys("h1"); err != nil {
		t.Errorf("RequireKeys after filling in keys: %v", err)
	}
}

func TestMarshalNil(t *testing.T) {
	if _, err := Marshal(nil); err == nil {
		t.Error("Marshal(nil): want an error")
	}
}
