package agent

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/tunnel"
)

// linkLocal is 169.254.0.0/16: metadata-style addresses a workload must
// never reach on the host.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// desiredState computes what host's maps must hold for topology t.
func desiredState(t *topology.Topology, host string) (*dataplane.State, error) {
	h := t.HostByName(host)
	if h == nil {
		return nil, fmt.Errorf("host %q is not in the topology", host)
	}
	s := &dataplane.State{
		UnderlayIP:  h.UnderlayIP,
		ListenPort:  h.ListenPort,
		UnderlayMTU: pathMTU(t),
		Substrate:   []netip.Prefix{linkLocal, netip.MustParsePrefix("127.0.0.0/8")},
	}
	hostIP := map[string]netip.Addr{}
	for _, hh := range t.Hosts {
		hostIP[hh.Name] = hh.UnderlayIP
		s.Substrate = append(s.Substrate, netip.PrefixFrom(hh.UnderlayIP, 32))
		if hh.Name != host {
			s.Peers = append(s.Peers, hh.UnderlayIP)
		}
	}
	for _, a := range h.UnderlayAllow {
		proto := a.Protocol
		if proto == topology.ProtoAll {
			proto = 0
		}
		s.UnderlayAllow = append(s.UnderlayAllow, dataplane.AllowRule{Protocol: uint8(proto), Port: a.Port})
	}
	for i := range t.ENIs {
		e := &t.ENIs[i]
		sub, vpc := t.SubnetByName(e.Subnet)
		if sub == nil || vpc == nil {
			return nil, fmt.Errorf("ENI %s: unknown subnet %q", e.Name, e.Subnet)
		}
		r := dataplane.Route{VNI: vpc.VNI, IP: e.IP, MAC: e.MAC}
		if e.Host == host {
			r.ENI = e.Name
			s.ENIs = append(s.ENIs, dataplane.ENI{
				Name:            e.Name,
				Interface:       e.Interface,
				VNI:             vpc.VNI,
				IP:              e.IP,
				Gateway:         sub.Gateway(),
				VPC:             vpc.CIDR,
				MAC:             e.MAC,
				SourceDestCheck: e.SourceDestCheck,
			})
		} else {
			r.Remote = hostIP[e.Host]
		}
		s.Routes = append(s.Routes, r)
	}
	return s, nil
}

// pathMTU is the underlay MTU every host pair can carry: the smallest of
// all hosts' MTUs.
func pathMTU(t *topology.Topology) int {
	mtu := 0
	for _, h := range t.Hosts {
		if mtu == 0 || h.MTU < mtu {
			mtu = h.MTU
		}
	}
	if mtu == 0 {
		mtu = 1500
	}
	return mtu
}

// tunnelConfig computes the tunnel's configuration for host.
func tunnelConfig(t *topology.Topology, host, device string, priv tunnel.Key, psk *tunnel.Key) (tunnel.Config, error) {
	h := t.HostByName(host)
	if h == nil {
		return tunnel.Config{}, fmt.Errorf("host %q is not in the topology", host)
	}
	cfg := tunnel.Config{
		Device:       device,
		PrivateKey:   priv,
		ListenPort:   h.ListenPort,
		MTU:          dataplane.TunnelMTU(pathMTU(t)),
		PresharedKey: psk,
		Keepalive:    25 * time.Second,
	}
	for _, p := range t.Peers(host) {
		pub, err := tunnel.ParseKey(p.PublicKey)
		if err != nil {
			return cfg, fmt.Errorf("host %s: public key: %w", p.Name, err)
		}
		cfg.Peers = append(cfg.Peers, tunnel.Peer{
			Name:      p.Name,
			PublicKey: pub,
			Endpoint:  netip.AddrPortFrom(p.UnderlayIP, p.ListenPort),
			AllowedIP: netip.PrefixFrom(p.UnderlayIP, 32),
		})
	}
	return cfg, nil
}
