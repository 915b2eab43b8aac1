package agent

import (
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpcd/vpcd/dataplane"
)

// Event is one line of `vpcd monitor`: a dropped packet or a flow's counts
// from the last drain.
type Event struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`    // "drop" or "flow"
	Verdict   string    `json:"verdict"` // DROP, ACCEPT or REJECT
	Reason    string    `json:"reason,omitempty"`
	ENI       string    `json:"eni,omitempty"`
	Direction string    `json:"direction,omitempty"`
	Hook      string    `json:"hook,omitempty"`
	Protocol  uint8     `json:"protocol"`
	Src       string    `json:"src,omitempty"`
	Dst       string    `json:"dst,omitempty"`
	SrcPort   uint16    `json:"src_port,omitempty"`
	DstPort   uint16    `json:"dst_port,omitempty"`
	Packets   uint64    `json:"packets,omitempty"`
	Bytes     uint64    `json:"bytes,omitempty"`
}

// hub fans events out to monitor clients. A slow client loses events
// (counted); nobody waits for it.
type hub struct {
	mu      sync.Mutex // guards clients
	clients map[chan Event]bool
	lost    atomic.Uint64
	// onCount is called with the number of clients whenever it changes.
	onCount func(int)
}

func (h *hub) subscribe() chan Event {
	ch := make(chan Event, 4096)
	h.mu.Lock()
	h.clients[ch] = true
	n := len(h.clients)
	h.mu.Unlock()
	h.onCount(n)
	return ch
}

func (h *hub) unsubscribe(ch chan Event) {
	h.mu.Lock()
	delete(h.clients, ch)
	n := len(h.clients)
	h.mu.Unlock()
	h.onCount(n)
}

func (h *hub) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients) > 0
}

func (h *hub) publish(ev Event) {
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

// startMonitor reads the datapath's drop events and publishes them; the
// datapath emits them only while a client listens.
func (a *Agent) startMonitor() error {
	a.hub = &hub{clients: map[chan Event]bool{}, onCount: func(n int) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.dp.SetMonitor(n > 0); err != nil {
			a.log.Warn("monitor flag", "err", err)
		}
	}}
	r, err := a.dp.Events()
	if err != nil {
		return err
	}
	a.events = r
	go func() {
		for {
			ev, err := r.Read()
			if err != nil {
				return
			}
			a.hub.publish(a.dropEvent(ev))
		}
	}()
	return nil
}

// dropEvent names the ENI a drop happened at: the interface's ENI, or for
// the tunnel the local ENI the packet was for.
func (a *Agent) dropEvent(ev dataplane.DropEvent) Event {
	out := Event{Time: ev.Time, Kind: "drop", Verdict: "DROP", Reason: ev.Reason, Direction: ev.Direction.String(),
		Hook: ev.Hook, Protocol: ev.Protocol, SrcPort: ev.SrcPort, DstPort: ev.DstPort}
	if ev.Src.IsValid() {
		out.Src, out.Dst = ev.Src.String(), ev.Dst.String()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev.Hook == "tunnel" {
		for _, e := range a.localENIs() {
			if _, vpc := a.topo.SubnetByName(e.Subnet); vpc != nil && vpc.VNI == ev.VNI && e.IP == ev.Dst {
				out.ENI = e.Name
			}
		}
		return out
	}
	out.ENI = a.ifENI[ev.Ifindex]
	return out
}

// publishFlows sends a drain's samples to monitor clients.
func (a *Agent) publishFlows(d dataplane.FlowDrain) {
	if a.hub == nil || !a.hub.active() {
		return
	}
	for _, s := range d.Samples {
		v := "ACCEPT"
		if s.Reject {
			v = "REJECT"
		}
		a.hub.publish(Event{Time: s.Last, Kind: "flow", Verdict: v, ENI: s.ENI, Direction: s.Direction.String(),
			Protocol: s.Protocol, Src: s.Src.String(), Dst: s.Dst.String(), SrcPort: s.SrcPort, DstPort: s.DstPort,
			Packets: s.Packets, Bytes: s.Bytes})
	}
}

// serveMonitor streams events to one control-socket client as JSON lines
// until it goes away.
func (a *Agent) serveMonitor(c net.Conn) {
	if a.hub == nil {
		json.NewEncoder(c).Encode(response{Error: "monitor unavailable"})
		return
	}
	c.SetDeadline(time.Time{})
	ch := a.hub.subscribe()
	defer a.hub.unsubscribe(ch)
	gone := make(chan struct{})
	go func() { // the client closing its end ends the stream
		buf := make([]byte, 1)
		c.Read(buf)
		close(gone)
	}()
	enc := json.NewEncoder(c)
	for {
		select {
		case ev := <-ch:
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := enc.Encode(ev); err != nil {
				return
			}
		case <-gone:
			return
		}
	}
}
