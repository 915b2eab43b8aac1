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

// autoCPUs is the default budget for a host with ncpu CPUs: a quarter of
// them, at least one.
func autoCPUs(ncpu int) int {
	return max(1, ncpu/4)
}

// cpuBudget decides the budget from the --cpus flag (set reports whether
// it was given), the GOMAXPROCS environment variable and the host's CPUs.
// It returns 0 when the environment's setting stands, and the source of
// the decision for the log.
func cpuBudget(flag int, set bool, env string, ncpu int) (int, string, error) {
	switch {
	case set && flag < 0:
		return 0, "", fmt.Errorf("--cpus: %d is negative", flag)
	case set && flag > 0:
		return min(flag, ncpu), "--cpus", nil
	case set:
		return ncpu, "--cpus 0 (all)", nil
	case env != "":
		if n, err := strconv.Atoi(env); err == nil && n > 0 {
			return 0, "GOMAXPROCS", nil
		}
	}
	return autoCPUs(ncpu), "default (a quarter of the host's CPUs)", nil
}
