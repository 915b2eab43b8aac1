// Package limits holds the sizes of vpcd's datapath (maps, rule sets,
// mirror filters), generated from the BTF of the compiled programs (enum
// vpcd_limit in bpf/lib/limits.h). It has no dependencies, so packages that
// must not pull in the eBPF loader (the topology validator) read the same
// numbers the programs were built with.
package limits
