package control

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
)

// fakeDaemon is a Daemon in memory.
type fakeDaemon struct {
	hub       *Hub
	reloads   atomic.Int32
	conntrack atomic.Bool // the last Status asked for connections
	noEvents  bool
}

func (d *fakeDaemon) Status(conntrack bool) *Status {
	d.conntrack.Store(conntrack)
	return &Status{Host: "h1", ENIs: []ENIStatus{{Name: "a1"}}, Drops: map[string]uint64{"sg_ingress": uint64(d.reloads.Load())}}
}

func (d *fakeDaemon) Reload(string) { d.reloads.Add(1) }

func (d *fakeDaemon) Subscribe() (<-chan Event, func(), error) {
	if d.noEvents {
		return nil, nil, errors.New("monitor unavailable")
	}
	ch, cancel := d.hub.Subscribe()
	return ch, cancel, nil
}

func serve(t *testing.T, d Daemon) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "vpcd.sock")
	l, err := Listen(path, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return path
}

func TestStatusAndReload(t *testing.T) {
	var clients atomic.Int32
	d := &fakeDaemon{hub: NewHub(func(n int) { clients.Store(int32(n)) })}
	sock := serve(t, d)
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v mode %v, want 0600", err, st.Mode())
	}
	st, err := QueryStatus(sock)
	if err != nil || st.Host != "h1" || len(st.ENIs) != 1 || d.conntrack.Load() {
		t.Fatalf("status %+v %v (conntrack asked: %v)", st, err, d.conntrack.Load())
	}
	if _, err := QueryConntrack(sock); err != nil || !d.conntrack.Load() {
		t.Fatalf("conntrack: %v (asked: %v)", err, d.conntrack.Load())
	}
	// Reload answers with the status after the reload.
	st, err = Reload(sock)
	if err != nil || d.reloads.Load() != 1 || st.Drops["sg_ingress"] != 1 {
		t.Fatalf("reload: %+v %v", st, err)
	}
	// The raw protocol: one JSON request, one JSON response.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	json.NewEncoder(c).Encode(map[string]string{"cmd": "bogus"})
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil || !strings.Contains(resp.Error, `unknown command "bogus"`) {
		t.Fatalf("unknown command: %+v %v", resp, err)
	}
}

func TestNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	if _, err := QueryStatus(sock); err == nil || !strings.Contains(err.Error(), "no daemon at") {
		t.Fatalf("no daemon: %v", err)
	}
	if err := Monitor(sock, func(Event) bool { return true }); err == nil {
		t.Fatal("monitor without a daemon")
	}
}

// TestMonitor: events reach a client in order until it stops; its leaving
// unsubscribes it.
func TestMonitor(t *testing.T) {
	var clients atomic.Int32
	d := &fakeDaemon{hub: NewHub(func(n int) { clients.Store(int32(n)) })}
	sock := serve(t, d)
	var got []Event
	var wg sync.WaitGroup
	wg.Add(1)
	var monErr error
	go func() {
		defer wg.Done()
		monErr = Monitor(sock, func(ev Event) bool {
			got = append(got, ev)
			return len(got) < 3
		})
	}()
	testkit.WaitFor(t, 10*time.Second, "a monitor client", func() bool { return clients.Load() == 1 && d.hub.Active() })
	for i := range 3 {
		d.hub.Publish(Event{Kind: "drop", Verdict: "DROP", Reason: "sg_ingress", SrcPort: uint16(i)})
	}
	wg.Wait()
	if monErr != nil || len(got) != 3 || got[2].SrcPort != 2 || got[0].Reason != "sg_ingress" {
		t.Fatalf("monitor: %v %+v", monErr, got)
	}
	testkit.WaitFor(t, 10*time.Second, "the client's leaving", func() bool { return clients.Load() == 0 && !d.hub.Active() })
}

func TestMonitorUnavailable(t *testing.T) {
	sock := serve(t, &fakeDaemon{noEvents: true})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	json.NewEncoder(c).Encode(Request{Cmd: CmdMonitor})
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil || resp.Error != "monitor unavailable" {
		t.Fatalf("%+v %v", resp, err)
	}
}

// TestHubSlowClient: a client that does not read loses events, counted;
// publishing never waits for it.
func TestHubSlowClient(t *testing.T) {
	h := NewHub(nil)
	_, cancel := h.Subscribe()
	defer cancel()
	for range 5000 {
		h.Publish(Event{Kind: "drop"})
	}
	if h.Lost() != 5000-4096 {
		t.Fatalf("lost %d, want %d", h.Lost(), 5000-4096)
	}
}
