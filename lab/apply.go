package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/topology"
)

// Apply brings the lab to the topology in topologyPath. The file is loaded
// and validated first: when it is invalid its errors are returned and
// nothing changes. Hosts may not be added, removed or changed in what the
// lab built for them (name, underlay address, interface, MTU, listen port);
// their keys are kept and public keys in the file are ignored. ENIs that
// are new get their namespaces, removed ones lose theirs, changed ones are
// rebuilt; then the daemons' topology.yaml is rewritten and every running
// daemon gets SIGHUP (in etcd mode: the file goes to etcd with `vpcd
// apply --prune`, and the daemons follow their watch). Namespaces of removed ENIs are deleted after the
// daemons were told to reload.
func (l *Lab) Apply(ctx context.Context, topologyPath string) error {
	src, err := filepath.Abs(topologyPath)
	if err != nil {
		return err
	}
	nt, err := topology.Load(src)
	if err != nil {
		return err
	}
	if err := checkLabTopology(nt); err != nil {
		return err
	}
	if err := sameHosts(l.topo, nt); err != nil {
		return err
	}
	if err := canBootVMs(nt, l.st.NoDaemons); err != nil {
		return fmt.Errorf("lab apply: %w", err)
	}
	if err := prepareKeys(nt, l.st.Dir); err != nil {
		return err
	}
	if err := resolvePaths(nt, l.st.Dir, filepath.Dir(src)); err != nil {
		return err
	}

	var gone, changed []eniState
	for _, es := range l.st.ENIs {
		ne := findENI(nt, es.Name)
		oe := findENI(l.topo, es.Name)
		switch {
		case ne == nil:
			gone = append(gone, es)
		case oe == nil || !sameENI(oe, ne, l.topo, nt):
			changed = append(changed, es)
		}
	}
	for _, es := range changed {
		// Its VM runs on what changed (address, host, tap): it stops,
		// and boots again below if the list still names it.
		if err := l.VMDown(es.Name); err != nil {
			return err
		}
		if err := l.dropENI(es); err != nil {
			return err
		}
	}
	for i := range nt.ENIs {
		e := &nt.ENIs[i]
		if l.st.eni(e.Name) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		es := eniState{Name: e.Name, Host: e.Host, NS: eniNSName(l.st.Name, e.Name), Interface: eniIf(e)}
		if err := buildENI(hostNSName(l.st.Name, e.Host), es.NS, nt, e); err != nil {
			// Record what exists so that Down and a later Apply see it.
			l.st.ENIs = append(l.st.ENIs, es)
			return errors.Join(err, l.st.save())
		}
		l.st.ENIs = append(l.st.ENIs, es)
	}

	if err := writeTopology(l.st.Topology, nt); err != nil {
		return err
	}
	ot := l.topo
	l.topo = nt
	l.st.Source = src
	if err := l.st.save(); err != nil {
		return err
	}
	var errs []error
	if l.st.Etcd != nil {
		// etcd mode: the change goes through `vpcd apply` (objects the
		// file no longer names are pruned); every daemon watches.
		if err := applyEtcd(l.st, l.st.Topology, true); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range l.st.Hosts {
		hs := &l.st.Hosts[i]
		if running(hs) && l.st.Etcd == nil {
			if _, err := signalDaemon(hs.PID, hs, unix.SIGHUP, 0); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The VMs follow the vms list: those it no longer names (or whose ENI
	// is gone) stop, those it names anew boot once their daemon has made
	// the tap. A VM started with vpcd lab vm up and never listed stays.
	for _, v := range ot.VMs {
		if !slices.ContainsFunc(nt.VMs, func(n topology.VM) bool { return n.ENI == v.ENI }) {
			errs = append(errs, l.VMDown(v.ENI))
		}
	}
	for _, es := range gone {
		errs = append(errs, l.VMDown(es.Name))
		if err := l.dropENI(es); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range nt.VMs {
		if l.VMPID(v.ENI) > 0 {
			continue
		}
		if err := l.waitTap(ctx, v.ENI); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := l.VMUp(ctx, v.ENI); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitTap waits until the daemon of tap ENI eni's host has made its tap
// (a reload is asynchronous), for at most DefaultHandshakeTimeout.
func (l *Lab) waitTap(ctx context.Context, eni string) error {
	e := l.topo.ENIByName(eni)
	if e == nil {
		return fmt.Errorf("no ENI %s", eni)
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := inNS(hostNSName(l.st.Name, e.Host), func() error {
			_, err := net.InterfaceByName(eniIf(e))
			return err
		})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VM on ENI %s: its daemon made no tap %s: %w", eni, eniIf(e), ctx.Err())
		case <-tick.C:
		}
	}
}

// dropENI deletes an ENI's namespace and veth pair and forgets it.
func (l *Lab) dropENI(es eniState) error {
	err := deleteENI(hostNSName(l.st.Name, es.Host), es.NS, es.Interface)
	if err != nil {
		return fmt.Errorf("eni %s: %w", es.Name, err)
	}
	l.st.ENIs = slices.DeleteFunc(l.st.ENIs, func(e eniState) bool { return e.Name == es.Name })
	return l.st.save()
}

// sameHosts checks that b has exactly a's hosts with the same plumbing.
func sameHosts(a, b *topology.Topology) error {
	var errs []error
	for i := range b.Hosts {
		nh := &b.Hosts[i]
		oh := findHost(a, nh.Name)
		if oh == nil {
			errs = append(errs, fmt.Errorf("hosts[%d]: host %s is new; a lab cannot add hosts (run \"vpcd lab down\" and \"up\")", i, nh.Name))
			continue
		}
		if oh.UnderlayIP != nh.UnderlayIP || underlayIf(oh) != underlayIf(nh) ||
			hostMTU(oh) != hostMTU(nh) || oh.ListenPort != nh.ListenPort {
			errs = append(errs, fmt.Errorf("hosts[%d]: host %s changed (underlay_ip, underlay_interface, mtu or listen_port); a lab cannot change hosts", i, nh.Name))
		}
	}
	for i := range a.Hosts {
		if findHost(b, a.Hosts[i].Name) == nil {
			errs = append(errs, fmt.Errorf("hosts: host %s is missing; a lab cannot remove hosts", a.Hosts[i].Name))
		}
	}
	return errors.Join(errs...)
}
