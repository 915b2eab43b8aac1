// Command vpcd is the VPC dataplane daemon and its tools: run, status,
// keygen, validate, teardown, lab and demo (SPEC §1), apply and get (§11).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

type command struct {
	name    string
	summary string
	run     func(args []string) error
}

func commands() []command {
	return []command{
		{"run", "run the daemon for one host", cmdRun},
		{"status", "ask a running daemon for its state", cmdStatus},
		{"monitor", "stream drops and flows from a running daemon", cmdMonitor},
		{"keygen", "print a new WireGuard private key and its public key", cmdKeygen},
		{"validate", "check a topology file", cmdValidate},
		{"apply", "write a topology file's objects to etcd", cmdApply},
		{"get", "list what etcd holds: hosts, vpcs, enis...", cmdGet},
		{"rotate-key", "make a new key pair for this host and publish it (etcd mode)", cmdRotateKey},
		{"fleet-sim", "simulate N hosts against etcd and measure convergence", cmdFleetSim},
		{"teardown", "remove everything vpcd left on this host", cmdTeardown},
		{"lab", "build and drive a whole topology in network namespaces", cmdLab},
		{"demo", "build a built-in lab, send traffic, report, tear down", cmdDemo},
	}
}

// exitError carries an exit code without a message of its own (the message
// was printed already, e.g. validation errors, or a child's exit code).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: vpcd COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'vpcd COMMAND --help' for a command's flags.")
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "vpcd: missing command (see vpcd --help)")
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return report(c.run(args[1:]))
		}
	}
	fmt.Fprintf(os.Stderr, "vpcd: unknown command %q (see vpcd --help)\n", args[0])
	return 2
}

// report turns a command's error into an exit code and one line on stderr.
func report(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	msg := strings.TrimSpace(err.Error())
	fmt.Fprintln(os.Stderr, "vpcd: "+strings.ReplaceAll(msg, "\n", "; "))
	return 1
}

// newFlags makes a flag set whose --help prints usage to stdout and
// returns flag.ErrHelp.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fs.SetOutput(os.Stdout)
		fmt.Fprintf(os.Stdout, "usage: vpcd %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags interspersed with positional arguments. Everything
// from the first "--" on is returned as is, "--" included.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, exitError{2}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
