package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vpcd/vpcd/agent"
	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/source"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

func cmdRun(args []string) error {
	fs := newFlags("run", "run --config FILE --host NAME [flags]\n       run --etcd URLS --host NAME [--underlay-ip IP] [--etcd-prefix P] [--etcd-ca F --etcd-cert F --etcd-key F] [flags]")
	config := fs.String("config", "/etc/vpcd/topology.yaml", "topology file (file mode)")
	etcdURLs := fs.String("etcd", "", "etcd client URLs, comma-separated: read the topology from etcd instead of --config and register this host there")
	etcdPrefix := fs.String("etcd-prefix", controlplane.DefaultPrefix, "key prefix of this vpcd fleet in etcd")
	etcdCA := fs.String("etcd-ca", "", "CA certificate (PEM) that signed etcd's server certificate")
	etcdCert := fs.String("etcd-cert", "", "client certificate (PEM) for etcd")
	etcdKey := fs.String("etcd-key", "", "client private key (PEM) for etcd")
	underlayIP := fs.String("underlay-ip", "", "etcd mode: this host's underlay address to register (default: the applied file's)")
	host := fs.String("host", "", "this host's name in the topology (required)")
	stateDir := fs.String("state-dir", agent.DefaultStateDir, "state directory (private key, 0600)")
	bpffs := fs.String("bpffs", dataplane.DefaultBPFFS, "bpffs directory for pinned maps and links")
	metrics := fs.String("metrics", agent.DefaultMetricsAddr, "Prometheus listen address (empty: off)")
	socket := fs.String("socket", agent.DefaultSocket, "control socket path")
	tunDev := fs.String("tunnel-device", agent.DefaultTunnelDevice, "WireGuard tunnel device name")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	eniHook := fs.String("eni-hook", "auto", "hook of the ENI program: auto (tcx on veths and taps, else xdp), xdp or tcx")
	underlayHook := fs.String("underlay-hook", "auto", "hook of the underlay filter: auto (tcx on veth, else xdp), xdp or tcx")
	tapHook := fs.String("tap-hook", "auto", "hook of the ENI program on tap ENIs: auto (by measurement: docs/datapath.md), xdp or tcx; before --eni-hook")
	profile := fs.Bool("pprof", false, "serve Go profiles under /debug/pprof/ on the metrics address")
	mirrorPPS := fs.Int("mirror-max-pps", 0, "mirror copies per second this host's mirror path takes; beyond it copies are dropped and counted, never traffic (0: no limit)")
	cpus := fs.Int("cpus", 0, "CPUs the daemon may use at once (GOMAXPROCS); 0: the Go runtime's choice (all, or a cgroup's limit); default: a quarter of those, at least 1, or $GOMAXPROCS")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *host == "" {
		return errors.New("run: --host is required")
	}
	cpusSet := false
	fs.Visit(func(f *flag.Flag) { cpusSet = cpusSet || f.Name == "cpus" })
	// The runtime's own choice already follows a cgroup CPU limit.
	budget, budgetFrom, err := cpuBudget(*cpus, cpusSet, os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0))
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if budget > 0 {
		runtime.GOMAXPROCS(budget)
	}
	uhook, err := dataplane.ParseHook(*underlayHook)
	if err != nil {
		return fmt.Errorf("run: --underlay-hook: %w", err)
	}
	ehook, err := dataplane.ParseHook(*eniHook)
	if err != nil {
		return fmt.Errorf("run: --eni-hook: %w", err)
	}
	thook, err := dataplane.ParseHook(*tapHook)
	if err != nil {
		return fmt.Errorf("run: --tap-hook: %w", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("run: --log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	log.Info("CPU budget", "cpus", runtime.GOMAXPROCS(0), "host_cpus", runtime.NumCPU(), "from", budgetFrom)
	opts := agent.Options{
		ConfigPath: *config, Host: *host, StateDir: *stateDir, BPFFS: *bpffs,
		MetricsAddr: *metrics, SocketPath: *socket, TunnelDevice: *tunDev, Logger: log, Profile: *profile, UnderlayHook: uhook, ENIHook: ehook,
		TapHook: thook, MirrorMaxPPS: *mirrorPPS,
	}
	if *mirrorPPS < 0 {
		return fmt.Errorf("run: --mirror-max-pps %d: must be 0 (no limit) or more", *mirrorPPS)
	}
	if *etcdURLs == "" {
		if _, err := source.LoadFile(*config, *host); err != nil {
			printTopologyErrors(*config, err)
			return exitError{1}
		}
	} else {
		cfg := controlplane.Config{Endpoints: controlplane.SplitEndpoints(*etcdURLs), CAFile: *etcdCA, CertFile: *etcdCert, KeyFile: *etcdKey}
		var uip netip.Addr
		if *underlayIP != "" {
			if uip, err = netip.ParseAddr(*underlayIP); err != nil || !uip.Is4() {
				return fmt.Errorf("run: --underlay-ip %q: not an IPv4 address", *underlayIP)
			}
		}
		if opts.UnderlayReplies, err = endpointAddrs(cfg.Endpoints); err != nil {
			return fmt.Errorf("run: --etcd: %w", err)
		}
		cli, err := cfg.Client()
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		defer cli.Close()
		cp := newEtcdPlane(cli, *host, *etcdPrefix, cfg.Endpoints, uip, log)
		opts.ControlPlane = cp
		opts.Source = &controlplane.Source{Client: cli, Prefix: *etcdPrefix, Origin: "etcd:" + strings.Join(cfg.Endpoints, ","),
			Metrics: cp.metrics, Logger: log}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return agent.Run(ctx, opts, reload)
}

func cmdRotateKey(args []string) error {
	fs := newFlags("rotate-key", "rotate-key [--socket PATH]")
	socket := fs.String("socket", control.DefaultSocket, "control socket of the daemon")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	st, err := control.RotateKey(*socket)
	if err != nil {
		return err
	}
	fmt.Printf("host %s: new public key %s published; peers switch to it\n", st.Host, st.Tunnel.PublicKey)
	return nil
}

// printTopologyErrors prints one PATH: message line per error on stderr.
func printTopologyErrors(file string, err error) {
	var list topology.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(os.Stderr, e.Error())
		}
		return
	}
	fmt.Fprintln(os.Stderr, strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "))
}

func cmdValidate(args []string) error {
	fs := newFlags("validate", "validate --config FILE")
	config := fs.String("config", "", "topology file (required)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		return errors.New("validate: --config is required")
	}
	if _, err := topology.Load(*config); err != nil {
		printTopologyErrors(*config, err)
		return exitError{1}
	}
	return nil
}

func cmdKeygen(args []string) error {
	fs := newFlags("keygen", "keygen")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	k, err := tunnel.GeneratePrivateKey()
	if err != nil {
		return err
	}
	fmt.Printf("private_key: %s\npublic_key: %s\n", k, k.PublicKey())
	return nil
}

func cmdTeardown(args []string) error {
	fs := newFlags("teardown", "teardown [--bpffs DIR]")
	bpffs := fs.String("bpffs", dataplane.DefaultBPFFS, "bpffs directory of the datapath to remove")
	tunDev := fs.String("tunnel-device", agent.DefaultTunnelDevice, "tunnel device name")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if err := dataplane.Teardown(*bpffs); err != nil {
		return fmt.Errorf("teardown %s: %w", *bpffs, err)
	}
	// The tunnel device and its UAPI socket live only as long as a daemon;
	// a socket a crashed one left is removed here.
	os.Remove("/var/run/wireguard/" + *tunDev + ".sock")
	fmt.Printf("removed the datapath pinned under %s\n", *bpffs)
	return nil
}

func cmdStatus(args []string) error {
	fs := newFlags("status", "status [--socket PATH] [--json] [--conntrack]")
	socket := fs.String("socket", control.DefaultSocket, "control socket of the daemon")
	asJSON := fs.Bool("json", false, "print JSON")
	ct := fs.Bool("conntrack", false, "list every tracked connection per ENI, like conntrack -L")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	query := control.QueryStatus
	if *ct {
		query = control.QueryConntrack
	}
	st, err := query(*socket)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	if *ct {
		printConntrack(st)
		return nil
	}
	printStatus(st)
	return nil
}

// printConntrack lists tracked connections as conntrack -L does, one line
// each, grouped by ENI.
func printConntrack(st *control.Status) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ENI\tPROTO\tLOCAL PORT\tREMOTE\tSTATE\tOPENED BY\tIDLE")
	for _, c := range st.Conntrack {
		opened := "remote"
		if c.Origin == "egress" {
			opened = "eni"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s:%d\t%s\t%s\t%.0fs\n", c.ENI, protoName(c.Protocol), c.LocalPort,
			c.Remote, c.RemotePort, c.State, opened, c.IdleSecs)
	}
	w.Flush()
	fmt.Printf("%d tracked connections\n", len(st.Conntrack))
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return fmt.Sprint(p)
}

func printStatus(st *control.Status) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "host %s  bpffs %s\n", st.Host, st.BPFFS)
	fmt.Fprintf(w, "tunnel %s  port %d  public key %s\n", st.Tunnel.Device, st.Tunnel.ListenPort, st.Tunnel.PublicKey)
	if c := st.Tunnel.Counters; c.Reads+c.Writes > 0 || c.KernelStats {
		fmt.Fprintf(w, "tunnel device: %d packets to peers in %d reads, %d from peers in %d writes; dropped: %d (queue full or malformed), %d (refused by the kernel)\n",
			c.ReadPackets, c.Reads, c.WritePackets, c.Writes, c.QueueDrops+c.ReadErrors, c.WriteDrops)
	}
	fmt.Fprintln(w, "PEER\tENDPOINT\tLAST HANDSHAKE\tRX\tTX")
	for _, p := range st.Tunnel.Peers {
		hs := "never"
		if !p.LastHandshake.IsZero() {
			hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\n", p.Name, p.Endpoint, hs, p.RxBytes, p.TxBytes)
	}
	fmt.Fprintln(w, "\nENI\tINTERFACE\tIP\tVPC/VNI\tSUBNET\tGROUPS\tRULES in/out\tACL\tIN pkts/bytes\tOUT pkts/bytes\tCONNS/max\tREFUSED")
	for _, e := range st.ENIs {
		groups := strings.Join(e.SecurityGroups, ",")
		if groups == "" {
			groups = "-"
		}
		acl := e.NetworkACL
		if acl == "" {
			acl = "default"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s/%d\t%s\t%s\t%d/%d\t%s\t%d/%d\t%d/%d\t%d/%d\t%d\n", e.Name, e.Interface, e.IP, e.VPC, e.VNI,
			e.Subnet, groups, e.IngressRules, e.EgressRules, acl, e.IngressPackets, e.IngressBytes, e.EgressPackets, e.EgressBytes,
			e.Connections, e.MaxConnections, e.ConntrackAllowanceDrops)
	}
	fmt.Fprintf(w, "\nmemory: daemon %.1f MiB resident; BPF maps %.1f MiB", float64(st.ResidentBytes)/(1<<20), float64(st.MapMemoryBytes)/(1<<20))
	if len(st.MapMemory) > 0 {
		fmt.Fprintf(w, " (largest: ")
		for i, m := range st.MapMemory[:min(3, len(st.MapMemory))] {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s %.1f MiB", m.Name, float64(m.Bytes)/(1<<20))
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintf(w, "\ncpus: %d of the host's %d\n", st.CPUs, st.HostCPUs)
	if cp := st.ControlPlane; cp != nil {
		conn, reg := "no", "no"
		if cp.Connected {
			conn = "yes"
		}
		if cp.Registered {
			reg = "yes"
		}
		fmt.Fprintf(w, "control plane: etcd %s (prefix %s)  connected %s  registered %s  revision %d  last apply %.1f ms",
			strings.Join(cp.Endpoints, ","), cp.Prefix, conn, reg, cp.Revision, cp.LastApplySeconds*1000)
		for _, op := range []string{"read", "watch", "decode", "register", "keepalive"} {
			if n := cp.Errors[op]; n > 0 {
				fmt.Fprintf(w, "  %s errors %.0f", op, n)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\nATTACHED\tHOOK\tPROGRAM\tID")
	for _, a := range st.Attachments {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", a.Interface, a.Hook, a.Program, a.ProgramID)
	}
	if len(st.Mirrors) > 0 {
		fmt.Fprintln(w, "\nMIRROR SESSION\tSOURCE\tTARGET\tVNI\tPACKETS\tDROPPED\tERRORS")
		for _, m := range st.Mirrors {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", m.Name, m.Source, m.Target, m.VNI, m.Packets, m.Dropped, m.Errors)
		}
	}
	if len(st.FlowLogs) > 0 {
		fmt.Fprintln(w, "\nFLOW LOG\tDESTINATION\tENIS\tRECORDS\tLOST\tERRORS")
		for _, f := range st.FlowLogs {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\n", f.Name, f.Destination, f.ENIs, f.Records, f.Lost, f.Errors)
		}
	}
	fmt.Fprintln(w, "\nDROP REASON\tPACKETS")
	reasons := make([]string, 0, len(st.Drops))
	for r := range st.Drops {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "%s\t%d\n", r, st.Drops[r])
	}
	if len(reasons) == 0 {
		fmt.Fprintln(w, "(none)\t0")
	}
	w.Flush()
}
