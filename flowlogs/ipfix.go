package flowlogs

import (
	"cmp"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"time"
)

// IPFIX (RFC 7011) constants.
const (
	ipfixVersion    = 10
	templateSetID   = 2
	ipfixTemplateID = 256 // the one template this exporter defines
	ipfixHeaderLen  = 16
	setHeaderLen    = 4
	// maxMessageLen keeps every message within a 1500-byte MTU path
	// without IP fragmentation.
	maxMessageLen = 1400
	// sendTimeout bounds one Write's sending, whatever the socket does.
	sendTimeout = time.Second
	dialTimeout = 5 * time.Second
)

// forwardingStatus values (RFC 7270 §4.12: status in the top two bits,
// reason unknown).
const (
	fwdForwarded = 0x40
	fwdDropped   = 0x80
)

// flowDirection values (IANA IE 61).
const (
	flowIngress = 0
	flowEgress  = 1
)

// element is one Information Element of the template: its IANA id, its
// length in a data record, and its value for a record (written big-endian
// in length bytes). The template and the data records are both made from
// this one table, so they cannot disagree.
type element struct {
	id     uint16
	length uint16
	value  func(r *Record) uint64
}

// elements returns the IPFIX template's Information Elements, in order.
func elements() []element {
	return []element{
		{8, 4, func(r *Record) uint64 { return ipv4(r.SrcAddr.Unmap().As4()) }},  // sourceIPv4Address
		{12, 4, func(r *Record) uint64 { return ipv4(r.DstAddr.Unmap().As4()) }}, // destinationIPv4Address
		{7, 2, func(r *Record) uint64 { return transportPort(r, r.SrcPort) }},    // sourceTransportPort
		{11, 2, func(r *Record) uint64 { return transportPort(r, r.DstPort) }},   // destinationTransportPort
		{4, 1, func(r *Record) uint64 { return uint64(r.Protocol) }},             // protocolIdentifier
		{2, 8, func(r *Record) uint64 { return r.Packets }},                      // packetDeltaCount
		{1, 8, func(r *Record) uint64 { return r.Bytes }},                        // octetDeltaCount
		{152, 8, func(r *Record) uint64 { return millis(r.Start) }},              // flowStartMilliseconds
		{153, 8, func(r *Record) uint64 { return millis(r.End) }},                // flowEndMilliseconds
		{6, 2, func(r *Record) uint64 { return uint64(r.TCPFlags) }},             // tcpControlBits
		{61, 1, flowDirection}, // flowDirection
		{32, 2, icmpTypeCode},  // icmpTypeCodeIPv4
		{351, 8, func(r *Record) uint64 { return uint64(r.VNI) }}, // layer2SegmentId
		{89, 1, forwardingStatus},                                 // forwardingStatus
	}
}

// millis is t in milliseconds since the Unix epoch, 0 for the zero time.
func millis(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMilli())
}

func ipv4(a [4]byte) uint64 { return uint64(binary.BigEndian.Uint32(a[:])) }

// transportPort is port for protocols with ports, 0 otherwise (ICMP's type
// and code go in icmpTypeCodeIPv4).
func transportPort(r *Record, port uint16) uint64 {
	if r.portKind() == portNumber {
		return uint64(port)
	}
	return 0
}

func icmpTypeCode(r *Record) uint64 {
	if r.Protocol != ProtoICMP {
		return 0
	}
	return uint64(r.ICMPType)<<8 | uint64(r.ICMPCode)
}

func flowDirection(r *Record) uint64 {
	if r.FlowDirection == DirectionEgress {
		return flowEgress
	}
	return flowIngress
}

func forwardingStatus(r *Record) uint64 {
	if r.Action == ActionReject {
		return fwdDropped
	}
	return fwdForwarded
}

// exportable reports whether r goes into an IPFIX data record: a flow
// (NODATA and SKIPDATA records have no IPFIX form) between IPv4 addresses.
func exportable(r *Record) bool {
	return r.hasFlow() && r.SrcAddr.Unmap().Is4() && r.DstAddr.Unmap().Is4()
}

// IPFIXSink exports flow records as IPFIX (RFC 7011) messages over UDP.
// Every Write starts with the template, so a collector that starts late
// decodes the next interval; the template is also resent within a Write
// once the refresh period has passed. Messages are at most 1400 bytes.
// Sends are bounded by a deadline and never retried: a collector that is
// down costs counted loss. NODATA and SKIPDATA records are not exported;
// flows with non-IPv4 addresses are counted as lost.
type IPFIXSink struct {
	counters
	conn     net.Conn
	domain   uint32
	refresh  time.Duration
	elems    []element
	recLen   int
	seq      uint32 // data records sent so far (RFC 7011 §3.1)
	lastTmpl time.Time
	pending  bool // the template must go in the next message
	now      func() time.Time
	buf      []byte
}

// NewIPFIXSink returns a sink exporting to the collector at addr
// ("HOST:PORT", UDP) as observation domain domainID, resending the template
// every refresh (≤ 0: DefaultTemplateRefresh) besides at each Write.
func NewIPFIXSink(addr string, domainID uint32, refresh time.Duration) (*IPFIXSink, error) {
	conn, err := net.DialTimeout("udp", addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	if refresh <= 0 {
		refresh = DefaultTemplateRefresh
	}
	s := &IPFIXSink{conn: conn, domain: domainID, refresh: refresh, elems: elements(), now: time.Now}
	for _, e := range s.elems {
		s.recLen += int(e.length)
	}
	return s, nil
}

// Write exports recs: a first message with the template, then as many
// messages as the data records need. A failed send counts its records as
// lost and the next records are still sent; once the send deadline has
// passed, the rest is counted as lost. It returns the first error.
func (s *IPFIXSink) Write(recs []Record) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		s.fail(countExportable(recs))
		return err
	}
	s.pending = true
	var firstErr error
	for i, first := 0, true; first || i < len(recs); first = false {
		now := s.now()
		withTemplate := s.pending || now.Sub(s.lastTmpl) >= s.refresh
		var n int
		s.buf, i, n = s.message(s.buf[:0], recs, i, withTemplate, now)
		if n == 0 && !withTemplate {
			break // only records with no IPFIX form were left
		}
		if _, err := s.conn.Write(s.buf); err != nil {
			s.fail(n)
			firstErr = cmp.Or(firstErr, err)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.lost.Add(uint64(countExportable(recs[i:])))
				break
			}
			continue
		}
		s.seq += uint32(n)
		if withTemplate {
			s.pending, s.lastTmpl = false, now
		}
	}
	return firstErr
}

// message appends to dst one IPFIX message: the header, the template set
// if withTemplate, and a data set with the exportable records of recs from
// index i on, as many as fit. It returns the message, the index of the
// first record not consumed and the number of data records in it. Flows
// that cannot be exported are counted as lost.
func (s *IPFIXSink) message(dst []byte, recs []Record, i int, withTemplate bool, now time.Time) ([]byte, int, int) {
	dst = append(dst, make([]byte, ipfixHeaderLen)...)
	if withTemplate {
		dst = s.appendTemplateSet(dst)
	}
	set := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, ipfixTemplateID)
	dst = binary.BigEndian.AppendUint16(dst, 0) // set length, below
	n := 0
	for ; i < len(recs) && len(dst)+s.recLen <= maxMessageLen; i++ {
		r := &recs[i]
		if !exportable(r) {
			if r.hasFlow() {
				s.lost.Add(1)
			}
			continue
		}
		dst = s.appendRecord(dst, r)
		n++
	}
	if n == 0 {
		dst = dst[:set]
	} else {
		binary.BigEndian.PutUint16(dst[set+2:], uint16(len(dst)-set))
	}
	s.putHeader(dst, now)
	return dst, i, n
}

// putHeader fills in the message header at the start of msg (RFC 7011 §3.1).
func (s *IPFIXSink) putHeader(msg []byte, now time.Time) {
	binary.BigEndian.PutUint16(msg[0:], ipfixVersion)
	binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
	binary.BigEndian.PutUint32(msg[4:], uint32(now.Unix()))
	binary.BigEndian.PutUint32(msg[8:], s.seq)
	binary.BigEndian.PutUint32(msg[12:], s.domain)
}

// appendTemplateSet appends the template set with the one template record
// (RFC 7011 §3.4.1).
func (s *IPFIXSink) appendTemplateSet(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, templateSetID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(setHeaderLen+4+4*len(s.elems)))
	dst = binary.BigEndian.AppendUint16(dst, ipfixTemplateID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s.elems)))
	for _, e := range s.elems {
		dst = binary.BigEndian.AppendUint16(dst, e.id)
		dst = binary.BigEndian.AppendUint16(dst, e.length)
	}
	return dst
}

// appendRecord appends r as a data record of the template.
func (s *IPFIXSink) appendRecord(dst []byte, r *Record) []byte {
	for _, e := range s.elems {
		v := e.value(r)
		for shift := 8 * int(e.length-1); shift >= 0; shift -= 8 {
			dst = append(dst, byte(v>>shift))
		}
	}
	return dst
}

// countExportable returns how many of recs would be exported.
func countExportable(recs []Record) int {
	n := 0
	for i := range recs {
		if exportable(&recs[i]) {
			n++
		}
	}
	return n
}

// Flush does nothing: Write sends everything it is given.
func (s *IPFIXSink) Flush() error { return nil }

// Close closes the socket.
func (s *IPFIXSink) Close() error { return s.conn.Close() }
