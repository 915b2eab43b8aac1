package netns

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
)

// reloadNow asks a daemon to reload its topology file over its socket.
func reloadNow(t *testing.T, socket string) {
	t.Helper()
	c, err := net.DialTimeout("unix", socket, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(c).Encode(map[string]string{"cmd": "reload"})
	var resp map[string]any
	json.NewDecoder(c).Decode(&resp)
}

// TestReloadRefusesBrokenTopologies feeds a running daemon 15 kinds of
// broken topology: each is refused with its YAML path in the log, counted
// as a failed reload, and changes nothing.
func TestReloadRefusesBrokenTopologies(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vb", "two-hosts.yaml")
	good, err := os.ReadFile(l.TopologyPath())
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(l.TopologyPath(), good, 0o600)
	g := string(good)
	swap := func(old, new string) string {
		if !strings.Contains(g, old) {
			t.Fatalf("the lab's topology has no %q to break", old)
		}
		return strings.Replace(g, old, new, 1)
	}
	// The lab writes the topology out in block style (topology.Marshal).
	cases := []struct{ name, yaml, path string }{
		{"YAML that does not parse", "version: 1\nhosts: [\n", ""},
		{"wrong type", swap("version: 1", "version: one"), "version"},
		{"unknown key", swap("version: 1", "version: 1\nbogus: true"), "bogus"},
		{"VNI out of range", swap("vni: 3003", "vni: 0"), "vpcs[0].vni"},
		{"malformed CIDR", swap("cidr: 10.3.0.0/16", "cidr: 10.3.0.0/33"), "vpcs[0].cidr"},
		{"subnet outside its VPC", swap("cidr: 10.3.1.0/24", "cidr: 10.4.1.0/24"), "vpcs[0].subnets[0].cidr"},
		{"ENI outside its subnet", swap("ip: 10.3.1.10", "ip: 10.3.2.10"), "enis[0].ip"},
		{"ENI on a reserved address", swap("ip: 10.3.1.10", "ip: 10.3.1.1"), "enis[0].ip"},
		{"unknown host", swap("host: a\n", "host: nowhere\n"), "enis[0].host"},
		{"unknown subnet", swap("subnet: g1\n    ip: 10.3.1.10", "subnet: g9\n    ip: 10.3.1.10"), "enis[0].subnet"},
		{"unknown security group", swap("security_groups: [green-open]", "security_groups: [nope]"), "enis[0].security_groups[0]"},
		{"duplicate ENI name", swap("name: g-b1", "name: g-a1"), "enis[1].name"},
		{"malformed MAC", swap("mac: 02:00:0a:03:01:0a", "mac: zz:zz"), "enis[0].mac"},
		{"unknown protocol", swap("protocol: all", "protocol: tcpx"), "security_groups[0].ingress[0].protocol"},
		{"port out of range", swap("listen_port: 51820", "listen_port: 70000"), "hosts[0].listen_port"},
		{"malformed key", swap("public_key: ", "public_key: x"), "hosts[0].public_key"},
	}
	if len(cases) < 15 {
		t.Fatal("fewer than 15 kinds")
	}
	before := reloadErrors(t, l, "a")
	for _, c := range cases {
		if err := os.WriteFile(l.TopologyPath(), []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		reloadNow(t, l.SocketPath("a"))
		log, _ := os.ReadFile(l.LogPath("a"))
		last := string(log)
		if j := strings.LastIndex(last, "reload refused"); j >= 0 {
			last = last[j:]
		} else {
			t.Fatalf("%s: no refused reload in the log", c.name)
		}
		if c.path != "" && !strings.Contains(strings.SplitN(last, "\n", 2)[0], c.path+": ") {
			t.Errorf("%s: the refusal does not name %s: %s", c.name, c.path, strings.SplitN(last, "\n", 2)[0])
		}
	}
	after := reloadErrors(t, l, "a")
	if after == before {
		t.Errorf("failed reloads not counted (%s before, %s after)", before, after)
	}
	if !ping(t, l, "g-a1", "10.3.1.20", 2) {
		t.Fatal("traffic changed after refused reloads")
	}
}
