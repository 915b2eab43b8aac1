package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// underlayTCP is a TCP segment with flags from src:sport to dst:dport.
func underlayTCP(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags byte) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return ipv4Packet(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, src, dst, 6, false, tcp)
}

// TestUnderlayReplies: the underlay filter lets in TCP replies from the
// endpoints the daemon talks to (etcd), at both hooks, and nothing else
// from them: no new connection (a bare SYN), no other port, no other
// address, no UDP.
func TestUnderlayReplies(t *testing.T) {
	d := testDatapath(t)
	_, _, xdp := d.Programs()
	tc := d.UnderlayTC()
	etcd := netip.MustParseAddr("198.18.0.250")
	st := &State{UnderlayIP: hostA, ListenPort: 51820, UnderlayMTU: 1500, Peers: []netip.Addr{hostB},
		UnderlayReplies: []netip.AddrPort{netip.AddrPortFrom(etcd, 2379)}}
	if err := d.Reconcile(st, func(string) (int, error) { return 0, nil }); err != nil {
		t.Fatal(err)
	}
	const syn, ack, psh = 0x02, 0x10, 0x08
	cases := []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"SYN-ACK from etcd", underlayTCP(etcd, 2379, hostA, 40000, syn|ack), true},
		{"data from etcd", underlayTCP(etcd, 2379, hostA, 40000, psh|ack), true},
		{"bare SYN from etcd's port", underlayTCP(etcd, 2379, hostA, 22, syn), false},
		{"other port of etcd's host", underlayTCP(etcd, 2380, hostA, 40000, ack), false},
		{"other address, etcd's port", underlayTCP(netip.MustParseAddr("198.18.0.251"), 2379, hostA, 40000, ack), false},
	}
	for _, c := range cases {
		ret, err := xdp.Run(&ebpf.RunOptions{Data: c.pkt, DataOut: make([]byte, len(c.pkt)+64)})
		if err != nil {
			t.Fatal(err)
		}
		if (ret == xdpPass) != c.pass {
			t.Errorf("%s: xdp verdict %d, want pass=%v", c.name, ret, c.pass)
		}
		tret, _ := runTC(t, tc, testENIIfindex, c.pkt)
		if (tret == 0) != c.pass { // TC_ACT_OK
			t.Errorf("%s: tc verdict %d, want pass=%v", c.name, tret, c.pass)
		}
	}
	// Gone from the state: gone from the filter.
	st.UnderlayReplies = nil
	if err := d.Reconcile(st, func(string) (int, error) { return 0, nil }); err != nil {
		t.Fatal(err)
	}
	pkt := underlayTCP(etcd, 2379, hostA, 40000, ack)
	if ret, _ := xdp.Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+64)}); ret != xdpDrop {
		t.Error("a reply from a removed endpoint passed")
	}
}
