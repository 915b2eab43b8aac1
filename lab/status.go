package lab

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// summary prints what Up made.
func (l *Lab) summary(w io.Writer) {
	st, t := l.st, l.topo
	fmt.Fprintf(w, "lab %q is up\n", st.Name)
	fmt.Fprintf(w, "  dir       %s\n", st.Dir)
	fmt.Fprintf(w, "  topology  %s (from %s)\n", st.Topology, st.Source)
	fmt.Fprintf(w, "  rack      netns %s, bridge %s\n", st.RackNS, bridgeName)
	if e := st.Etcd; e != nil {
		fmt.Fprintf(w, "  etcd      %s in the rack (pid %d, log %s); client certificate %s\n", e.Endpoint, e.PID, e.Log, e.Cert)
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nHOST\tNETNS\tUNDERLAY\tDAEMON\tLOG\tSOCKET")
	for i := range st.Hosts {
		hs := &st.Hosts[i]
		under := "-"
		if h := findHost(t, hs.Name); h != nil {
			under = fmt.Sprintf("%s %s", underlayIf(h), h.UnderlayIP)
		}
		daemon := "not started"
		if hs.PID > 0 {
			daemon = fmt.Sprintf("pid %d", hs.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", hs.Name, hs.NS, under, daemon, hs.Log, hs.Socket)
	}
	tw.Flush()

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nENI\tNETNS\tADDRESS\tMAC\tHOST\tINTERFACE")
	for i := range t.ENIs {
		e := &t.ENIs[i]
		addr := e.IP.String()
		if sub := findSubnet(t, e.Subnet); sub != nil {
			addr = fmt.Sprintf("%s/%d", e.IP, sub.CIDR.Bits())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, eniNSName(st.Name, e.Name), addr, eniMAC(e), e.Host, eniIf(e))
	}
	tw.Flush()

	fmt.Fprintln(w)
	if len(t.FlowLogs) == 0 && len(t.MirrorSessions) == 0 {
		fmt.Fprintf(w, "no flow logs or mirror sessions; relative paths in the topology resolve in %s\n", st.Dir)
	}
	for _, f := range t.FlowLogs {
		if !strings.Contains(f.Destination, "{host}") {
			fmt.Fprintf(w, "flow log %s -> %s\n", f.Name, f.Destination)
			continue
		}
		// Each host's daemon writes its own: the paths, not the pattern.
		for _, h := range t.Hosts {
			fmt.Fprintf(w, "flow log %s -> %s (host %s)\n", f.Name, topology.ExpandHost(f.Destination, h.Name), h.Name)
		}
	}
	for _, m := range t.MirrorSessions {
		if m.Target.Pcap != "" {
			fmt.Fprintf(w, "mirror %s -> pcap %s\n", m.Name, m.Target.Pcap)
		} else {
			fmt.Fprintf(w, "mirror %s -> eni %s\n", m.Name, m.Target.ENI)
		}
	}
	for _, v := range t.VMs {
		if pid := l.VMPID(v.ENI); pid > 0 {
			fmt.Fprintf(w, "vm on %s: qemu pid %d, console log %s\n", v.ENI, pid, filepath.Join(l.vmDir(v.ENI), "console.log"))
		}
	}
	fmt.Fprintf(w, "\nbpffs     %s/%s/HOST\n", BPFFSRoot, st.Name)
	var flag string
	if st.Name != DefaultName() {
		flag = " --name " + st.Name
	}
	if len(t.ENIs) > 0 {
		fmt.Fprintf(w, "try       vpcd lab exec%s %s -- ip addr\n", flag, t.ENIs[0].Name)
	}
	if len(t.VMs) > 0 {
		fmt.Fprintf(w, "try       vpcd lab vm exec%s %s -- ip addr\n", flag, t.VMs[0].ENI)
	}
	fmt.Fprintf(w, "remove    vpcd lab down%s\n", flag)
}

// Status prints the lab's namespaces (present or missing), each daemon
// (running or not, with PID, log and socket) and each host's WireGuard
// peers with the age of their last handshake, as the tunnel device reports
// them.
func (l *Lab) Status(w io.Writer) error {
	st, t := l.st, l.topo
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "lab %q  dir %s\n", st.Name, st.Dir)
	fmt.Fprintf(ew, "topology %s (from %s)\n", st.Topology, st.Source)
	if e := st.Etcd; e != nil {
		state := "STOPPED"
		if isEtcd(e.PID, e) {
			state = fmt.Sprintf("pid %d", e.PID)
		}
		fmt.Fprintf(ew, "etcd %s (prefix %s, %s; log %s)\n", e.Endpoint, e.Prefix, state, e.Log)
	}

	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNETNS\tKIND\tSTATE")
	nsLine := func(ns, kind string) {
		state := "present"
		if !nsExists(ns) {
			state = "MISSING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ns, kind, state)
	}
	nsLine(l.RackNS(), "rack")
	for _, hs := range st.Hosts {
		nsLine(hs.NS, "host "+hs.Name)
	}
	for _, es := range st.ENIs {
		nsLine(es.NS, "eni "+es.Name)
	}
	tw.Flush()

	// The VMs: those the topology lists (running or not) and those
	// started since with vpcd lab vm up.
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	header := false
	for i := range t.ENIs {
		e := &t.ENIs[i]
		listed := slices.ContainsFunc(t.VMs, func(v topology.VM) bool { return v.ENI == e.Name })
		pid := l.VMPID(e.Name)
		if !e.IsTap() || (pid == 0 && !listed) {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "\nVM ON\tQEMU\tCONSOLE LOG")
			header = true
		}
		state := "STOPPED"
		if pid > 0 {
			state = fmt.Sprintf("running pid %d", pid)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, state, filepath.Join(l.vmDir(e.Name), "console.log"))
	}
	tw.Flush()

	names := map[string]string{} // public key hex -> host
	for i := range t.Hosts {
		names[keyHex(t.Hosts[i].PublicKey)] = t.Hosts[i].Name
	}
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nHOST\tDAEMON\tLOG\tSOCKET")
	for i := range st.Hosts {
		hs := &st.Hosts[i]
		daemon := "stopped"
		if running(hs) {
			daemon = fmt.Sprintf("running pid %d", hs.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", hs.Name, daemon, hs.Log, hs.Socket)
	}
	tw.Flush()

	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nHOST\tPEER\tENDPOINT\tHANDSHAKE\tRX\tTX")
	now := time.Now()
	for i := range st.Hosts {
		hs := &st.Hosts[i]
		peers, err := tunnel.ReadPeers(hs.UAPI)
		if err != nil {
			fmt.Fprintf(tw, "%s\t(tunnel %s unreadable: %s)\t\t\t\t\n", hs.Name, hs.Device, shortErr(err))
			continue
		}
		for _, p := range peers {
			peer := names[p.PublicKeyHex]
			if peer == "" {
				peer = "key " + p.PublicKeyHex[:min(8, len(p.PublicKeyHex))] + "…"
			}
			hsk := "never"
			if p.HasHandshake() {
				hsk = now.Sub(p.LastHandshake).Truncate(time.Second).String() + " ago"
			}
			ep := p.Endpoint
			if ep == "" {
				ep = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", hs.Name, peer, ep, hsk, p.RxBytes, p.TxBytes)
		}
	}
	tw.Flush()
	return ew.err
}

// shortErr keeps the last part of a wrapped error for one table cell.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// errWriter remembers the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
