package source

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vpcd/vpcd/topology"
)

// LoadFile reads and validates the topology file at path for host: the
// file must be valid and name host, and every peer must have a public key.
func LoadFile(path, host string) (*topology.Topology, error) {
	t, err := topology.Load(path)
	if err != nil {
		return nil, err
	}
	if t.HostByName(host) == nil {
		return nil, fmt.Errorf("%s: host %q is not in hosts", path, host)
	}
	if err := t.RequireKeys(host); err != nil {
		return nil, err
	}
	return t, nil
}

// DefaultPoll is how often File checks its file for a change by default.
const DefaultPoll = 2 * time.Second

// File is the topology file as a Source: it sends the file's topology
// first, then reads the file again whenever its modification time
// changes (checked every Poll), Trigger fires (SIGHUP) or Reload is
// called. A read that fails (the file does not parse, does not validate,
// or does not name Host) is sent as a Snapshot with Err.
type File struct {
	Path string
	Host string
	Poll time.Duration // 0 = DefaultPoll
	// Trigger, when set, makes File read the file again on every value
	// (cmd/vpcd sends one per SIGHUP).
	Trigger <-chan struct{}

	once    sync.Once
	reloads chan reloadRequest // Reload → Run
}

type reloadRequest struct {
	cause string
	sent  chan int64 // the revision of the snapshot, once sent
}

func (f *File) init() { f.once.Do(func() { f.reloads = make(chan reloadRequest) }) }

// Run implements Source. It returns ctx's error when ctx ends.
func (f *File) Run(ctx context.Context, out chan<- Snapshot) error {
	f.init()
	poll := f.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	var rev int64
	var mod time.Time
	read := func(cause string) Snapshot {
		// The modification time is noted before the read: a write during
		// the read is seen by the next poll.
		if st, err := os.Stat(f.Path); err == nil {
			mod = st.ModTime()
		}
		rev++
		s := Snapshot{Revision: rev, Origin: "file:" + f.Path, Cause: cause}
		s.Topology, s.Err = LoadFile(f.Path, f.Host)
		if s.Err != nil {
			s.Topology = nil
		}
		return s
	}
	send := func(s Snapshot) error {
		select {
		case out <- s:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := send(read("start")); err != nil {
		return err
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		var s Snapshot
		var req *reloadRequest
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.Trigger:
			s = read("signal")
		case r := <-f.reloads:
			s, req = read(r.cause), &r
		case <-tick.C:
			st, err := os.Stat(f.Path)
			if err != nil || st.ModTime().Equal(mod) {
				continue
			}
			s = read("file change")
		}
		if err := send(s); err != nil {
			return err
		}
		if req != nil {
			req.sent <- s.Revision
		}
	}
}

// Reload implements Reloader: it reads the file now and returns the
// revision of the snapshot once Run has handed it over.
func (f *File) Reload(ctx context.Context, cause string) (int64, error) {
	f.init()
	r := reloadRequest{cause: cause, sent: make(chan int64, 1)}
	select {
	case f.reloads <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case rev := <-r.sent:
		return rev, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
