package lab

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vpcd/vpcd/tapio"
	"github.com/vpcd/vpcd/topology"
)

// PumpLink is the interface in a tap ENI's namespace that stands for the
// VMM's end: the other end of eth0's veth pair, up, with no address. A
// frame pump (tapio.Pump) joins it to the host's tap.
const PumpLink = "pump0"

// buildTapWorkload makes eth0 (the ENI's MAC) and PumpLink, a veth pair, in
// the tap ENI e's namespace, handled by eh.
func buildTapWorkload(eh *netlink.Handle, ns string, e *topology.ENI) error {
	la := netlink.NewLinkAttrs()
	la.Name = PumpLink
	la.MTU = eniMTU
	veth := netlink.NewVeth(la)
	veth.PeerName = "eth0"
	veth.PeerMTU = eniMTU
	veth.PeerHardwareAddr = eniMAC(e)
	if err := eh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s / eth0 (netns %s): %w", PumpLink, ns, err)
	}
	return linkUp(eh, ns, PumpLink)
}

// StartPump joins the tap of the lab ENI name (which its daemon created) to
// its namespace's eth0 with a userspace frame pump, standing in for a VMM:
// it opens a queue of the tap in the host's namespace and a packet socket
// on PumpLink in the ENI's, and copies frames both ways in this process
// until stop is called.
func (l *Lab) StartPump(name string) (stop func(), err error) {
	es := l.st.eni(name)
	if es == nil {
		return nil, fmt.Errorf("lab %s: no ENI %s", l.st.Name, name)
	}
	q, err := l.OpenTap(name)
	if err != nil {
		return nil, err
	}
	var sock *os.File
	if err := inNS(es.NS, func() error {
		var err error
		sock, err = tapio.PacketSocket(PumpLink)
		return err
	}); err != nil {
		q.Close()
		return nil, fmt.Errorf("ENI %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tapio.Pump(q, sock)
	}()
	return func() {
		q.Close()
		sock.Close()
		<-done
	}, nil
}

// OpenTap attaches one more queue to the tap of the lab's tap ENI name, in
// its host's namespace, as a VMM does (tapio.Open).
func (l *Lab) OpenTap(name string) (*os.File, error) {
	es := l.st.eni(name)
	if es == nil {
		return nil, fmt.Errorf("lab %s: no ENI %s", l.st.Name, name)
	}
	var q *os.File
	if err := inNS(hostNSName(l.st.Name, es.Host), func() error {
		var err error
		q, err = tapio.Open(es.Interface)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ENI %s: %w", name, err)
	}
	return q, nil
}
