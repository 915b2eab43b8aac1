package netns

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// listen opens a TCP echo server inside an ENI's namespace.
func listen(t *testing.T, l *lab.Lab, eni, addr string) {
	t.Helper()
	var ln net.Listener
	if err := l.Do(lab.ENI, eni, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, eni, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}

// dial opens a TCP connection from inside an ENI's namespace.
func dial(l *lab.Lab, eni, addr string) (net.Conn, error) {
	var c net.Conn
	err := l.Do(lab.ENI, eni, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 1500*time.Millisecond)
		return err
	})
	return c, err
}

func canConnect(l *lab.Lab, eni, addr string) bool {
	c, err := dial(l, eni, addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// echo sends a line over c and expects it back.
func echo(c net.Conn, line string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != line {
		return fmt.Errorf("echoed %q, want %q", got, line)
	}
	return nil
}

// TestSecurity checks security groups, network ACLs and connection tracking
// with real traffic across two hosts (testdata/security.yaml).
func TestSecurity(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
	l := upLab(t, "vs", "security.yaml")
	for _, p := range []string{"10.5.1.20:80", "10.5.1.20:81", "10.5.1.20:443"} {
		listen(t, l, "srv", p)
	}
	listen(t, l, "c1", "10.5.1.10:80")
	listen(t, l, "d1", "10.5.2.10:22")
	listen(t, l, "d1", "10.5.2.10:2222")

	t.Run("port matrix", func(t *testing.T) {
		cases := []struct {
			from, addr string
			open       bool
		}{
			{"c1", "10.5.1.20:80", true},   // tcp 80 from the VPC
			{"c1", "10.5.1.20:81", false},  // no rule
			{"c1", "10.5.1.20:443", true},  // source_group client, across hosts
			{"o1", "10.5.1.20:443", false}, // not a member of client
			{"o1", "10.5.1.20:80", true},
		}
		for _, c := range cases {
			if got := canConnect(l, c.from, c.addr); got != c.open {
				t.Errorf("%s -> %s: connected=%v, want %v", c.from, c.addr, got, c.open)
			}
		}
		if !ping(t, l, "c1", "10.5.1.20", 2) {
			t.Error("ICMP echo allowed by rule did not pass (or its reply did not leave a server with egress: [])")
		}
		if drops(t, l, "s2")["sg_ingress"] == 0 {
			t.Error("refused connections not counted as sg_ingress")
		}
	})
	t.Run("stateful both ways; a server with egress [] cannot start connections", func(t *testing.T) {
		// c1's group has no ingress rules, yet the replies reach it; srv's
		// group lets nothing out, yet its replies leave (above). srv itself
		// opens nothing:
		before := drops(t, l, "s2")["sg_egress"]
		if canConnect(l, "srv", "10.5.1.10:80") {
			t.Error("srv opened a connection although its group allows nothing out")
		}
		if !pingNone(t, l, "srv", "10.5.2.10", 1) {
			t.Error("srv pinged d1 although its group allows nothing out")
		}
		if drops(t, l, "s2")["sg_egress"] <= before {
			t.Error("srv's refused packets not counted as sg_egress")
		}
	})
	t.Run("network ACL: a lower-numbered deny beats a later allow", func(t *testing.T) {
		if !canConnect(l, "c1", "10.5.2.10:2222") {
			t.Fatal("c1 cannot reach d1:2222 (allowed by ACL rule 100)")
		}
		before := drops(t, l, "s2")["nacl_ingress"]
		if canConnect(l, "c1", "10.5.2.10:22") {
			t.Error("TCP 22 passed although ACL rule 90 denies it")
		}
		if !pingNone(t, l, "c1", "10.5.2.10", 2) {
			t.Error("ICMP passed although ACL rule 95 denies it before rule 100 allows all")
		}
		if drops(t, l, "s2")["nacl_ingress"] < before+3 {
			t.Error("ACL drops not counted as nacl_ingress")
		}
	})
	t.Run("status lists tracked connections", func(t *testing.T) {
		c, err := dial(l, "c1", "10.5.1.20:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echo(c, "hello"); err != nil {
			t.Fatal(err)
		}
		st, err := control.QueryConntrack(l.SocketPath("s1"))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ct := range st.Conntrack {
			if ct.ENI == "c1" && ct.Remote.String() == "10.5.1.20" && ct.RemotePort == 80 && ct.State == "established" && ct.Origin == "egress" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no established c1 -> 10.5.1.20:80 entry in %+v", st.Conntrack)
		}
		for _, e := range st.ENIs {
			if e.Name == "c1" && (e.IngressRules != 0 || e.EgressRules != 1) {
				t.Errorf("c1 rule counts in/out %d/%d, want 0/1", e.IngressRules, e.EgressRules)
			}
		}
	})
	t.Run("a reload that removes a rule keeps established connections and refuses new ones", func(t *testing.T) {
		c, err := dial(l, "c1", "10.5.1.20:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echo(c, "before"); err != nil {
			t.Fatal(err)
		}
		p := editedTopology(t, "security.yaml", "      - {protocol: tcp, from_port: 80, to_port: 80, cidr: 10.5.0.0/16}\n", "")
		if err := l.Apply(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		if !testkit.Eventually(5*time.Second, func() bool { return !canConnect(l, "o1", "10.5.1.20:80") }) {
			t.Fatal("new connections to port 80 still open after the rule was removed")
		}
		if err := echo(c, "after"); err != nil {
			t.Fatalf("the established connection broke when its rule was removed: %v", err)
		}
	})
}
