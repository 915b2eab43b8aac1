package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/tunnel"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vpcd-cli")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "vpcd")
	out, err := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func vpcd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateAcceptsGoodTopologies(t *testing.T) {
	for _, f := range []string{"demo.yaml", "../../test/netns/testdata/three-hosts.yaml"} {
		_, stderr, code := vpcd(t, "validate", "--config", f)
		if code != 0 || stderr != "" {
			t.Errorf("validate %s: exit %d, stderr %q", f, code, stderr)
		}
	}
}

// brokenTopology has one error of each of many kinds; validate must report
// each on its own line with its YAML path.
const brokenTopology = `version: 1
hosts:
  - {name: a, underlay_ip: 198.18.0.1, public_key: "not-a-key"}
  - {name: a, underlay_ip: 198.18.0.300, listen_port: 70000}
vpcs:
  - name: blue
    vni: 0
    cidr: 10.0.0.0/16
    subnets:
      - {name: s1, cidr: 10.0.1.0/24, network_acl: nope}
      - {name: s2, cidr: 10.1.0.0/24}
      - {name: s3, cidr: 10.0.1.0/25}
  - name: red
    vni: 0x1000000
    cidr: 10.0.0.0/33
security_groups:
  - name: g
    vpc: green
    ingress:
      - {protocol: tcpx, from_port: 80, to_port: 80, cidr: 0.0.0.0/0}
network_acls:
  - name: acl
    vpc: blue
    ingress:
      - {rule_number: 40000, action: maybe, protocol: all, cidr: 0.0.0.0/0}
enis:
  - {name: e1, host: a, subnet: s1, ip: 10.0.1.1}
  - {name: e2, host: b, subnet: s1, ip: 10.0.9.5}
  - {name: e3, host: a, subnet: s1, ip: 10.0.1.10, mac: "zz:00:00:00:00:01"}
  - {name: e4, host: a, subnet: s1, ip: 10.0.1.10, bogus: 1}
  - {name: e5, host: a, subnet: nowhere, ip: 10.0.1.11, security_groups: [missing]}
flow_logs:
  - {name: f, resource: "vpc:blue", aggregation_interval: 1h, destination: "ftp://x"}
`

func TestValidateReportsEveryErrorWithItsPath(t *testing.T) {
	p := writeFile(t, brokenTopology)
	stdout, stderr, code := vpcd(t, "validate", "--config", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	line := regexp.MustCompile(`^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: \S.*$`)
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("not a PATH: message line: %q", l)
		}
	}
	wantPaths := []string{
		"hosts[0].public_key", "hosts[1].name", "hosts[1].underlay_ip", "hosts[1].listen_port",
		"vpcs[0].vni", "vpcs[0].subnets[0].network_acl", "vpcs[0].subnets[1].cidr", "vpcs[0].subnets[2].cidr",
		"vpcs[1].vni", "vpcs[1].cidr", "security_groups[0].vpc", "security_groups[0].ingress[0].protocol",
		"network_acls[0].ingress[0].rule_number", "network_acls[0].ingress[0].action",
		"enis[0].ip", "enis[1].host", "enis[1].ip", "enis[2].mac", "enis[3].bogus", "enis[3].ip",
		"enis[4].subnet", "flow_logs[0].aggregation_interval", "flow_logs[0].destination",
	}
	for _, p := range wantPaths {
		if !strings.Contains(stderr, p+": ") {
			t.Errorf("no error at %s in:\n%s", p, stderr)
		}
	}
	if len(wantPaths) < 15 {
		t.Fatal("fewer than 15 kinds of error checked")
	}
}

func TestValidateUnparsableYAML(t *testing.T) {
	p := writeFile(t, "version: 1\nhosts: [\n")
	_, stderr, code := vpcd(t, "validate", "--config", p)
	if code != 1 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || stderr == "" {
		t.Fatalf("exit %d, stderr %q: want exit 1 and one line", code, stderr)
	}
}

func TestRunRefusesBadTopologyAndAttachesNothing(t *testing.T) {
	testkit.NeedRoot(t, "a run that got past validation would attach programs")
	p := writeFile(t, brokenTopology)
	bpffs := filepath.Join("/sys/fs/bpf", "vpcd-cli-test")
	os.RemoveAll(bpffs)
	_, stderr, code := vpcd(t, "run", "--config", p, "--host", "a", "--bpffs", bpffs, "--state-dir", t.TempDir(),
		"--socket", filepath.Join(t.TempDir(), "s"), "--metrics", "")
	if code != 1 {
		t.Fatalf("run with a broken topology: exit %d, want 1 (stderr %q)", code, stderr)
	}
	if !strings.Contains(stderr, "enis[0].ip: ") {
		t.Errorf("run did not print the located errors: %q", stderr)
	}
	if _, err := os.Stat(bpffs); err == nil {
		os.RemoveAll(bpffs)
		t.Fatal("run created its bpffs directory before refusing the topology")
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"status", "--help"}, {"keygen", "--help"},
		{"validate", "--help"}, {"teardown", "--help"}, {"lab", "--help"}, {"lab", "up", "--help"},
		{"lab", "exec", "--help"}, {"demo", "--help"}} {
		stdout, _, code := vpcd(t, args...)
		if code != 0 || !strings.Contains(stdout, "usage") {
			t.Errorf("vpcd %s: exit %d, stdout %q", strings.Join(args, " "), code, stdout)
		}
	}
}

// TestMissingCommandFails: vpcd and vpcd lab without what to do exit 2
// with one line on stderr that says so.
func TestMissingCommandFails(t *testing.T) {
	for _, args := range [][]string{nil, {"lab"}} {
		stdout, stderr, code := vpcd(t, args...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "missing") {
			t.Errorf("vpcd %s: exit %d, stdout %q, stderr %q; want exit 2 and one line on stderr", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

func TestUnknownCommandFails(t *testing.T) {
	_, stderr, code := vpcd(t, "frobnicate")
	if code == 0 || !strings.Contains(stderr, "frobnicate") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestKeygen(t *testing.T) {
	stdout, _, code := vpcd(t, "keygen")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var priv, pub string
	for _, l := range strings.Split(stdout, "\n") {
		if v, ok := strings.CutPrefix(l, "private_key: "); ok {
			priv = v
		}
		if v, ok := strings.CutPrefix(l, "public_key: "); ok {
			pub = v
		}
	}
	k, err := tunnel.ParseKey(priv)
	if err != nil {
		t.Fatalf("private key %q: %v", priv, err)
	}
	if k.PublicKey().String() != pub {
		t.Fatalf("public key %q does not belong to the private key", pub)
	}
}

func TestCPUBudget(t *testing.T) {
	for _, c := range []struct {
		flag  int
		set   bool
		env   string
		avail int
		want  int
		err   bool
	}{
		{avail: 2, want: 1},
		{avail: 1, want: 1},
		{avail: 8, want: 2},
		{avail: 64, want: 16},
		{env: "3", avail: 8, want: 0},    // the environment stands
		{env: "junk", avail: 8, want: 2}, // the runtime ignores it too
		{flag: 3, set: true, env: "1", avail: 8, want: 3},
		{flag: 16, set: true, avail: 8, want: 8}, // no more than a cgroup limit allows
		{flag: 0, set: true, avail: 8, want: 0},  // the runtime's own choice
		{flag: -1, set: true, avail: 8, err: true},
	} {
		got, _, err := cpuBudget(c.flag, c.set, c.env, c.avail)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("cpuBudget(%d, %v, %q, %d) = %d, %v; want %d, error %v", c.flag, c.set, c.env, c.avail, got, err, c.want, c.err)
		}
	}
}
