// Package flowlogs will produce AWS-style VPC flow logs from counters the
// eBPF datapath keeps (issue #4). Nothing is implemented yet: topologies may
// name flow logs, and vpcd validates them, but no records are written.
package flowlogs
