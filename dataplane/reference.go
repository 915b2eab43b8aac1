package dataplane

import "net/netip"

// The reference evaluator: the datapath's security-group, network-ACL and
// connection-tracking decisions written as plain Go, without BPF. Tests run
// the same packets through both and compare (the differential test).

// RefPacket is a packet as policy sees it, in its own direction.
type RefPacket struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // TCP/UDP ports; ICMP echo (types 0, 8): SrcPort = identifier
	ICMPType         uint8
	ICMPCode         uint8
	TCPFlags         uint8
}

func (p RefPacket) rulePort() uint16 {
	return RulePort(p.Proto, p.DstPort, p.ICMPType, p.ICMPCode)
}

// Connection states, as in bpf/lib/common.h.
const (
	refNew = iota
	refSynSent
	refEstablished
	refClosing
	refClosed
)

type refKey struct {
	remote      netip.Addr
	local, peer uint16
	proto       uint8
}

type refConn struct {
	state   int
	origin  Direction
	finDirs int
}

// RefENI is one ENI's policy and connection-tracking state.
type RefENI struct {
	ENI   ENI
	conns map[refKey]*refConn
}

// NewRefENI returns the reference model of an ENI with no connections.
func NewRefENI(e ENI) *RefENI { return &RefENI{ENI: e, conns: map[refKey]*refConn{}} }

func firstMatch(rules []Rule, proto uint8, port uint16, remote netip.Addr) int {
	for i, r := range rules {
		if r.Matches(proto, port, remote) {
			return i
		}
	}
	return -1
}

// NACLAllows is a network ACL's verdict: the first matching rule decides,
// no match denies.
func NACLAllows(rules []Rule, proto uint8, port uint16, remote netip.Addr) bool {
	i := firstMatch(rules, proto, port, remote)
	return i >= 0 && rules[i].Allow
}

// SGAllows reports whether any security-group rule allows the packet.
func SGAllows(rules []Rule, proto uint8, port uint16, remote netip.Addr) bool {
	return firstMatch(rules, proto, port, remote) >= 0
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func (e *RefENI) key(p RefPacket, dir Direction) refKey {
	k := refKey{proto: p.Proto}
	if dir == Egress {
		k.remote, k.local, k.peer = p.Dst, p.SrcPort, p.DstPort
	} else {
		k.remote, k.local, k.peer = p.Src, p.DstPort, p.SrcPort
	}
	if p.Proto == 1 { // echo: the identifier either way; other ICMP: none
		k.local, k.peer = 0, 0
		if p.ICMPType == 0 || p.ICMPType == 8 {
			k.local = p.SrcPort
		}
	}
	return k
}

// Check decides a packet leaving (Egress) or entering (Ingress) the ENI and
// updates the connection state, as the datapath does. It returns "" when
// the packet passes, else the drop reason's label.
func (e *RefENI) Check(p RefPacket, dir Direction) string {
	remote := p.Dst
	if dir == Ingress {
		remote = p.Src
	}
	if e.ENI.HasNACL && !e.ENI.Subnet.Contains(remote) {
		rules := e.ENI.NACLEgress
		if dir == Ingress {
			rules = e.ENI.NACLIngress
		}
		if !NACLAllows(rules, p.Proto, p.rulePort(), remote) {
			if dir == Egress {
				return "nacl_egress"
			}
			return "nacl_ingress"
		}
	}
	k := e.key(p, dir)
	if c, ok := e.conns[k]; ok && c.state != refClosed {
		if p.Proto == 6 {
			if p.TCPFlags&tcpRST != 0 {
				c.state = refClosed
			} else {
				if dir != c.origin && c.state == refSynSent {
					c.state = refEstablished
				}
				if p.TCPFlags&tcpFIN != 0 {
					c.finDirs |= 1 << dir
					if c.finDirs == 3 {
						c.state = refClosing
					}
				}
			}
		} else if dir != c.origin {
			c.state = refEstablished
		}
		return ""
	}
	rules := e.ENI.SGEgress
	if dir == Ingress {
		rules = e.ENI.SGIngress
	}
	if SGAllows(rules, p.Proto, p.rulePort(), remote) {
		c := &refConn{state: refNew, origin: dir}
		if p.Proto == 6 {
			if p.TCPFlags&tcpRST != 0 {
				return ""
			}
			c.state = refEstablished
			if p.TCPFlags&(tcpSYN|tcpACK) == tcpSYN {
				c.state = refSynSent
			}
			if p.TCPFlags&tcpFIN != 0 {
				c.finDirs = 1 << dir
			}
		}
		e.conns[k] = c
		return ""
	}
	if p.Proto == 6 && p.TCPFlags&(tcpSYN|tcpACK) != tcpSYN {
		return "ct_invalid"
	}
	if dir == Egress {
		return "sg_egress"
	}
	return "sg_ingress"
}
