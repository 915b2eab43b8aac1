// Package source delivers the topology a daemon must program: from a file
// (the embedded default, reloaded on SIGHUP or a change of the file) or
// from the etcd control plane. The daemon is source → planner → datapath;
// a new source plugs in here without touching the planner.
package source

import (
	"context"

	"github.com/vpcd/vpcd/topology"
)

// Snapshot is one state of the topology, whole and valid, or the error of
// a change that was refused (Err set, Topology nil): the daemon keeps what
// it runs and counts the refusal.
type Snapshot struct {
	Topology *topology.Topology
	// Revision orders snapshots: the etcd revision they were read at, or
	// a counter of the file's reloads.
	Revision int64
	// Origin names where it came from, for logs and status
	// ("file:/etc/vpcd/topology.yaml", "etcd:https://10.0.0.1:2379").
	Origin string
	// Cause says what prompted the read, for logs ("start", "signal",
	// "file change", "control socket", "watch"); "" when unknown.
	Cause string
	Err   error
}

// A Source sends the current topology first, then every change, on out
// until ctx ends or it fails for good (the returned error). It never
// sends a topology that did not validate.
type Source interface {
	Run(ctx context.Context, out chan<- Snapshot) error
}

// A Reloader is a Source that can be asked to read its origin again at
// once (`reload` on the control socket). Reload returns the Revision of
// the snapshot that read produced, once Run has sent it on its channel.
type Reloader interface {
	Reload(ctx context.Context, cause string) (int64, error)
}
