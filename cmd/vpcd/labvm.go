package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/vpcd/vpcd/lab"
)

// labVM runs `vpcd lab vm up|exec|down ENI`: a Linux VM on a tap ENI of
// the lab (QEMU microvm, lab/vm.go).
func labVM(ctx context.Context, name string, pos []string) error {
	if len(pos) < 2 {
		return fmt.Errorf("lab vm: want up|exec|down and an ENI")
	}
	op, eni, rest := pos[0], pos[1], pos[2:]
	l, err := lab.Open(name)
	if err != nil {
		return err
	}
	switch op {
	case "up":
		v, err := l.VMUp(ctx, eni)
		if err != nil {
			return err
		}
		fmt.Printf("VM on %s: QEMU PID %d, at its shell %v after start; console %s, log %s\n",
			eni, v.PID, v.Boot.Round(1e6), v.Console, v.Log)
		return nil
	case "down":
		return l.VMDown(eni)
	case "exec":
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return fmt.Errorf("lab vm exec: no command after --")
		}
		out, code, err := l.VMExec(ctx, eni, strings.Join(rest, " "))
		fmt.Print(out)
		if err != nil {
			return err
		}
		if code != 0 {
			return exitError{code}
		}
		return nil
	}
	return fmt.Errorf("lab vm: unknown operation %q (up, exec, down)", op)
}
