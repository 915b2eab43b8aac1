package flowlogs

import (
	"net/netip"
	"strconv"
	"time"
)

// valueFunc appends the value of a field for r to dst, or reports false when
// the field does not apply to r (it then prints "-"). version is the
// version of the format the record is printed with.
type valueFunc func(dst []byte, r *Record, version int) ([]byte, bool)

// field describes one flow-log field.
type field struct {
	name    string
	version int  // AWS flow-log version that introduced the field; 0 never raises a format's version
	number  bool // a JSON number (otherwise a JSON string)
	value   valueFunc
}

// lookupField returns the field called name (as in ${name}). Which fields
// exist is topology's to say (topology.FlowLogFields, what formats are
// validated against); this says how each one prints.
func lookupField(name string) (field, bool) {
	switch name {
	case "version":
		return field{name, 2, true, func(dst []byte, _ *Record, v int) ([]byte, bool) {
			return strconv.AppendInt(dst, int64(v), 10), true
		}}, true
	case "account-id":
		return stringField(name, 2, func(r *Record) string { return r.AccountID }), true
	case "interface-id":
		return stringField(name, 2, func(r *Record) string { return r.InterfaceID }), true
	case "srcaddr":
		return addrField(name, 2, func(r *Record) netip.Addr { return r.SrcAddr }), true
	case "dstaddr":
		return addrField(name, 2, func(r *Record) netip.Addr { return r.DstAddr }), true
	case "srcport":
		return portField(name, func(r *Record) uint16 { return r.SrcPort }), true
	case "dstport":
		return portField(name, func(r *Record) uint16 { return r.DstPort }), true
	case "protocol":
		return countField(name, func(r *Record) uint64 { return uint64(r.Protocol) }), true
	case "packets":
		return countField(name, func(r *Record) uint64 { return r.Packets }), true
	case "bytes":
		return countField(name, func(r *Record) uint64 { return r.Bytes }), true
	case "start":
		return timeField(name, func(r *Record) time.Time { return r.Start }), true
	case "end":
		return timeField(name, func(r *Record) time.Time { return r.End }), true
	case "action":
		return flowOnly(stringField(name, 2, func(r *Record) string { return r.Action })), true
	case "log-status":
		return stringField(name, 2, (*Record).status), true
	case "vpc-id":
		return stringField(name, 3, func(r *Record) string { return r.VPCID }), true
	case "subnet-id":
		return stringField(name, 3, func(r *Record) string { return r.SubnetID }), true
	case "instance-id":
		return stringField(name, 3, func(r *Record) string { return r.InstanceID }), true
	case "tcp-flags":
		return tcpFlagsField(), true
	case "type":
		return flowOnly(stringField(name, 3, (*Record).addrType)), true
	case "pkt-srcaddr":
		return addrField(name, 3, (*Record).pktSrc), true
	case "pkt-dstaddr":
		return addrField(name, 3, (*Record).pktDst), true
	case "flow-direction":
		return stringField(name, 5, func(r *Record) string { return r.FlowDirection }), true
	case "traffic-path":
		return trafficPathField(), true
	case "encryption-status":
		return encryptionField(), true
	case "vni":
		return field{name, 0, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
			return strconv.AppendUint(dst, uint64(r.VNI), 10), true
		}}, true
	}
	return field{}, false
}

// flowOnly makes f print "-" for records that describe no flow (NODATA,
// SKIPDATA).
func flowOnly(f field) field {
	value := f.value
	f.value = func(dst []byte, r *Record, v int) ([]byte, bool) {
		if !r.hasFlow() {
			return dst, false
		}
		return value(dst, r, v)
	}
	return f
}

// stringField is a string field that prints "-" when empty.
func stringField(name string, version int, get func(*Record) string) field {
	return field{name, version, false, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		s := get(r)
		return append(dst, s...), s != ""
	}}
}

// addrField is an address of the flow, "-" when invalid.
func addrField(name string, version int, get func(*Record) netip.Addr) field {
	return flowOnly(field{name, version, false, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		a := get(r)
		if !a.IsValid() {
			return dst, false
		}
		return a.AppendTo(dst), true
	}})
}

// portField is a transport port: a number for protocols with ports, 0 for
// ICMP, "-" for the others.
func portField(name string, get func(*Record) uint16) field {
	return flowOnly(field{name, 2, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		switch r.portKind() {
		case portNumber:
			return strconv.AppendUint(dst, uint64(get(r)), 10), true
		case portZero:
			return append(dst, '0'), true
		}
		return dst, false
	}})
}

// countField is a number of the flow (protocol, packets, bytes).
func countField(name string, get func(*Record) uint64) field {
	return flowOnly(field{name, 2, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		return strconv.AppendUint(dst, get(r), 10), true
	}})
}

// timeField is a time printed as Unix seconds, "-" when zero.
func timeField(name string, get func(*Record) time.Time) field {
	return field{name, 2, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		t := get(r)
		if t.IsZero() {
			return dst, false
		}
		return strconv.AppendInt(dst, t.Unix(), 10), true
	}}
}

// tcpFlagsField prints the OR of the TCP flags seen, for TCP flows only.
func tcpFlagsField() field {
	return flowOnly(field{"tcp-flags", 3, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		if r.Protocol != ProtoTCP {
			return dst, false
		}
		return strconv.AppendUint(dst, uint64(r.TCPFlags), 10), true
	}})
}

// trafficPathField prints the traffic path, "-" when 0.
func trafficPathField() field {
	return field{"traffic-path", 5, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		if r.TrafficPath == 0 {
			return dst, false
		}
		return strconv.AppendInt(dst, int64(r.TrafficPath), 10), true
	}}
}

// encryptionField prints the encryption status of a flow, "-" when unknown.
func encryptionField() field {
	return flowOnly(field{"encryption-status", 7, true, func(dst []byte, r *Record, _ int) ([]byte, bool) {
		if r.EncryptionStatus == EncryptionUnknown {
			return dst, false
		}
		return strconv.AppendInt(dst, int64(r.EncryptionStatus), 10), true
	}})
}
