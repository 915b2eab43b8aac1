package flowlogs

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
)

// ipfixMessage is a decoded IPFIX message.
type ipfixMessage struct {
	length, exportTime, seq, domain uint32
	template                        []element // ids and lengths, if the message has a template set
	records                         []map[uint16]uint64
}

// decodeIPFIX decodes msg, using tmpl (the template last seen) for data sets.
func decodeIPFIX(t *testing.T, msg []byte, tmpl []element) ipfixMessage {
	t.Helper()
	be := binary.BigEndian
	if len(msg) < ipfixHeaderLen || be.Uint16(msg) != 10 || int(be.Uint16(msg[2:])) != len(msg) {
		t.Fatalf("bad IPFIX header in % x", msg[:min(len(msg), 16)])
	}
	m := ipfixMessage{length: uint32(len(msg)), exportTime: be.Uint32(msg[4:]), seq: be.Uint32(msg[8:]), domain: be.Uint32(msg[12:])}
	for p := msg[ipfixHeaderLen:]; len(p) > 0; {
		id, n := be.Uint16(p), int(be.Uint16(p[2:]))
		if n < setHeaderLen || n > len(p) {
			t.Fatalf("set %d: bad length %d", id, n)
		}
		body := p[setHeaderLen:n]
		p = p[n:]
		switch id {
		case templateSetID:
			if be.Uint16(body) != ipfixTemplateID || int(be.Uint16(body[2:])) != (len(body)-4)/4 {
				t.Fatalf("bad template record % x", body)
			}
			m.template = nil
			for q := body[4:]; len(q) >= 4; q = q[4:] {
				m.template = append(m.template, element{id: be.Uint16(q), length: be.Uint16(q[2:])})
			}
			tmpl = m.template
		case ipfixTemplateID:
			if len(tmpl) == 0 {
				t.Fatal("data set before any template")
			}
			recLen := 0
			for _, e := range tmpl {
				recLen += int(e.length)
			}
			for len(body) >= recLen { // what is left is padding
				rec := map[uint16]uint64{}
				for _, e := range tmpl {
					var v uint64
					for _, b := range body[:e.length] {
						v = v<<8 | uint64(b)
					}
					rec[e.id], body = v, body[e.length:]
				}
				m.records = append(m.records, rec)
			}
		default:
			t.Fatalf("unexpected set id %d", id)
		}
	}
	return m
}

// hasTemplateSet reports whether the IPFIX message msg has a template set.
func hasTemplateSet(msg []byte) bool {
	for p := msg[ipfixHeaderLen:]; len(p) >= setHeaderLen; {
		n := int(binary.BigEndian.Uint16(p[2:]))
		if binary.BigEndian.Uint16(p) == templateSetID {
			return true
		}
		if n < setHeaderLen || n > len(p) {
			return false
		}
		p = p[n:]
	}
	return false
}

// listenUDP returns a UDP socket on a free loopback port.
func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadBuffer(4 << 20)
	return c
}

// receive reads datagrams from c until none arrives for a moment.
func receive(t *testing.T, c *net.UDPConn) [][]byte {
	t.Helper()
	var msgs [][]byte
	buf := make([]byte, 65536)
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return msgs
		}
		msgs = append(msgs, append([]byte(nil), buf[:n]...))
	}
}

// ipfixRecords returns n flows with distinct addresses, ports and counts,
// every seventh of them ICMP.
func ipfixRecords(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		r := tcpRecord()
		r.SrcAddr = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		r.DstAddr = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		r.SrcPort, r.DstPort = uint16(10000+i), uint16(80+i%3)
		r.Packets, r.Bytes = uint64(i+1), uint64(100*(i+1))
		r.Start, r.End = t0.Add(time.Duration(i)*time.Millisecond), t0.Add(time.Duration(i)*time.Millisecond+2*time.Second)
		if i%7 == 0 {
			r.Protocol, r.SrcPort, r.DstPort, r.ICMPType, r.ICMPCode = ProtoICMP, 0, 0, 8, 0
		}
		if i%2 == 1 {
			r.FlowDirection = DirectionEgress
		}
		recs[i] = r
	}
	return recs
}

func TestIPFIXMessages(t *testing.T) {
	c := listenUDP(t)
	s, err := NewIPFIXSink(c.LocalAddr().String(), 42, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := ipfixRecords(100)
	withOthers := append([]Record{{InterfaceID: "a1", LogStatus: StatusNoData, Start: t0, End: t0}}, recs...)
	v6 := tcpRecord()
	v6.SrcAddr, v6.DstAddr = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	withOthers = append(withOthers, v6)
	for range 2 {
		if err := s.Write(withOthers); err != nil {
			t.Fatal(err)
		}
	}
	if s.Lost() != 2 || s.Errors() != 0 {
		t.Errorf("Lost %d, Errors %d; want 2 (the IPv6 flows), 0", s.Lost(), s.Errors())
	}
	msgs := receive(t, c)
	var tmpl []element
	var got []map[uint16]uint64
	seq, templates := uint32(0), 0
	for i, raw := range msgs {
		if len(raw) > maxMessageLen {
			t.Errorf("message %d is %d bytes, over %d", i, len(raw), maxMessageLen)
		}
		m := decodeIPFIX(t, raw, tmpl)
		if m.template != nil {
			tmpl = m.template
			templates++
		}
		if m.domain != 42 || m.seq != seq {
			t.Errorf("message %d: domain %d seq %d, want 42 %d", i, m.domain, m.seq, seq)
		}
		if d := time.Since(time.Unix(int64(m.exportTime), 0)); d < 0 || d > time.Minute {
			t.Errorf("message %d: export time %d is not now", i, m.exportTime)
		}
		seq += uint32(len(m.records))
		got = append(got, m.records...)
	}
	if templates != 2 || !hasTemplateSet(msgs[0]) {
		t.Errorf("%d templates, want one at the start of each Write", templates)
	}
	if len(got) != 2*len(recs) {
		t.Fatalf("%d data records, want %d", len(got), 2*len(recs))
	}
	for i, rec := range got {
		want := wantIPFIX(&recs[i%len(recs)])
		for id, v := range want {
			if rec[id] != v {
				t.Errorf("record %d: IE %d = %d, want %d", i, id, rec[id], v)
			}
		}
	}
}

// wantIPFIX returns the IE values r must be exported with.
func wantIPFIX(r *Record) map[uint16]uint64 {
	a4 := func(a netip.Addr) uint64 { b := a.As4(); return uint64(binary.BigEndian.Uint32(b[:])) }
	m := map[uint16]uint64{
		8: a4(r.SrcAddr), 12: a4(r.DstAddr), 7: uint64(r.SrcPort), 11: uint64(r.DstPort), 4: uint64(r.Protocol),
		2: r.Packets, 1: r.Bytes, 152: uint64(r.Start.UnixMilli()), 153: uint64(r.End.UnixMilli()),
		6: uint64(r.TCPFlags), 61: 0, 32: 0, 351: uint64(r.VNI), 89: 0x40,
	}
	if r.FlowDirection == DirectionEgress {
		m[61] = 1
	}
	if r.Protocol == ProtoICMP {
		m[32] = uint64(r.ICMPType)<<8 | uint64(r.ICMPCode)
	}
	return m
}

func TestIPFIXTemplateRefresh(t *testing.T) {
	c := listenUDP(t)
	s, err := NewIPFIXSink(c.LocalAddr().String(), 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clock := t0
	s.now = func() time.Time { clock = clock.Add(3 * time.Second); return clock } // 3 s per message
	if err := s.Write(ipfixRecords(23 * 12)); err != nil {                        // 12 messages or so
		t.Fatal(err)
	}
	var with []int
	for i, raw := range receive(t, c) {
		if hasTemplateSet(raw) {
			with = append(with, i)
		}
	}
	// At 0 (the Write), then each time 10 s have passed: messages 4, 8, ...
	if len(with) < 3 || with[0] != 0 || with[1] != 4 || with[2] != 8 {
		t.Errorf("templates in messages %v, want 0, 4, 8, ...", with)
	}
}

func TestIPFIXCollectorDown(t *testing.T) {
	c := listenUDP(t)
	addr := c.LocalAddr().String()
	c.Close() // nothing listens there now: sends draw ICMP port unreachable
	s, err := NewIPFIXSink(addr, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := ipfixRecords(500)
	begin := time.Now()
	var errs int
	for range 5 {
		if s.Write(recs) != nil {
			errs++
		}
		time.Sleep(10 * time.Millisecond) // paces the writes: each error comes back between two
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("5 writes to a closed port took %v", d)
	}
	if errs == 0 || s.Errors() == 0 || s.Lost() == 0 {
		t.Errorf("Write errors %d, Errors() %d, Lost() %d: want all non-zero", errs, s.Errors(), s.Lost())
	}
	if s.Lost() > 5*uint64(len(recs)) {
		t.Errorf("Lost() %d is more than was written", s.Lost())
	}
}

func TestTemplateMatchesRecords(t *testing.T) {
	s := &IPFIXSink{elems: elements()}
	total := 0
	for _, e := range s.elems {
		total += int(e.length)
	}
	r := tcpRecord()
	if n := len(s.appendRecord(nil, &r)); n != total {
		t.Errorf("data record is %d bytes, template says %d", n, total)
	}
}

// TestIPFIXNfdump sends records to nfdump's collector, nfcapd, and reads
// them back with nfdump: an independent decoder.
func TestIPFIXNfdump(t *testing.T) {
	for _, tool := range []string{"nfcapd", "nfdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian package nfdump; CI installs it)", tool)
		}
	}
	dir := t.TempDir()
	addr, stopNfcapd := startNfcapd(t, dir)
	port, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewIPFIXSink(addr, 77, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := ipfixRecords(60)
	if err := s.Write(recs[:30]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(recs[30:]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	testkit.WaitFor(t, 5*time.Second, "nfcapd to read every datagram off its socket", func() bool {
		return udpQueued(t, port) == 0
	})
	if log := strings.Join(stopNfcapd(), "\n"); !strings.Contains(log, "Flows: 60,") || !strings.Contains(log, "Sequence Errors: 0,") {
		t.Errorf("nfcapd's log does not say 60 flows and no sequence errors:\n%s", log)
	}

	cmd := exec.Command("nfdump", "-R", dir, "-q", "-N", "-o", "fmt:%sa %da %sp %dp %pr %pkt %byt %flg %dir %ts")
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, out)
	}
	got := map[string]string{}
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		f := strings.Fields(line)
		if len(f) != 11 {
			t.Fatalf("unexpected nfdump line %q", line)
		}
		got[f[0]+" "+f[1]] = strings.Join(f[2:], " ")
	}
	if len(got) != len(recs) {
		t.Errorf("nfdump shows %d flows, want %d:\n%s", len(got), len(recs), out)
	}
	for _, r := range recs {
		key := r.SrcAddr.String() + " " + r.DstAddr.String()
		if got[key] != nfdumpLine(&r) {
			t.Errorf("flow %s: nfdump shows %q, want %q", key, got[key], nfdumpLine(&r))
		}
	}
}

// nfdumpLine is how nfdump's format "%sp %dp %pr %pkt %byt %flg %dir %ts"
// shows r (with -N, in UTC): ICMP's destination port is "type.code".
func nfdumpLine(r *Record) string {
	sp, dp := strconv.Itoa(int(r.SrcPort)), strconv.Itoa(int(r.DstPort))
	flags := "........"
	if r.Protocol == ProtoICMP {
		sp, dp = "0", fmt.Sprintf("%d.%d", r.ICMPType, r.ICMPCode)
	} else {
		flags = "......SF" // tcpRecord's flags: SYN|FIN
	}
	dir := "I"
	if r.FlowDirection == DirectionEgress {
		dir = "E"
	}
	return fmt.Sprintf("%s %s %d %d %d %s %s %s", sp, dp, r.Protocol, r.Packets, r.Bytes, flags, dir,
		r.Start.UTC().Format("2006-01-02 15:04:05.000"))
}

// startNfcapd starts nfcapd on a free loopback port, writing into dir. It
// returns the address nfcapd listens on and a function that stops it with
// SIGTERM (nfcapd then closes its file), waits for it and returns what it
// logged; the function is also called when the test ends.
func startNfcapd(t *testing.T, dir string) (addr string, stop func() []string) {
	t.Helper()
	c := listenUDP(t)
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	cmd := exec.Command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "60")
	output, err := cmd.StderrPipe() // nfcapd logs to stderr when not a daemon
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started, done := make(chan struct{}), make(chan struct{})
	var log []string // written by the reader until done is closed
	go func() {
		defer close(done)
		sc := bufio.NewScanner(output)
		for sc.Scan() {
			log = append(log, sc.Text())
			t.Logf("nfcapd: %s", sc.Text())
			if strings.HasPrefix(sc.Text(), "Startup") {
				close(started)
			}
		}
	}()
	var once sync.Once
	stop = func() []string {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("nfcapd did not stop within 10 s of SIGTERM")
				cmd.Process.Kill()
				<-done
			}
			cmd.Wait()
		})
		return log
	}
	t.Cleanup(func() { stop() })
	select {
	case <-started:
	case <-done:
		t.Fatal("nfcapd exited at startup")
	case <-time.After(10 * time.Second):
		t.Fatal("nfcapd did not start within 10 s")
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), stop
}

// udpQueued is the bytes waiting in the receive queue of the IPv4 UDP
// socket bound to 127.0.0.1:port, from /proc/net/udp.
func udpQueued(t *testing.T, port int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":") // tx_queue:rx_queue, hex
		n, err := strconv.ParseUint(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/udp: %q: %v", line, err)
		}
		return n
	}
	t.Fatalf("no UDP socket on 127.0.0.1:%d in /proc/net/udp", port)
	return 0
}
