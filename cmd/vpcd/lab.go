package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vpcd/vpcd/lab"
)

const labSynopsis = `lab up --topology FILE [--name LAB] [--etcd]
       vpcd lab exec [--name LAB] ENI -- CMD...
       vpcd lab host [--name LAB] HOST -- CMD...
       vpcd lab rack [--name LAB] -- CMD...
       vpcd lab status|down [--name LAB]
       vpcd lab apply [--name LAB] --topology FILE
       vpcd lab restart|kill|start [--name LAB] HOST
       vpcd lab vm up|down [--name LAB] ENI
       vpcd lab vm exec [--name LAB] ENI -- CMD...`

func cmdLab(args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "vpcd: lab: missing subcommand: up, down, status, exec, host, rack, apply, restart, kill, start or vm (see vpcd lab --help)")
		return exitError{2}
	}
	if args[0] == "-h" || args[0] == "--help" {
		fmt.Println("usage: vpcd " + labSynopsis)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlags("lab "+sub, labSynopsis)
	name := fs.String("name", lab.DefaultName(), "lab name")
	var topo, daemonFlags *string
	var etcd *bool
	if sub == "up" || sub == "apply" {
		topo = fs.String("topology", "", "topology file (required)")
	}
	if sub == "up" {
		daemonFlags = fs.String("daemon-flags", "", "extra flags for every host's vpcd run, e.g. \"--eni-hook xdp\"")
		etcd = fs.Bool("etcd", false, "run the lab on the etcd control plane: a real etcd in the rack (TLS), the topology written with vpcd apply, every daemon with --etcd")
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch sub {
	case "up":
		if *topo == "" {
			return errors.New("lab up: --topology is required")
		}
		bin, err := os.Executable()
		if err != nil {
			return err
		}
		_, err = lab.Up(ctx, lab.Options{Name: *name, TopologyPath: *topo, Binary: bin, Out: os.Stdout,
			DaemonFlags: strings.Fields(*daemonFlags), Etcd: *etcd})
		return err
	case "down":
		return lab.Down(*name)
	case "status":
		l, err := lab.Open(*name)
		if err != nil {
			return err
		}
		return l.Status(os.Stdout)
	case "apply":
		if *topo == "" {
			return errors.New("lab apply: --topology is required")
		}
		l, err := lab.Open(*name)
		if err != nil {
			return err
		}
		if err := l.Apply(ctx, *topo); err != nil {
			printTopologyErrors(*topo, err)
			return exitError{1}
		}
		return nil
	case "exec", "host", "rack":
		return labExec(ctx, sub, *name, pos)
	case "vm":
		return labVM(ctx, *name, pos)
	case "restart", "kill", "start":
		if len(pos) != 1 {
			return fmt.Errorf("lab %s: want exactly one HOST", sub)
		}
		l, err := lab.Open(*name)
		if err != nil {
			return err
		}
		switch sub {
		case "restart":
			return l.Restart(ctx, pos[0])
		case "kill":
			return l.Kill(pos[0])
		default:
			return l.Start(ctx, pos[0])
		}
	}
	return fmt.Errorf("lab: unknown subcommand %q", sub)
}

func labExec(ctx context.Context, sub, name string, pos []string) error {
	kind, target := lab.Rack, ""
	switch sub {
	case "exec":
		kind = lab.ENI
	case "host":
		kind = lab.Host
	}
	if kind != lab.Rack {
		if len(pos) == 0 || pos[0] == "--" {
			return fmt.Errorf("lab %s: want a target before --", sub)
		}
		target, pos = pos[0], pos[1:]
	}
	if len(pos) > 0 && pos[0] == "--" {
		pos = pos[1:]
	}
	if len(pos) == 0 {
		return fmt.Errorf("lab %s: no command after --", sub)
	}
	l, err := lab.Open(name)
	if err != nil {
		return err
	}
	code, err := l.Exec(ctx, kind, target, pos, os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}
