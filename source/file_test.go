package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const oneHost = `version: 1
hosts:
  - {name: h1, underlay_ip: 198.18.0.1}
vpcs:
  - name: blue
    vni: 1001
    cidr: 10.0.0.0/16
    subnets: [{name: blue-a, cidr: 10.0.1.0/24}]
enis:
  - {name: a1, host: h1, subnet: blue-a, ip: 10.0.1.10}
`

// next waits for the next snapshot.
func next(t *testing.T, out <-chan Snapshot) Snapshot {
	t.Helper()
	select {
	case s := <-out:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot within 10 s")
	}
	return Snapshot{}
}

func write(t *testing.T, path, data string, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	// An explicit modification time: two writes within the file system's
	// timestamp granularity must still differ.
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func startFile(t *testing.T, f *File) (chan Snapshot, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, done := make(chan Snapshot), make(chan error, 1)
	go func() { done <- f.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run ended with %v, want context.Canceled", err)
		}
	})
	return out, done
}

// TestFile: the first snapshot, then one per change of the file, per
// trigger and per Reload, each with a higher revision; an invalid file is
// a snapshot with Err and no topology.
func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "topology.yaml")
	base := time.Now().Add(-time.Hour)
	write(t, path, oneHost, base)
	trigger := make(chan struct{})
	f := &File{Path: path, Host: "h1", Poll: 10 * time.Millisecond, Trigger: trigger}
	out, _ := startFile(t, f)

	s := next(t, out)
	if s.Err != nil || s.Topology == nil || s.Revision != 1 || s.Origin != "file:"+path || s.Cause != "start" {
		t.Fatalf("first snapshot %+v", s)
	}
	if e := s.Topology.ENIByName("a1"); e == nil {
		t.Fatal("the first snapshot has no ENI a1")
	}

	write(t, path, strings.Replace(oneHost, "10.0.1.10", "10.0.1.11", 1), base.Add(time.Second))
	s = next(t, out)
	if s.Err != nil || s.Cause != "file change" || s.Revision != 2 || s.Topology.ENIByName("a1").IP.String() != "10.0.1.11" {
		t.Fatalf("after a change: %+v", s)
	}

	trigger <- struct{}{}
	if s = next(t, out); s.Err != nil || s.Cause != "signal" || s.Revision != 3 {
		t.Fatalf("after the trigger: %+v", s)
	}

	write(t, path, strings.Replace(oneHost, "ip: 10.0.1.10", "ip: 10.0.2.10", 1), base.Add(2*time.Second))
	s = next(t, out)
	if s.Err == nil || s.Topology != nil || s.Revision != 4 {
		t.Fatalf("an ENI outside its subnet: %+v", s)
	}
	if !strings.Contains(s.Err.Error(), "enis[0].ip") {
		t.Errorf("the error does not name the field: %v", s.Err)
	}

	// Reload: read now, and say which revision the read became.
	revs := make(chan int64, 1)
	go func() {
		rev, err := f.Reload(context.Background(), "control socket")
		if err != nil {
			t.Error(err)
		}
		revs <- rev
	}()
	s = next(t, out)
	if s.Cause != "control socket" || s.Revision != 5 || s.Err == nil {
		t.Fatalf("after Reload: %+v", s)
	}
	if rev := <-revs; rev != 5 {
		t.Errorf("Reload returned revision %d, want 5", rev)
	}

	// No change, no snapshot.
	select {
	case s := <-out:
		t.Errorf("a snapshot without a change: %+v", s)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestFileFirstInvalid: a file that names another host is refused from
// the start.
func TestFileFirstInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "topology.yaml")
	write(t, path, oneHost, time.Now())
	out, _ := startFile(t, &File{Path: path, Host: "h9"})
	if s := next(t, out); s.Err == nil || !strings.Contains(s.Err.Error(), `"h9"`) {
		t.Fatalf("snapshot %+v, want an error naming h9", s)
	}
}

// TestFileKeys: a peer without a public key is refused (run needs every
// peer's key).
func TestFileKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "topology.yaml")
	write(t, path, strings.Replace(oneHost, "hosts:\n", "hosts:\n  - {name: h2, underlay_ip: 198.18.0.2}\n", 1), time.Now())
	if _, err := LoadFile(path, "h1"); err == nil {
		t.Fatal("a peer without a key was accepted")
	}
}

// TestReloadEndsWithContext: Reload with nobody running gives up with its
// context.
func TestReloadEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := (&File{Path: "/nonexistent"}).Reload(ctx, "test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reload without Run: %v", err)
	}
}

var _ Reloader = (*File)(nil)
