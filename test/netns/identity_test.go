package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// connsOf lists the host's tracked TCP connections as `vpcd status
// --conntrack --json` prints them: "ENI remote local-port remote-port".
func connsOf(t *testing.T, l *lab.Lab, host string) []string {
	t.Helper()
	out := mustRun(t, l, lab.Host, host, vpcdBinary, "status", "--socket", l.SocketPath(host), "--json", "--conntrack")
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --conntrack --json: %v\n%s", err, out)
	}
	var conns []string
	for _, c := range st.Conntrack {
		if c.Protocol == 6 {
			conns = append(conns, fmt.Sprintf("%s %s %d %d", c.ENI, c.Remote, c.LocalPort, c.RemotePort))
		}
	}
	slices.Sort(conns)
	return conns
}

// TestENIIdentityAcrossReloadAndRestart (SPEC §10, stable identity): ENIs
// b and c hold TCP connections to each other; a reload adds ENI a, which
// sorts first, and the daemon restarts. Every connection stays listed
// under the ENI it belonged to, and the connections still carry data.
func TestENIIdentityAcrossReloadAndRestart(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	l := upLab(t, "h3id", "identity.yaml")
	listen(t, l, "c", "10.31.1.12:7000")
	listen(t, l, "b", "10.31.1.11:7001")
	var held []net.Conn
	for _, p := range []struct{ from, to string }{{"b", "10.31.1.12:7000"}, {"c", "10.31.1.11:7001"}} {
		c, err := dial(l, p.from, p.to)
		if err != nil {
			t.Fatalf("connect %s to %s: %v", p.from, p.to, err)
		}
		defer c.Close()
		if err := echo(c, "before"); err != nil {
			t.Fatalf("%s to %s: %v", p.from, p.to, err)
		}
		held = append(held, c)
	}
	before := connsOf(t, l, "h")
	// Each connection is tracked at both ENIs.
	if len(before) != 4 {
		t.Fatalf("want 4 tracked TCP connections (2 per ENI), have %q", before)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Apply(ctx, "testdata/identity-abc.yaml"); err != nil {
		t.Fatalf("lab apply: %v", err)
	}
	if !testkit.Eventually(10*time.Second, func() bool {
		st, err := control.QueryStatus(l.SocketPath("h"))
		if err != nil {
			return false
		}
		return slices.ContainsFunc(st.ENIs, func(e control.ENIStatus) bool { return e.Name == "a" })
	}) {
		t.Fatal("the daemon did not take ENI a within 10 s of the reload")
	}
	if got := connsOf(t, l, "h"); !slices.Equal(got, before) {
		t.Errorf("after the reload that added a:\n  have %q\n  had  %q", got, before)
	}

	if err := l.Restart(ctx, "h"); err != nil {
		t.Fatalf("lab restart: %v", err)
	}
	if got := connsOf(t, l, "h"); !slices.Equal(got, before) {
		t.Errorf("after the restart:\n  have %q\n  had  %q", got, before)
	}
	for i, c := range held {
		if err := echo(c, "after"); err != nil {
			t.Errorf("connection %d after the restart: %v", i, err)
		}
	}
}
