package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/agent"
	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/topology"
)

var _ agent.DynamicENIs = (*etcdPlane)(nil)

// CreateENI implements agent.DynamicENIs on controlplane.CreateDynamicENI.
func (e *etcdPlane) CreateENI(ctx context.Context, req control.DynamicENI, iface string) (netip.Prefix, error) {
	d, err := controlplane.CreateDynamicENI(ctx, e.cli, e.prefix, controlplane.DynamicENI{
		ENI: topology.ENI{Name: req.Name, Host: e.host, Subnet: req.Subnet, SecurityGroups: req.SecurityGroups, Interface: iface},
		Attachment: controlplane.Attachment{Network: req.Attachment.Network, ContainerID: req.Attachment.ContainerID,
			IfName: req.Attachment.IfName},
	})
	if err != nil {
		return netip.Prefix{}, eniError(err)
	}
	return netip.PrefixFrom(d.IP, d.CIDR.Bits()), nil
}

// DeleteENI implements agent.DynamicENIs.
func (e *etcdPlane) DeleteENI(ctx context.Context, name string) error {
	_, deps, err := controlplane.DeleteDynamicENI(ctx, e.cli, e.prefix, name)
	if err != nil {
		return eniError(err)
	}
	if len(deps) > 0 {
		e.log.Info("deleted with the dynamic ENI: what named it", "eni", name, "objects", deps)
	}
	return nil
}

// ListENIs implements agent.DynamicENIs.
func (e *etcdPlane) ListENIs(ctx context.Context) ([]control.DynamicENI, error) {
	l, err := controlplane.ListDynamicENIs(ctx, e.cli, e.prefix, e.host)
	if err != nil {
		return nil, eniError(err)
	}
	out := make([]control.DynamicENI, 0, len(l))
	for _, d := range l {
		out = append(out, control.DynamicENI{
			Name: d.Name, Subnet: d.Subnet, SecurityGroups: d.SecurityGroups, Host: d.Host, Interface: d.Interface,
			Address:    netip.PrefixFrom(d.IP, d.CIDR.Bits()).String(),
			Attachment: control.ENIAttachment{Network: d.Attachment.Network, ContainerID: d.Attachment.ContainerID, IfName: d.Attachment.IfName},
		})
	}
	return out, nil
}

// eniError gives the control plane's errors their control codes.
func eniError(err error) error {
	code := control.CodeInternal
	switch {
	case errors.Is(err, controlplane.ErrUnknownSubnet):
		code = control.CodeUnknownSubnet
	case errors.Is(err, controlplane.ErrUnknownGroup):
		code = control.CodeUnknownGroup
	case errors.Is(err, controlplane.ErrSubnetFull):
		code = control.CodeSubnetFull
	case errors.Is(err, controlplane.ErrNameTaken):
		code = control.CodeNameTaken
	case errors.Is(err, controlplane.ErrNotApplied), errors.Is(err, context.DeadlineExceeded):
		code = control.CodeNotReady
	}
	return &control.ENIError{Code: code, Msg: err.Error()}
}

// onlyUnknownENIs reports whether every error of a topology is a
// reference to an ENI the file does not define: the only errors that the
// dynamic ENIs etcd holds can mend.
func onlyUnknownENIs(err error) bool {
	var list topology.ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		return false
	}
	for _, e := range list {
		if !strings.HasPrefix(e.Msg, "unknown eni ") {
			return false
		}
	}
	return true
}

// withDynamicENIs parses the topology file with the dynamic ENIs etcd
// holds added to it, for a file that names a container's ENI (a mirror
// session's source, say); nil when that does not validate either (or
// there are none), and apply reports the file's own errors. Only a file
// that does not validate alone contacts etcd here.
func withDynamicENIs(ctx context.Context, cli *clientv3.Client, prefix, file string) *topology.Topology {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	merged, added, err := controlplane.WithDynamicENIs(ctx, cli, prefix, data)
	if err != nil || added == 0 {
		return nil
	}
	t, err := topology.Parse(merged)
	if err != nil {
		return nil
	}
	return t
}
