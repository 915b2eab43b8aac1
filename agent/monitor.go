package agent

import (
	"errors"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/dataplane"
)

// startMonitor reads the datapath's drop events and publishes them; the
// datapath emits them only while a client listens.
func (a *Agent) startMonitor() error {
	a.hub = control.NewHub(func(n int) {
		a.state.Lock()
		defer a.state.Unlock()
		if err := a.dp.SetMonitor(n > 0); err != nil {
			a.log.Warn("monitor flag", "err", err)
		}
	})
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
			a.hub.Publish(a.dropEvent(ev))
		}
	}()
	return nil
}

// Subscribe starts a stream of events for `vpcd monitor` (control.Daemon).
func (a *Agent) Subscribe() (<-chan control.Event, func(), error) {
	if a.hub == nil {
		return nil, nil, errors.New("monitor unavailable")
	}
	ch, cancel := a.hub.Subscribe()
	return ch, cancel, nil
}

// dropEvent names the ENI a drop happened at: the interface's ENI, or for
// the tunnel the local ENI the packet was for.
func (a *Agent) dropEvent(ev dataplane.DropEvent) control.Event {
	out := control.Event{Time: ev.Time, Kind: "drop", Verdict: "DROP", Reason: ev.Reason, Direction: ev.Direction.String(),
		Hook: ev.Hook, Protocol: ev.Protocol, SrcPort: ev.SrcPort, DstPort: ev.DstPort}
	if ev.Src.IsValid() {
		out.Src, out.Dst = ev.Src.String(), ev.Dst.String()
	}
	a.state.Lock()
	defer a.state.Unlock()
	if ev.Hook == "tunnel" {
		for _, e := range a.state.plan.ENIs {
			if e.VNI == ev.VNI && e.IP == ev.Dst {
				out.ENI = e.Name
			}
		}
		return out
	}
	out.ENI = a.state.ifENI[ev.Ifindex]
	return out
}

// publishFlows sends a drain's samples to monitor clients.
func (a *Agent) publishFlows(d dataplane.FlowDrain) {
	if a.hub == nil || !a.hub.Active() {
		return
	}
	for _, s := range d.Samples {
		v := "ACCEPT"
		if s.Reject {
			v = "REJECT"
		}
		a.hub.Publish(control.Event{Time: s.Last, Kind: "flow", Verdict: v, ENI: s.ENI, Direction: s.Direction.String(),
			Protocol: s.Protocol, Src: s.Src.String(), Dst: s.Dst.String(), SrcPort: s.SrcPort, DstPort: s.DstPort,
			Packets: s.Packets, Bytes: s.Bytes})
	}
}
