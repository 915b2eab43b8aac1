package dataplane

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"
)

// refMirrorPick is the AWS rule, written plainly: sessions by number, the
// first whose filter accepts; in a filter, rules in order, the first match
// decides; no match, no mirror.
func refMirrorPick(sessions []MirrorSession, egress bool, src, dst netip.Addr, proto uint8, sport, dport uint16) string {
	ss := append([]MirrorSession(nil), sessions...)
	sort.SliceStable(ss, func(i, j int) bool { return ss[i].SessionNumber < ss[j].SessionNumber })
	for _, s := range ss {
		rules := s.Ingress
		if egress {
			rules = s.Egress
		}
		for _, r := range rules {
			if r.Protocol >= 0 && uint8(r.Protocol) != proto {
				continue
			}
			if !r.Source.Contains(src) || !r.Dest.Contains(dst) {
				continue
			}
			if !anyPorts(r.SrcPorts) || !anyPorts(r.DstPorts) {
				if proto != 6 && proto != 17 {
					continue
				}
				if sport < r.SrcPorts[0] || sport > r.SrcPorts[1] || dport < r.DstPorts[0] || dport > r.DstPorts[1] {
					continue
				}
			}
			if r.Accept {
				return s.Name
			}
			break // rejected: the next session
		}
	}
	return ""
}

func randMirrorRule(rng *rand.Rand) MirrorRule {
	prefixes := []string{"0.0.0.0/0", "10.0.0.0/16", "10.0.1.0/24", "10.0.2.0/24", "10.0.1.10/32", "10.0.2.10/32", "192.168.0.0/16"}
	protos := []int{-1, -1, 6, 17, 1}
	ports := [][2]uint16{{0, 65535}, {0, 65535}, {80, 80}, {1000, 2000}, {0, 1023}}
	r := MirrorRule{
		Accept:   rng.IntN(3) > 0,
		Protocol: protos[rng.IntN(len(protos))],
		Source:   netip.MustParsePrefix(prefixes[rng.IntN(len(prefixes))]),
		Dest:     netip.MustParsePrefix(prefixes[rng.IntN(len(prefixes))]),
		SrcPorts: [2]uint16{0, 65535},
		DstPorts: [2]uint16{0, 65535},
	}
	if r.Protocol == 6 || r.Protocol == 17 {
		r.SrcPorts = ports[rng.IntN(len(ports))]
		r.DstPorts = ports[rng.IntN(len(ports))]
	}
	return r
}

// TestMirrorPickMatchesReference feeds random packets from ENI a through
// the ENI program of both hooks, with random sessions on a, and compares
// the session of each copy in the ring with the reference.
func TestMirrorPickMatchesReference(t *testing.T) {
	d := testDatapath(t)
	rd, err := d.NewMirrorReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rng := rand.New(rand.NewPCG(5, 7))
	base := testState()
	var rec MirrorRecord
	checked, mirrored := 0, 0
	for round := 0; round < 30; round++ {
		var sessions []MirrorSession
		for i, n := 0, 1+rng.IntN(3); i < n; i++ {
			s := MirrorSession{Name: string(rune('p' + i)), SourceENI: "a", SessionNumber: 1 + rng.IntN(20), Snaplen: 40 + rng.IntN(100)}
			for j, m := 0, rng.IntN(4); j < m; j++ {
				s.Egress = append(s.Egress, randMirrorRule(rng))
			}
			sessions = append(sessions, s)
		}
		// Session numbers are unique per ENI.
		seen := map[int]bool{}
		for i := range sessions {
			for seen[sessions[i].SessionNumber] {
				sessions[i].SessionNumber++
			}
			seen[sessions[i].SessionNumber] = true
		}
		st := *base
		st.Mirror = sessions
		if err := d.Reconcile(&st, testIfindex); err != nil {
			t.Fatal(err)
		}
		names := map[uint32]string{}
		snap := map[string]int{}
		for _, s := range sessions {
			idx, _ := d.MirrorIndex(s.Name)
			names[idx] = s.Name
			snap[s.Name] = s.Snaplen
		}
		for _, h := range eniHooks(d) {
			for k := 0; k < 40; k++ {
				dst := []netip.Addr{ipB, ipR}[rng.IntN(2)]
				proto := []uint8{6, 17, 1}[rng.IntN(3)]
				sport := []uint16{80, 1500, 40000}[rng.IntN(3)]
				dport := []uint16{80, 1500, 40000, 22}[rng.IntN(4)]
				var l4 []byte
				switch proto {
				case 6:
					l4 = make([]byte, 20+100)
					binary.BigEndian.PutUint16(l4[0:], sport)
					binary.BigEndian.PutUint16(l4[2:], dport)
					l4[12] = 5 << 4
					l4[13] = 0x10 // ACK
				case 17:
					l4 = make([]byte, 8+100)
					binary.BigEndian.PutUint16(l4[0:], sport)
					binary.BigEndian.PutUint16(l4[2:], dport)
					binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
				default:
					l4 = make([]byte, 8+100)
					l4[0] = 8
					sport, dport = 0, 0
				}
				for i := 28; i < len(l4); i++ {
					l4[i] = byte(rng.IntN(256))
				}
				dstMAC := GatewayMAC
				pkt := ipv4Packet(macA, dstMAC, ipA, dst, proto, false, l4)
				verdict, _ := h.run(t, pkt)
				if verdict == "drop" {
					t.Fatalf("%s: packet to %s dropped", h.name, dst)
				}
				want := refMirrorPick(sessions, true, ipA, dst, proto, sport, dport)
				got := ""
				err := rd.Read(time.Now(), &rec)
				if err == nil {
					got = names[rec.Session]
					if rec.Ingress {
						t.Errorf("%s: copy of an egress packet marked ingress", h.name)
					}
					n := min(snap[got], len(pkt))
					if rec.OrigLen != len(pkt) || !bytes.Equal(rec.Data, pkt[:n]) {
						t.Errorf("%s: copy of %d bytes (orig %d), want the first %d of %d", h.name, len(rec.Data), rec.OrigLen, n, len(pkt))
					}
					mirrored++
				}
				if got != want {
					t.Fatalf("%s round %d: packet %s -> %s proto %d ports %d/%d mirrored by %q, reference says %q\nsessions: %+v",
						h.name, round, ipA, dst, proto, sport, dport, got, want, sessions)
				}
				checked++
			}
		}
	}
	if mirrored == 0 || mirrored == checked {
		t.Fatalf("%d of %d packets mirrored: the random cases do not exercise both outcomes", mirrored, checked)
	}
	t.Logf("%d packets checked, %d mirrored", checked, mirrored)
}
