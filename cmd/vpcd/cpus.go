package main

import (
	"fmt"
	"strconv"
)

// The daemon's CPU budget: how many threads may run its Go code at once
// (GOMAXPROCS). The datapath's per-byte work (encryption, the tunnel
// device's system calls) runs on these; the workloads keep the rest of the
// host, as on a Nitro host, where the network runs on cores of its own.
//
// Measured on the 2-core bench machine (docs/datapath.md): with two Ps
// every daemon's scheduler spins looking for work between packets, about
// a fifth of its CPU time; with one, the same transfer takes 23% less
// user time and runs ~10% faster.

// autoCPUs is the default budget when the runtime would use avail CPUs (the
// host's, or fewer under a cgroup CPU limit): a quarter of them, at least
// one.
func autoCPUs(avail int) int {
	return max(1, avail/4)
}

// cpuBudget decides the budget from the --cpus flag (set reports whether
// it was given), the GOMAXPROCS environment variable and avail, the CPUs
// the Go runtime would use by itself (runtime.GOMAXPROCS(0) before any
// change: the host's, or its cgroup's CPU limit). It returns 0 when the
// runtime's own setting stands (it then follows later changes of the
// limit), and the source of the decision for the log.
func cpuBudget(flag int, set bool, env string, avail int) (int, string, error) {
	switch {
	case set && flag < 0:
		return 0, "", fmt.Errorf("--cpus: %d is negative", flag)
	case set && flag > 0:
		return min(flag, avail), "--cpus", nil
	case set:
		return 0, "--cpus 0 (the Go runtime's own choice)", nil
	case env != "":
		if n, err := strconv.Atoi(env); err == nil && n > 0 {
			return 0, "GOMAXPROCS", nil
		}
	}
	return autoCPUs(avail), "default (a quarter of the CPUs available)", nil
}
