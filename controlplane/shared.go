package controlplane

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpcd/vpcd/topology"
)

// SharedAssembly lets the Sources of one process (fleet-sim's simulated
// hosts) decode and validate each state once instead of once per Source.
// A real daemon has one Source and assembles every state once; N
// simulated hosts in one process would do the same work N times on the
// same CPUs, which measures the simulator's CPU, not a host's latency.
//
// Sharing is exact: the state a Source assembles at a revision is a
// function of etcd's history up to that revision (the objects of the last
// commit at or before it and the registrations live at it), so every
// Source that reached the same revision holds equal inputs. The key adds
// the commit revision and the numbers of objects and registrations as a
// cross-check. The first Source to need a revision assembles it; the
// others wait for that result, so each one's latency still includes one
// assembly. Results are read-only: a consumer must not modify the
// topology. A daemon leaves Source.Shared nil.
type SharedAssembly struct {
	mu      sync.Mutex
	entries map[assemblyKey]*assembly
	newest  int64

	assemblies atomic.Int64 // how many states were assembled
	nanos      atomic.Int64 // time spent assembling them
	shared     atomic.Int64 // requests answered by another Source's assembly
}

type assemblyKey struct {
	rev, commitRev int64
	objs, hosts    int
}

type assembly struct {
	done chan struct{}
	t    *topology.Topology
	err  error
}

// keepRevisions bounds how many revisions a SharedAssembly remembers; a
// Source that falls further behind assembles again (same result, more CPU).
const keepRevisions = 8

// NewSharedAssembly makes an empty SharedAssembly.
func NewSharedAssembly() *SharedAssembly {
	return &SharedAssembly{entries: map[assemblyKey]*assembly{}}
}

// SharedAssemblyStats are a SharedAssembly's counters.
type SharedAssemblyStats struct {
	Assemblies int64         // states decoded and validated
	Total      time.Duration // time spent doing it
	Shared     int64         // requests served by another Source's work
}

// Stats returns the counters.
func (s *SharedAssembly) Stats() SharedAssemblyStats {
	return SharedAssemblyStats{
		Assemblies: s.assemblies.Load(),
		Total:      time.Duration(s.nanos.Load()),
		Shared:     s.shared.Load(),
	}
}

// assemble returns st's topology at rev, assembling it when no other
// Source did.
func (s *SharedAssembly) assemble(rev int64, st *state) (*topology.Topology, error) {
	key := assemblyKey{rev, st.commitRev, len(st.objs), len(st.hosts)}
	s.mu.Lock()
	if a, ok := s.entries[key]; ok {
		s.mu.Unlock()
		<-a.done
		s.shared.Add(1)
		return a.t, a.err
	}
	a := &assembly{done: make(chan struct{})}
	s.entries[key] = a
	if rev > s.newest {
		s.newest = rev
		for k := range s.entries {
			if k.rev <= s.newest-keepRevisions {
				delete(s.entries, k)
			}
		}
	}
	s.mu.Unlock()
	start := time.Now()
	a.t, a.err = assemble(st.objs, st.hosts)
	s.nanos.Add(int64(time.Since(start)))
	s.assemblies.Add(1)
	close(a.done)
	return a.t, a.err
}
