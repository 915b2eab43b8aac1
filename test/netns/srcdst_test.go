package netns

import (
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// TestSourceDestCheckOff: an ENI with source_dest_check: false sends
// packets from an address that is not its own (as a NAT or router
// instance forwards others' packets), across hosts as on one; an ENI with
// the check on its host is still held to its own address.
func TestSourceDestCheckOff(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vsd", "srcdst.yaml")
	const foreign = "10.91.1.99" // no ENI has it
	ingress := func() uint64 {
		st, err := control.QueryStatus(l.SocketPath("sd-h2"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range st.ENIs {
			if e.Name == "n2" {
				return e.IngressPackets
			}
		}
		t.Fatal("n2 is not in sd-h2's status")
		return 0
	}
	for _, eni := range []string{"n1", "s1"} {
		mustRun(t, l, lab.ENI, eni, "ip", "addr", "add", foreign+"/32", "dev", "eth0")
	}

	t.Run("n1 (check off) reaches n2 on the other host from a foreign address", func(t *testing.T) {
		before, checked := ingress(), drops(t, l, "sd-h2")["source_check"]
		// The replies go to an address no ENI has: ping itself fails.
		run(t, l, lab.ENI, "n1", "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", foreign, "10.91.1.20")
		if !testkit.Eventually(3*time.Second, func() bool { return ingress() >= before+3 }) {
			t.Errorf("n2 received %d packets of n1's 3 from %s (sd-h2 source_check drops %d → %d)",
				ingress()-before, foreign, checked, drops(t, l, "sd-h2")["source_check"])
		}
		if got := drops(t, l, "sd-h2")["source_check"]; got != checked {
			t.Errorf("sd-h2 dropped n1's packets as source_check (%d → %d)", checked, got)
		}
	})
	t.Run("s1 (check on) does not", func(t *testing.T) {
		before, checked := ingress(), drops(t, l, "sd-h1")["source_check"]
		run(t, l, lab.ENI, "s1", "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", foreign, "10.91.1.20")
		if got := drops(t, l, "sd-h1")["source_check"]; got < checked+3 {
			t.Errorf("sd-h1 source_check drops %d → %d, want +3", checked, got)
		}
		if got := ingress(); got != before {
			t.Errorf("n2 received %d packets from s1's foreign address", got-before)
		}
	})
}
