package topology

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// base is a valid topology the table below adds mistakes to: two hosts and
// two VPCs with the same CIDR.
const base = `version: 1
hosts:
  - {name: h1, underlay_ip: 192.0.2.1}
  - {name: h2, underlay_ip: 192.0.2.2}
vpcs:
  - name: blue
    vni: 1001
    cidr: 10.0.0.0/16
    subnets:
      - {name: blue-1, cidr: 10.0.1.0/24}
  - name: red
    vni: 1002
    cidr: 10.0.0.0/16
    subnets:
      - {name: red-1, cidr: 10.0.1.0/24}
`

// baseGroups adds a security group and a network ACL to each VPC of base.
const baseGroups = base + `security_groups:
  - {name: blue-web, vpc: blue}
  - {name: red-web, vpc: red}
network_acls:
  - {name: blue-acl, vpc: blue}
  - {name: red-acl, vpc: red}
`

// baseENIs adds one ENI to each VPC of base (the same address twice).
const baseENIs = base + `enis:
  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10}
  - {name: b1, host: h2, subnet: red-1, ip: 10.0.1.10}
`

// baseMirror adds a mirror filter to baseENIs.
const baseMirror = baseENIs + `  - {name: a2, host: h2, subnet: blue-1, ip: 10.0.1.11}
mirror_filters:
  - {name: all}
`

// baseHost is a document with one host and whatever follows.
const baseHost = "version: 1\nhosts:\n  - name: h1\n    underlay_ip: 192.0.2.1\n"

func TestBasesAreValid(t *testing.T) {
	for _, doc := range []string{base, baseGroups, baseENIs, baseMirror, baseHost} {
		mustParse(t, doc)
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		path string
		msg  string
	}{
		// The document itself.
		{"syntax error", "version: 1\nhosts: [\n", "(root)", "invalid YAML: line"},
		{"tab indentation", "version: 1\nhosts:\n\t- name: h1\n", "(root)", "invalid YAML"},
		{"empty document", "# nothing\n", "(root)", "empty document"},
		{"two documents", base + "---\nversion: 1\n", "(root)", "more than one YAML document"},
		{"root is a list", "- 1\n", "(root)", "expected a mapping, got a list"},
		{"unknown top-level key", base + "vpc: []\n", "vpc", `unknown key "vpc"`},
		{"duplicate key", base + "version: 1\n", "version", `duplicate key "version" (first at line 1)`},
		{"version 2", strings.Replace(base, "version: 1", "version: 2", 1), "version", "unsupported version 2: want 1"},
		{"version missing", strings.Replace(base, "version: 1\n", "", 1), "version", `missing required key "version"`},
		{"version string", strings.Replace(base, "version: 1", `version: "1"`, 1), "version", `expected an integer, got string "1"`},

		// Hosts.
		{"no hosts key", "version: 1\n", "hosts", `missing required key "hosts"`},
		{"empty hosts", "version: 1\nhosts: []\n", "hosts", "at least one host is required"},
		{"hosts not a list", "version: 1\nhosts: h1\n", "hosts", `expected a list, got string "h1"`},
		{"host not a mapping", "version: 1\nhosts: [h1]\n", "hosts[0]", `expected a mapping, got string "h1"`},
		{"host unknown key", baseHost + "    colour: red\n", "hosts[0].colour", `unknown key "colour"`},
		{"host name missing", "version: 1\nhosts:\n  - underlay_ip: 192.0.2.1\n", "hosts[0].name", `missing required key "name"`},
		{"host name empty", "version: 1\nhosts:\n  - {name: '', underlay_ip: 192.0.2.1}\n", "hosts[0].name", "must not be empty"},
		{"host name with space", "version: 1\nhosts:\n  - {name: 'h 1', underlay_ip: 192.0.2.1}\n", "hosts[0].name", `name "h 1" must not contain spaces`},
		{"duplicate host", strings.Replace(base, "name: h2", "name: h1", 1), "hosts[1].name", "host h1 is already defined at hosts[0]"},
		{"duplicate underlay ip", strings.Replace(base, "192.0.2.2", "192.0.2.1", 1), "hosts[1].underlay_ip", "192.0.2.1 is already used by host h1"},
		{"underlay ipv6", strings.Replace(base, "192.0.2.2", "2001:db8::2", 1), "hosts[1].underlay_ip", "IPv6 address 2001:db8::2 is not supported"},
		{"underlay ip garbage", strings.Replace(base, "192.0.2.2", "192.0.2.256", 1), "hosts[1].underlay_ip", `invalid IPv4 address "192.0.2.256"`},
		{"underlay ip multicast", strings.Replace(base, "192.0.2.2", "224.0.0.1", 1), "hosts[1].underlay_ip", "224.0.0.1 is not a unicast address"},
		{"public key short", baseHost + "    public_key: AAAA\n", "hosts[0].public_key", `invalid WireGuard key "AAAA": 3 bytes, want 32`},
		{"public key not base64", baseHost + "    public_key: '!!!'\n", "hosts[0].public_key", "not base64"},
		{"listen port 0", baseHost + "    listen_port: 0\n", "hosts[0].listen_port", "0 is out of range 1..65535"},
		{"listen port huge", baseHost + "    listen_port: 65536\n", "hosts[0].listen_port", "65536 is out of range 1..65535"},
		{"mtu not integer", baseHost + "    mtu: big\n", "hosts[0].mtu", `expected an integer, got string "big"`},
		{"mtu float", baseHost + "    mtu: 1500.5\n", "hosts[0].mtu", "expected an integer, got number 1500.5"},
		{"mtu too small", baseHost + "    mtu: 575\n", "hosts[0].mtu", "575 is out of range 576..9000"},
		{"underlay interface too long", baseHost + "    underlay_interface: abcdefghijklmnop\n", "hosts[0].underlay_interface", "at most 15"},
		{"underlay_allow not a list", baseHost + "    underlay_allow: {protocol: tcp}\n", "hosts[0].underlay_allow", "expected a list, got a mapping"},
		{"underlay_allow port with icmp", baseHost + "    underlay_allow: [{protocol: icmp, port: 22}]\n", "hosts[0].underlay_allow[0].port", "only allowed with protocol tcp or udp, not icmp"},
		{"underlay_allow bad protocol", baseHost + "    underlay_allow: [{protocol: sctp}]\n", "hosts[0].underlay_allow[0].protocol", `invalid protocol "sctp"`},
		{"underlay_allow no protocol", baseHost + "    underlay_allow: [{port: 22}]\n", "hosts[0].underlay_allow[0].protocol", "missing required key"},
		{"tunnel psk not string", base + "tunnel: {preshared_key_file: [a]}\n", "tunnel.preshared_key_file", "expected a string, got a list"},

		// VPCs and subnets.
		{"vni zero", strings.Replace(base, "vni: 1001", "vni: 0", 1), "vpcs[0].vni", "0 is out of range 1..16777215"},
		{"vni too big", strings.Replace(base, "vni: 1001", "vni: 16777216", 1), "vpcs[0].vni", "16777216 is out of range 1..16777215"},
		{"vni reused", strings.Replace(base, "vni: 1002", "vni: 1001", 1), "vpcs[1].vni", "1001 is already used by vpc blue"},
		{"duplicate vpc", strings.Replace(base, "name: red", "name: blue", 1), "vpcs[1].name", "vpc blue is already defined at vpcs[0]"},
		{"vpc cidr malformed", strings.Replace(base, "cidr: 10.0.0.0/16", "cidr: 10.0.0.0/33", 1), "vpcs[0].cidr", `invalid CIDR "10.0.0.0/33"`},
		{"vpc cidr without length", strings.Replace(base, "cidr: 10.0.0.0/16", "cidr: 10.0.0.0", 1), "vpcs[0].cidr", `invalid CIDR "10.0.0.0"`},
		{"vpc cidr ipv6", strings.Replace(base, "cidr: 10.0.0.0/16", "cidr: fd00::/48", 1), "vpcs[0].cidr", "IPv6 CIDR fd00::/48 is not supported"},
		{"subnet host bits", strings.Replace(base, "10.0.1.0/24}", "10.0.1.5/24}", 1), "vpcs[0].subnets[0].cidr", "CIDR 10.0.1.5/24 has host bits set: did you mean 10.0.1.0/24?"},
		{"subnet too small", strings.Replace(base, "10.0.1.0/24}", "10.0.1.0/31}", 1), "vpcs[0].subnets[0].cidr", "subnet 10.0.1.0/31 is too small"},
		{"subnet outside vpc", strings.Replace(base, "      - {name: blue-1, cidr: 10.0.1.0/24}\n", "      - {name: blue-1, cidr: 10.0.1.0/24}\n      - {name: blue-2, cidr: 10.1.0.0/24}\n", 1),
			"vpcs[0].subnets[1].cidr", "10.1.0.0/24 is outside vpc blue 10.0.0.0/16"},
		{"subnets overlap", strings.Replace(base, "      - {name: blue-1, cidr: 10.0.1.0/24}\n", "      - {name: blue-1, cidr: 10.0.1.0/24}\n      - {name: blue-2, cidr: 10.0.1.128/25}\n", 1),
			"vpcs[0].subnets[1].cidr", "10.0.1.128/25 overlaps subnet blue-1 10.0.1.0/24"},
		{"subnet name reused across vpcs", strings.Replace(base, "name: red-1", "name: blue-1", 1), "vpcs[1].subnets[0].name", "subnet blue-1 is already defined at vpcs[0].subnets[0]"},
		{"subnets not a list", strings.Replace(base, "    subnets:\n      - {name: red-1, cidr: 10.0.1.0/24}\n", "    subnets: red-1\n", 1), "vpcs[1].subnets", `expected a list, got string "red-1"`},
		{"subnet unknown acl", strings.Replace(baseGroups, "cidr: 10.0.1.0/24}", "cidr: 10.0.1.0/24, network_acl: nope}", 1), "vpcs[0].subnets[0].network_acl", `unknown network acl "nope"`},
		{"subnet acl of other vpc", strings.Replace(baseGroups, "cidr: 10.0.1.0/24}", "cidr: 10.0.1.0/24, network_acl: red-acl}", 1), "vpcs[0].subnets[0].network_acl", "network acl red-acl belongs to vpc red, not blue"},

		// Security groups.
		{"group unknown vpc", base + "security_groups:\n  - {name: g, vpc: green}\n", "security_groups[0].vpc", `unknown vpc "green"`},
		{"group without vpc", base + "security_groups:\n  - {name: g}\n", "security_groups[0].vpc", `missing required key "vpc"`},
		{"duplicate group", strings.Replace(baseGroups, "name: red-web", "name: blue-web", 1), "security_groups[1].name", "security group blue-web is already defined at security_groups[0]"},
		{"rule cidr and group", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: all, cidr: 10.0.0.0/8, source_group: g}\n",
			"security_groups[0].ingress[0]", "rule has both cidr and source_group: want exactly one"},
		{"rule without peer", base + "security_groups:\n  - name: g\n    vpc: blue\n    egress:\n      - {protocol: all}\n",
			"security_groups[0].egress[0]", "rule needs one of cidr or destination_group"},
		{"source_group in egress", base + "security_groups:\n  - name: g\n    vpc: blue\n    egress:\n      - {protocol: all, source_group: g}\n",
			"security_groups[0].egress[0].source_group", "source_group is only allowed in ingress rules: egress rules take destination_group"},
		{"rule unknown group", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: all, source_group: h}\n",
			"security_groups[0].ingress[0].source_group", `unknown security group "h"`},
		{"rule group of other vpc", base + "security_groups:\n  - {name: red-web, vpc: red}\n  - name: g\n    vpc: blue\n    egress:\n      - {protocol: all, destination_group: red-web}\n",
			"security_groups[1].egress[0].destination_group", "security group red-web belongs to vpc red, not blue"},
		{"rule from > to", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: tcp, from_port: 90, to_port: 80, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].from_port", "from_port 90 is greater than to_port 80"},
		{"rule port out of range", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: tcp, from_port: 80, to_port: 70000, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].to_port", "70000 is out of range 0..65535"},
		{"rule port string", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: tcp, from_port: http, to_port: 80, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].from_port", `expected an integer, got string "http"`},
		{"rule only from_port", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: tcp, from_port: 80, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].to_port", "missing: from_port needs to_port"},
		{"ports with icmp", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: icmp, from_port: 1, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].from_port", "from_port is only allowed with protocol tcp or udp, not icmp"},
		{"icmp type with tcp", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: tcp, icmp_type: 8, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].icmp_type", "icmp_type is only allowed with protocol icmp, not tcp"},
		{"icmp code too big", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: icmp, icmp_code: 256, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].icmp_code", "256 is out of range -1..255"},
		{"protocol number too big", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: 256, cidr: 0.0.0.0/0}\n",
			"security_groups[0].ingress[0].protocol", `invalid protocol "256"`},
		{"rule cidr host bits", base + "security_groups:\n  - name: g\n    vpc: blue\n    ingress:\n      - {protocol: all, cidr: 10.0.0.1/8}\n",
			"security_groups[0].ingress[0].cidr", "has host bits set"},
		{"ingress not a list", base + "security_groups:\n  - {name: g, vpc: blue, ingress: all}\n", "security_groups[0].ingress", `expected a list, got string "all"`},

		// Network ACLs.
		{"acl rule number reused", base + "network_acls:\n  - name: a\n    vpc: blue\n    ingress:\n      - {rule_number: 100, action: allow, protocol: all, cidr: 0.0.0.0/0}\n      - {rule_number: 100, action: deny, protocol: all, cidr: 0.0.0.0/0}\n",
			"network_acls[0].ingress[1].rule_number", "rule number 100 is already used by network_acls[0].ingress[0]"},
		{"acl rule number too big", base + "network_acls:\n  - name: a\n    vpc: blue\n    egress:\n      - {rule_number: 32767, action: allow, protocol: all, cidr: 0.0.0.0/0}\n",
			"network_acls[0].egress[0].rule_number", "32767 is out of range 1..32766"},
		{"acl action", base + "network_acls:\n  - name: a\n    vpc: blue\n    egress:\n      - {rule_number: 1, action: permit, protocol: all, cidr: 0.0.0.0/0}\n",
			"network_acls[0].egress[0].action", `invalid value "permit": want allow, deny`},
		{"acl rule without cidr", base + "network_acls:\n  - name: a\n    vpc: blue\n    egress:\n      - {rule_number: 1, action: allow, protocol: all}\n",
			"network_acls[0].egress[0].cidr", `missing required key "cidr"`},
		{"acl unknown vpc", base + "network_acls:\n  - {name: a, vpc: green}\n", "network_acls[0].vpc", `unknown vpc "green"`},

		// ENIs.
		{"eni outside subnet", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.9.0.5}", 1), "enis[0].ip", "10.9.0.5 is outside subnet blue-1 10.0.1.0/24"},
		{"eni network address", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.0}", 1), "enis[0].ip", "10.0.1.0 is reserved in subnet blue-1 10.0.1.0/24 (network address)"},
		{"eni gateway", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.1}", 1), "enis[0].ip", "10.0.1.1 is reserved in subnet blue-1 10.0.1.0/24 (gateway)"},
		{"eni broadcast", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.255}", 1), "enis[0].ip", "10.0.1.255 is reserved in subnet blue-1 10.0.1.0/24 (broadcast address)"},
		{"eni ipv6", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 'fd00::1'}", 1), "enis[0].ip", "IPv6 address fd00::1 is not supported"},
		{"eni address reused in vpc", baseENIs + "  - {name: a2, host: h2, subnet: blue-1, ip: 10.0.1.10, mac: 02:00:00:00:00:01}\n", "enis[2].ip", "10.0.1.10 is already used by eni a1 in vpc blue"},
		{"eni default mac reused on host", strings.Replace(baseENIs, "host: h2", "host: h1", 1), "enis[1].mac", "MAC 02:00:0a:00:01:0a (default from ip; set mac explicitly) is already used by eni a1 on host h1"},
		{"eni mac reused on host", baseENIs + "  - {name: a2, host: h1, subnet: blue-1, ip: 10.0.1.11, mac: '02:00:0a:00:01:0a'}\n", "enis[2].mac", "MAC 02:00:0a:00:01:0a is already used by eni a1 on host h1"},
		{"eni interface reused on host", baseENIs + "  - {name: a2, host: h1, subnet: blue-1, ip: 10.0.1.11, interface: vpc-a1}\n", "enis[2].interface", "interface vpc-a1 is already used by eni a1 on host h1"},
		{"eni default interface reused", base + "enis:\n  - {name: web-server-1, host: h1, subnet: blue-1, ip: 10.0.1.10}\n  - {name: web-server-2, host: h1, subnet: blue-1, ip: 10.0.1.11}\n",
			"enis[1].interface", "interface vpc-web-server- (default from name; set interface explicitly) is already used by eni web-server-1 on host h1"},
		{"eni interface is underlay", baseENIs + "  - {name: a2, host: h1, subnet: blue-1, ip: 10.0.1.11, interface: eth0}\n", "enis[2].interface", "interface eth0 is the underlay interface of host h1"},
		{"eni interface too long", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, interface: a-sixteen-chars!}", 1), "enis[0].interface", `invalid interface name "a-sixteen-chars!": 16 bytes, at most 15 allowed`},
		{"eni interface with slash", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, interface: a/b}", 1), "enis[0].interface", "must not contain"},
		{"eni multicast mac", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, mac: '03:00:00:00:00:01'}", 1), "enis[0].mac", "MAC address 03:00:00:00:00:01 is multicast"},
		{"eni long mac", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, mac: '02:00:00:00:00:00:00:01'}", 1), "enis[0].mac", `invalid MAC address "02:00:00:00:00:00:00:01"`},
		{"eni unknown host", strings.Replace(baseENIs, "host: h1", "host: h9", 1), "enis[0].host", `unknown host "h9"`},
		{"eni unknown subnet", strings.Replace(baseENIs, "subnet: blue-1", "subnet: blue-9", 1), "enis[0].subnet", `unknown subnet "blue-9"`},
		{"eni duplicate name", strings.Replace(baseENIs, "name: b1", "name: a1", 1), "enis[1].name", "eni a1 is already defined at enis[0]"},
		{"eni group of other vpc", baseGroups + "enis:\n  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10, security_groups: [blue-web, red-web]}\n",
			"enis[0].security_groups[1]", "security group red-web belongs to vpc red, not blue"},
		{"eni unknown group", baseGroups + "enis:\n  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10, security_groups: [nope]}\n",
			"enis[0].security_groups[0]", `unknown security group "nope"`},
		{"eni group listed twice", baseGroups + "enis:\n  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10, security_groups: [blue-web, blue-web]}\n",
			"enis[0].security_groups[1]", "security group blue-web is already listed at enis[0].security_groups[0]"},
		{"eni groups not a list", baseGroups + "enis:\n  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10, security_groups: blue-web}\n",
			"enis[0].security_groups", `expected a list, got string "blue-web"`},
		{"eni source_dest_check yes", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, source_dest_check: yes}", 1), "enis[0].source_dest_check", `expected true or false, got string "yes"`},
		{"eni max_connections 0", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, max_connections: 0}", 1), "enis[0].max_connections", "0 is out of range 1..262144"},
		{"eni max_connections negative", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, max_connections: -5}", 1), "enis[0].max_connections", "-5 is out of range 1..262144"},
		{"eni max_connections over the table", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, max_connections: 262145}", 1), "enis[0].max_connections", "262145 is out of range 1..262144"},
		{"eni max_connections string", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, max_connections: lots}", 1), "enis[0].max_connections", `expected an integer, got string "lots"`},
		{"eni max_connections float", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, max_connections: 1.5}", 1), "enis[0].max_connections", "expected an integer, got number 1.5"},
		{"eni missing ip", strings.Replace(baseENIs, ", ip: 10.0.1.10}", "}", 1), "enis[0].ip", `missing required key "ip"`},
		{"eni instance with space", strings.Replace(baseENIs, "ip: 10.0.1.10}", "ip: 10.0.1.10, instance: 'web 1'}", 1), "enis[0].instance", `"web 1" must not contain spaces`},

		// Flow logs.
		{"flow log traffic type", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', traffic_type: all, destination: stdout}\n",
			"flow_logs[0].traffic_type", `invalid value "all": want ALL, ACCEPT, REJECT`},
		{"flow log interval too long", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', aggregation_interval: 11m, destination: stdout}\n",
			"flow_logs[0].aggregation_interval", "11m0s is out of range 1s..10m0s"},
		{"flow log interval unitless", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', aggregation_interval: 60, destination: stdout}\n",
			"flow_logs[0].aggregation_interval", `invalid duration "60"`},
		{"flow log destination scheme", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', destination: 'http://x/y'}\n",
			"flow_logs[0].destination", `unknown destination scheme "http"`},
		{"flow log ipfix without port", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', destination: 'ipfix+udp://collector'}\n",
			"flow_logs[0].destination", `invalid IPFIX destination "ipfix+udp://collector"`},
		{"flow log unknown eni", baseENIs + "flow_logs:\n  - {name: f, resource: 'eni:zz', destination: stdout}\n",
			"flow_logs[0].resource", `unknown eni "zz"`},
		{"flow log unknown subnet", baseENIs + "flow_logs:\n  - {name: f, resource: 'subnet:zz', destination: stdout}\n",
			"flow_logs[0].resource", `unknown subnet "zz"`},
		{"flow log resource kind", baseENIs + "flow_logs:\n  - {name: f, resource: 'host:h1', destination: stdout}\n",
			"flow_logs[0].resource", `invalid resource kind "host"`},
		{"flow log format field", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', format: '${srcaddr} ${colour}', destination: stdout}\n",
			"flow_logs[0].format", `unknown flow-log field "${colour}"`},
		{"flow log duplicate", baseENIs + "flow_logs:\n  - {name: f, resource: 'vpc:blue', destination: stdout}\n  - {name: f, resource: 'vpc:red', destination: stdout}\n",
			"flow_logs[1].name", "flow log f is already defined at flow_logs[0]"},

		// Mirroring.
		{"mirror rule port range reversed", base + "mirror_filters:\n  - name: m\n    ingress:\n      - {rule_number: 1, action: accept, protocol: tcp, destination_port_range: '90-80'}\n",
			"mirror_filters[0].ingress[0].destination_port_range", `port range "90-80" starts after it ends`},
		{"mirror rule port range garbage", base + "mirror_filters:\n  - name: m\n    ingress:\n      - {rule_number: 1, action: accept, protocol: udp, source_port_range: 'x-80'}\n",
			"mirror_filters[0].ingress[0].source_port_range", `invalid port range "x-80"`},
		{"mirror rule ports without tcp", base + "mirror_filters:\n  - name: m\n    ingress:\n      - {rule_number: 1, action: accept, destination_port_range: '80'}\n",
			"mirror_filters[0].ingress[0].destination_port_range", "only allowed with protocol tcp or udp, not all"},
		{"mirror rule action", base + "mirror_filters:\n  - name: m\n    egress:\n      - {rule_number: 1, action: allow}\n",
			"mirror_filters[0].egress[0].action", `invalid value "allow": want accept, reject`},
		{"mirror rule number reused", base + "mirror_filters:\n  - name: m\n    egress:\n      - {rule_number: 1, action: accept}\n      - {rule_number: 1, action: reject}\n",
			"mirror_filters[0].egress[1].rule_number", "rule number 1 is already used by mirror_filters[0].egress[0]"},
		{"mirror session unknown eni", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: zz, filter: all, session_number: 1, virtual_network_id: 1, target: {pcap: x.pcap}}\n",
			"mirror_sessions[0].source_eni", `unknown eni "zz"`},
		{"mirror session unknown filter", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: zz, session_number: 1, virtual_network_id: 1, target: {pcap: x.pcap}}\n",
			"mirror_sessions[0].filter", `unknown mirror filter "zz"`},
		{"mirror session number reused", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {pcap: x.pcap}}\n  - {name: t, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {pcap: y.pcap}}\n",
			"mirror_sessions[1].session_number", "session number 1 is already used by mirror session s on eni a1"},
		{"mirror rules over the ENI's budget", baseMirror + "  - name: big\n    ingress:\n      - {rule_number: 1, action: accept}\n      - {rule_number: 2, action: accept}\n      - {rule_number: 3, action: accept}\n      - {rule_number: 4, action: accept}\n      - {rule_number: 5, action: accept}\n      - {rule_number: 6, action: accept}\n      - {rule_number: 7, action: accept}\n      - {rule_number: 8, action: accept}\n      - {rule_number: 9, action: accept}\n      - {rule_number: 10, action: accept}\n      - {rule_number: 11, action: accept}\n      - {rule_number: 12, action: accept}\n      - {rule_number: 13, action: accept}\n      - {rule_number: 14, action: accept}\n      - {rule_number: 15, action: accept}\n      - {rule_number: 16, action: accept}\n      - {rule_number: 17, action: accept}\n      - {rule_number: 18, action: accept}\n      - {rule_number: 19, action: accept}\n      - {rule_number: 20, action: accept}\n" + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: big, session_number: 1, virtual_network_id: 1, target: {pcap: x.pcap}}\n  - {name: t, source_eni: a1, filter: big, session_number: 2, virtual_network_id: 1, target: {pcap: y.pcap}}\n",
			"mirror_sessions[1].filter", "eni a1 would have 40 ingress mirror rules across its sessions; at most 32"},
		{"mirror session number 0", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 0, virtual_network_id: 1, target: {pcap: x.pcap}}\n",
			"mirror_sessions[0].session_number", "0 is out of range 1..32766"},
		{"mirror vni too big", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 16777216, target: {pcap: x.pcap}}\n",
			"mirror_sessions[0].virtual_network_id", "16777216 is out of range 1..16777215"},
		{"mirror packet length 0", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, packet_length: 0, target: {pcap: x.pcap}}\n",
			"mirror_sessions[0].packet_length", "0 is out of range 1..65535"},
		{"mirror target both", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {eni: a2, pcap: x.pcap}}\n",
			"mirror_sessions[0].target", "target has both eni and pcap: want exactly one"},
		{"mirror target empty", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {}}\n",
			"mirror_sessions[0].target", "target needs one of eni or pcap"},
		{"mirror target unknown", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {eni: zz}}\n",
			"mirror_sessions[0].target.eni", `unknown eni "zz"`},
		{"mirror target is source", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {eni: a1}}\n",
			"mirror_sessions[0].target.eni", "eni a1 is the session's source"},
		{"mirror target other vpc", baseMirror + "mirror_sessions:\n  - {name: s, source_eni: a1, filter: all, session_number: 1, virtual_network_id: 1, target: {eni: b1}}\n",
			"mirror_sessions[0].target.eni", "target eni b1 is in vpc red, but source eni a1 is in vpc blue"},
	}
	seen := make(map[string]bool)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.doc] {
				t.Fatalf("two cases share one document")
			}
			seen[tc.doc] = true
			top, err := Parse([]byte(tc.doc))
			if top != nil {
				t.Errorf("Parse returned a Topology with errors")
			}
			list := errorList(t, err)
			if len(list) != 1 {
				t.Errorf("want exactly one error, got %d:\n%v", len(list), list)
			}
			e := list[0]
			if e.Path != tc.path || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got  %s\nwant %s: ...%s...", e, tc.path, tc.msg)
			}
			if strings.ContainsAny(e.Error(), "\n\r") {
				t.Errorf("message is not one line: %q", e.Error())
			}
		})
	}
}

// TestAliasBomb: a small file whose aliases name one long list many times
// is refused quickly instead of being expanded.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString(base + "security_groups:\n  - name: g0\n    vpc: blue\n    ingress: &r\n")
	for range 2000 {
		b.WriteString("      - {protocol: all, cidr: 0.0.0.0/0}\n")
	}
	for i := 1; i < 2000; i++ {
		b.WriteString("  - {name: g" + strings.Repeat("x", i%7) + "y" + strconv.Itoa(i) + ", vpc: blue, ingress: *r}\n")
	}
	start := time.Now()
	_, err := Parse([]byte(b.String()))
	list := errorList(t, err)
	if list[0].Path != "(root)" || !strings.Contains(list[0].Msg, "document too complex") {
		t.Errorf("first error = %v", list[0])
	}
	if len(list) != 1 {
		t.Errorf("want one error, got %d", len(list))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Parse took %v", d)
	}
}
