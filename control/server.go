package control

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Daemon is what the control socket serves; the agent implements it.
type Daemon interface {
	// Status builds the current status, with every tracked connection
	// when conntrack is set.
	Status(conntrack bool) *Status
	// Reload reads the topology again and returns once the result is
	// applied or refused.
	Reload(cause string)
	// Subscribe starts a stream of events; cancel ends it. An error
	// means the daemon has no events to give.
	Subscribe() (events <-chan Event, cancel func(), err error)
}

// KeyRotator is a Daemon that can replace its key pair (rotate-key).
type KeyRotator interface {
	RotateKey() error
}

// Listen serves d on a root-only (0600) unix socket at path, replacing a
// socket a crashed daemon left. Closing the listener stops it; the caller
// removes the socket file.
func Listen(path string, d Daemon) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	os.Remove(path) // a socket a crashed daemon left
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go Handle(c, d)
		}
	}()
	return l, nil
}

// Handle answers one client's request on c and closes c.
func Handle(c net.Conn, d Daemon) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(queryTimeout))
	var req Request
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Cmd {
	case CmdStatus:
		json.NewEncoder(c).Encode(Response{Status: d.Status(req.Conntrack)})
	case CmdMonitor:
		serveMonitor(c, d)
	case CmdReload:
		d.Reload("control socket")
		json.NewEncoder(c).Encode(Response{Status: d.Status(false)})
	case CmdRotateKey:
		r, ok := d.(KeyRotator)
		if !ok {
			json.NewEncoder(c).Encode(Response{Error: "this daemon cannot rotate its key"})
			return
		}
		if err := r.RotateKey(); err != nil {
			json.NewEncoder(c).Encode(Response{Error: err.Error()})
			return
		}
		json.NewEncoder(c).Encode(Response{Status: d.Status(false)})
	case CmdENIAdd, CmdENIDel, CmdENIList:
		serveENI(c, d, req)
	default:
		json.NewEncoder(c).Encode(Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
	}
}

// serveMonitor streams events to one client as JSON lines until it goes
// away.
func serveMonitor(c net.Conn, d Daemon) {
	events, cancel, err := d.Subscribe()
	if err != nil {
		json.NewEncoder(c).Encode(Response{Error: err.Error()})
		return
	}
	defer cancel()
	c.SetDeadline(time.Time{})
	gone := make(chan struct{})
	go func() { // the client closing its end ends the stream
		buf := make([]byte, 1)
		c.Read(buf)
		close(gone)
	}()
	enc := json.NewEncoder(c)
	for {
		select {
		case ev := <-events:
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := enc.Encode(ev); err != nil {
				return
			}
		case <-gone:
			return
		}
	}
}

// Hub fans events out to monitor clients. A slow client loses events
// (counted in Lost); nobody waits for it.
type Hub struct {
	mu      sync.Mutex // guards clients
	clients map[chan Event]bool
	lost    atomic.Uint64
	// onCount is called with the number of clients whenever it changes.
	onCount func(int)
}

// NewHub returns a hub that calls onCount (if not nil) with the number of
// clients whenever it changes: a daemon emits events only while someone
// listens.
func NewHub(onCount func(int)) *Hub {
	if onCount == nil {
		onCount = func(int) {}
	}
	return &Hub{clients: map[chan Event]bool{}, onCount: onCount}
}

// Subscribe adds a client; cancel removes it.
func (h *Hub) Subscribe() (events <-chan Event, cancel func()) {
	ch := make(chan Event, 4096)
	h.mu.Lock()
	h.clients[ch] = true
	n := len(h.clients)
	h.mu.Unlock()
	h.onCount(n)
	return ch, func() {
		h.mu.Lock()
		delete(h.clients, ch)
		n := len(h.clients)
		h.mu.Unlock()
		h.onCount(n)
	}
}

// Active reports whether any client listens.
func (h *Hub) Active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients) > 0
}

// Publish hands ev to every client that has room for it.
func (h *Hub) Publish(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.clients {
		select {
		case ch <- ev:
		default:
			h.lost.Add(1)
		}
	}
}

// Lost is how many events slow clients lost.
func (h *Hub) Lost() uint64 { return h.lost.Load() }
