package netns

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
)

// TestReloadRefusesRuleSetThatDoesNotFit (SPEC §10, atomic policy): a
// reload gives the ENIs' security group more rules than one rule set of
// the datapath holds. The rule set is refused whole: the reload counts as
// failed, the log names each ENI, and the ENIs keep their previous rules
// (b still connects to c, which the new rules would not allow).
func TestReloadRefusesRuleSetThatDoesNotFit(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	l := upLab(t, "h3rf", "identity.yaml")
	listen(t, l, "c", "10.31.1.12:7000")
	if !canConnect(l, "b", "10.31.1.12:7000") {
		t.Fatal("b cannot connect to c to begin with")
	}
	src, err := os.ReadFile("testdata/identity.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// 1,100 rules, none of which allows b.
	var rules []string
	for i := range 1100 {
		rules = append(rules, fmt.Sprintf("{protocol: tcp, from_port: 7000, to_port: 7000, cidr: 10.32.%d.%d/32}", i/250, i%250+1))
	}
	old := "ingress: [{protocol: all, cidr: 10.31.0.0/16}]"
	if !strings.Contains(string(src), old) {
		t.Fatalf("testdata/identity.yaml has no %q", old)
	}
	big := strings.Replace(string(src), old, "ingress: ["+strings.Join(rules, ", ")+"]", 1)
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}

	before := reloadErrors(t, l, "h")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Apply(ctx, path); err != nil {
		t.Fatalf("lab apply: %v", err)
	}
	if !testkit.Eventually(10*time.Second, func() bool { return reloadErrors(t, l, "h") != before }) {
		t.Fatalf("the reload was not counted as failed (vpcd_config_reloads_total{result=\"error\"} stays %s)", before)
	}
	log, _ := os.ReadFile(l.LogPath("h"))
	for _, eni := range []string{"b", "c"} {
		found := false
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "rule set refused") && strings.Contains(line, " eni="+eni+" ") {
				found = true
			}
		}
		if !found {
			t.Errorf("no log line refuses the rule set of ENI %s", eni)
		}
	}
	if !canConnect(l, "b", "10.31.1.12:7000") {
		t.Error("after the refused rule set, b can no longer connect to c: the old rules are gone")
	}
}
