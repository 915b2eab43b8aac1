package dataplane

import (
	"net"
	"testing"
)

// TestICMPConntrackPairsRequestWithReply: with a's security groups letting
// nothing in, a's own echo request lets b's echo reply in, but not b's echo
// requests with the same identifier; and ICMP that is no query (errors) is
// never let in by conntrack, whatever a sent before.
func TestICMPConntrackPairsRequestWithReply(t *testing.T) {
	policyLab(t, func(d *Datapath, ifA, ifB uint32, apply func(ENI)) {
		apply(ENI{SGEgress: allowAll}) // a: nothing in, everything out
		prog, _, _ := d.Programs()
		fromA := func(typ, code uint8, id uint16) string {
			p := RefPacket{Proto: 1, Src: ipA, Dst: ipB2, ICMPType: typ, ICMPCode: code, SrcPort: id}
			return verdict(t, d, prog, ifA, l4Packet(macA, p))
		}
		fromB := func(typ, code uint8, id uint16) string {
			p := RefPacket{Proto: 1, Src: ipB2, Dst: ipA, ICMPType: typ, ICMPCode: code, SrcPort: id}
			return verdict(t, d, prog, ifB, l4Packet(net.HardwareAddr(macB2), p))
		}
		steps := []struct {
			name      string
			got, want string
		}{
			{"a pings b", fromA(8, 0, 5), ""},
			{"b's echo reply to a", fromB(0, 0, 5), ""},
			{"b's echo request to a, same identifier", fromB(8, 0, 5), "sg_ingress"},
			{"b's timestamp reply to a, same identifier", fromB(14, 0, 5), "sg_ingress"},
			{"a sends b a port unreachable", fromA(3, 3, 0), ""},
			{"b's port unreachable to a", fromB(3, 3, 0), "sg_ingress"},
			{"b's time exceeded to a", fromB(11, 0, 0), "sg_ingress"},
			{"a's timestamp request", fromA(13, 0, 9), ""},
			{"b's timestamp reply", fromB(14, 0, 9), ""},
			{"b's echo reply with the timestamp's identifier", fromB(0, 0, 9), "sg_ingress"},
			{"a sends b an unsolicited echo reply", fromA(0, 0, 42), ""},
			{"b's echo request with that identifier", fromB(8, 0, 42), "sg_ingress"},
		}
		for _, s := range steps {
			if s.got != s.want {
				t.Errorf("%s: verdict %q, want %q", s.name, s.got, s.want)
			}
		}
	})
}
