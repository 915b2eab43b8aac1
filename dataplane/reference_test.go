package dataplane

import "net/netip"

// The reference evaluator: the datapath's security-group, network-ACL and
// connection-tracking decisions written as plain Go, without BPF. Tests run
// the same packets through both and compare (the differential test).

// RefPacket is a packet as policy sees it, in its own direction.
type RefPacket struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // TCP/UDP ports; ICMP queries (0, 8, 13, 14): SrcPort = identifier
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
	if p.Proto == 1 { // a query exchange: identifier, kind, requests' direction
		reqDir := dir
		if !icmpRequest(p.ICMPType) {
			reqDir = 1 - dir
		}
		kind := uint16(13)
		if p.ICMPType == 0 || p.ICMPType == 8 {
			kind = 8
		}
		k.local, k.peer = p.SrcPort, kind<<8|uint16(reqDir)+1
	}
	return k
}

// icmpQuery reports the ICMP types that pair a request with its reply
// (echo, timestamp); every other type is never tracked.
func icmpQuery(t uint8) bool { return t == 8 || t == 0 || t == 13 || t == 14 }

func icmpRequest(t uint8) bool { return t == 8 || t == 13 }

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
	sgRules := e.ENI.SGEgress
	if dir == Ingress {
		sgRules = e.ENI.SGIngress
	}
	if p.Proto == 1 && !icmpQuery(p.ICMPType) {
		if SGAllows(sgRules, p.Proto, p.rulePort(), remote) {
			return ""
		}
		if dir == Egress {
			return "sg_egress"
		}
		return "sg_ingress"
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
		if p.Proto == 1 && !icmpRequest(p.ICMPType) {
			return "" // a reply opens nothing
		}
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

// RefFragment places a packet in an IPv4 fragmented datagram: ID is the IP
// identification, Offset the fragment offset in 8-byte units, More the MF
// flag, PayloadLen the IP payload this fragment carries. The zero value is
// an unfragmented packet.
type RefFragment struct {
	ID         uint16
	Offset     uint16
	More       bool
	PayloadLen int
}

func (f RefFragment) first() bool { return f.Offset == 0 && f.More }
func (f RefFragment) later() bool { return f.Offset != 0 }

type refFragKey struct {
	vni      uint32
	src, dst netip.Addr
	id       uint16
	proto    uint8
}

// RefFragments is a host's memory of first fragments that passed (the
// datapath's frags map, without its LRU and its 30 s timeout).
type RefFragments map[refFragKey]RefPacket

// l4MinLen is the transport header a first fragment must carry whole.
func l4MinLen(proto uint8) int {
	switch proto {
	case 6:
		return 20
	case 17, 1:
		return 8
	}
	return 0
}

// Forward decides a packet of VPC vni, placed by f in its datagram, that
// meets the policy steps in order (the sender's egress, then for a local
// target the target's ingress; or the target's ingress alone at the
// receiving host's tunnel). It returns "" when the packet passes, else the
// drop reason, and the packet as flow logs and mirror filters see it: a
// later fragment takes its first fragment's ports.
func (fr RefFragments) Forward(vni uint32, p RefPacket, f RefFragment, steps ...func(RefPacket) string) (string, RefPacket) {
	k := refFragKey{vni: vni, src: p.Src, dst: p.Dst, id: f.ID, proto: p.Proto}
	if f.later() {
		first, ok := fr[k]
		if int(f.Offset)*8 < l4MinLen(p.Proto) || !ok {
			return "fragment", p
		}
		p.SrcPort, p.DstPort, p.ICMPType, p.ICMPCode, p.TCPFlags =
			first.SrcPort, first.DstPort, first.ICMPType, first.ICMPCode, first.TCPFlags
		return "", p
	}
	if f.first() && f.PayloadLen < l4MinLen(p.Proto) {
		return "fragment", p
	}
	for _, step := range steps {
		if why := step(p); why != "" {
			if f.first() {
				delete(fr, k)
			}
			return why, p
		}
	}
	if f.first() {
		fr[k] = p
	}
	return "", p
}
