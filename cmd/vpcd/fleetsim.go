package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/vpcd/vpcd/controlplane/fleetsim"
)

func cmdFleetSim(args []string) error {
	fs := newFlags("fleet-sim", "fleet-sim --etcd URLS --hosts N [--enis-per-host K] [--json] [--restart-cmd CMD]")
	ef := addEtcdFlags(fs)
	// Its own prefix and a longer wait than the other etcd commands: a
	// simulation must never clear a real fleet's keys, and a phase of
	// 1,000 hosts takes a while.
	ef.prefix, ef.timeout = fleetsim.DefaultPrefix, 2*time.Minute
	fs.Lookup("etcd-prefix").DefValue = fleetsim.DefaultPrefix
	fs.Lookup("timeout").DefValue = ef.timeout.String()
	hosts := fs.Int("hosts", 0, "simulated hosts (required, ≥ 2)")
	enis := fs.Int("enis-per-host", 2, "ENIs per simulated host")
	vpcs := fs.Int("vpcs", 4, "VPCs the ENIs are spread over")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	restart := fs.String("restart-cmd", "", "shell command that restarts etcd and returns once it answers: measures the herd after an etcd restart")
	noShare := fs.Bool("no-share", false, "every simulated host decodes and validates every state itself (simulator CPU grows with N²)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (pprof) of the run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile (pprof) to this file once the base converged")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := ef.config()
	if err != nil {
		return fmt.Errorf("fleet-sim: %w", err)
	}
	if *hosts < 2 {
		return fmt.Errorf("fleet-sim: --hosts N (at least 2) is required")
	}
	var logOut io.Writer = os.Stderr
	if *quiet {
		logOut = io.Discard
	}
	sc := fleetsim.Config{
		Etcd:        cfg,
		Prefix:      ef.prefix,
		Hosts:       *hosts,
		ENIsPerHost: *enis,
		VPCs:        *vpcs,
		NoShare:     *noShare,
		Timeout:     ef.timeout,
		Logger:      slog.New(slog.NewTextHandler(logOut, nil)),
	}
	if *restart != "" {
		sc.Restart = func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", *restart)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			return cmd.Run()
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("fleet-sim: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("fleet-sim: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return fmt.Errorf("fleet-sim: %w", err)
		}
		defer f.Close()
		sc.HeapProfile = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, runErr := fleetsim.Run(ctx, sc)
	if res != nil {
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
		} else {
			printFleetSim(os.Stdout, res)
		}
	}
	return runErr
}

func printFleetSim(w io.Writer, r *fleetsim.Result) {
	fmt.Fprintf(w, "fleet-sim: %d hosts, %d ENIs each, %d VPCs, %d objects; lease TTL %d s\n",
		r.Hosts, r.ENIsPerHost, r.VPCs, r.Objects, r.TTLSeconds)
	fmt.Fprintf(w, "registered every host in %.0f ms; base programmed on every host in %.0f ms (%d full reads)\n",
		r.RegisterMs, r.BaseMs, r.BaseReads)
	fmt.Fprintf(w, "heap per simulated host: %d KiB (plus one decoded topology, %d KiB, shared)\n",
		r.MemPerHost/1024, r.TopologyBytes/1024)
	share := "off: every host decodes every state itself"
	if r.SharedAssembly {
		share = "on: each revision decoded and validated once for all simulated hosts, as each real daemon does once"
	}
	fmt.Fprintf(w, "shared assembly %s; one assembly %.1f ms; one plan %.2f ms\n", share, r.AssembleMs, r.PlanMs)
	fmt.Fprintf(w, "idle load: %.0f etcd requests/s (lease keepalives)\n", r.IdleRequestsPerSecond)
	fmt.Fprintf(w, "\n%-20s %7s %9s %7s %8s %8s %8s %8s %9s %9s\n", "change", "needed", "converged", "apply", "p50", "p99", "max", "req/host", "events/h", "snaps/h")
	for _, c := range r.Changes {
		fmt.Fprintf(w, "%-20s %7d %9d %5.0fms %6.0fms %6.0fms %6.0fms %8.2f %9.2f %9.2f\n",
			c.Name, c.Needed, c.Converged, c.ApplyMs, c.P50Ms, c.P99Ms, c.MaxMs, c.RequestsPerHost, c.EventsPerHost, c.SnapshotsPerHost)
	}
	if h := r.Herd; h != nil {
		server := "n/a"
		if h.PeakServerRPS >= 0 {
			server = fmt.Sprintf("%.0f/s", h.PeakServerRPS)
		}
		fmt.Fprintf(w, "\netcd restart: down %.0f ms; every client reconnected %.0f ms and every watch resumed %.0f ms after etcd answered (%d of %d hosts); %d full re-reads; peak load %.0f requests/s sent, %s received by etcd; %d registrations live after\n",
			h.RestartMs, h.ReconnectMs, h.ResumeMs, h.Resumed, r.Hosts, h.FullReads, h.PeakClientRPS, server, h.Registrations)
	}
	if r.PlanErrors > 0 {
		fmt.Fprintf(w, "plan errors: %d\n", r.PlanErrors)
	}
	fmt.Fprintf(w, "\nlimits: %s\n", r.Limits)
}
