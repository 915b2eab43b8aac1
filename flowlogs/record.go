package flowlogs

import (
	"net/netip"
	"time"
)

// Values of Record.Action.
const (
	ActionAccept = "ACCEPT"
	ActionReject = "REJECT"
)

// Values of Record.LogStatus.
const (
	StatusOK       = "OK"       // the record describes a flow
	StatusNoData   = "NODATA"   // no traffic at the ENI during the interval
	StatusSkipData = "SKIPDATA" // records were lost to capacity during the interval
)

// Values of Record.FlowDirection.
const (
	DirectionIngress = "ingress" // into the workload
	DirectionEgress  = "egress"  // out of the workload
)

// IP protocol numbers the formatter treats specially.
const (
	ProtoICMP    = 1
	ProtoTCP     = 6
	ProtoUDP     = 17
	ProtoICMPv6  = 58
	protoDCCP    = 33
	protoSCTP    = 132
	protoUDPLite = 136
)

// EncryptionUnknown is the EncryptionStatus that prints "-".
const EncryptionUnknown = -1

// Record is one flow-log record: one flow (addresses, ports, protocol) at one
// ENI in one direction within one aggregation interval, or a NODATA or
// SKIPDATA record for an ENI. The version field is not part of a record: a
// Format computes it from the fields it prints.
//
// For NODATA and SKIPDATA records the flow fields (addresses, ports,
// protocol, packets, bytes, action, tcp-flags, type, packet addresses,
// encryption-status) print "-", as AWS writes them; the ENI's identity,
// start, end and log-status are printed.
type Record struct {
	AccountID   string // "" prints "-"
	InterfaceID string // the ENI's name

	SrcAddr, DstAddr netip.Addr
	SrcPort, DstPort uint16 // ICMP prints 0; protocols without ports print "-"
	Protocol         uint8  // IANA protocol number

	Packets uint64 // IP packets
	Bytes   uint64 // IP bytes, headers included

	Start, End time.Time // first and last packet; printed as Unix seconds

	Action    string // ActionAccept or ActionReject
	LogStatus string // StatusOK ("" means OK), StatusNoData or StatusSkipData

	VPCID, SubnetID, InstanceID string // names; "" prints "-"

	TCPFlags uint8  // OR of the flags seen; printed for TCP only
	Type     string // "IPv4" or "IPv6"; "" is derived from SrcAddr

	PktSrcAddr, PktDstAddr netip.Addr // packet-level addresses; invalid means SrcAddr/DstAddr

	FlowDirection    string // DirectionIngress or DirectionEgress
	TrafficPath      int    // AWS traffic-path code (egress only); 0 prints "-"
	EncryptionStatus int    // 1 crossed hosts in the tunnel, 0 stayed on one host, EncryptionUnknown prints "-"
	VNI              uint32 // the VPC's VXLAN network identifier

	ICMPType, ICMPCode uint8 // for IPFIX icmpTypeCodeIPv4
}

// hasFlow reports whether r describes a flow (log-status OK), as opposed to
// a NODATA or SKIPDATA record.
func (r *Record) hasFlow() bool {
	return r.LogStatus == "" || r.LogStatus == StatusOK
}

// status returns r's log-status, OK when unset.
func (r *Record) status() string {
	if r.LogStatus == "" {
		return StatusOK
	}
	return r.LogStatus
}

// portKind says how r's ports print: portNumber, portZero (ICMP) or portNone.
func (r *Record) portKind() portKind {
	switch r.Protocol {
	case ProtoTCP, ProtoUDP, protoDCCP, protoSCTP, protoUDPLite:
		return portNumber
	case ProtoICMP, ProtoICMPv6:
		return portZero
	}
	return portNone
}

type portKind uint8

const (
	portNone portKind = iota
	portNumber
	portZero
)

// addrType returns the type field: r.Type, or the family of SrcAddr.
func (r *Record) addrType() string {
	switch {
	case r.Type != "":
		return r.Type
	case r.SrcAddr.Is4() || r.SrcAddr.Is4In6():
		return "IPv4"
	case r.SrcAddr.Is6():
		return "IPv6"
	}
	return ""
}

// pktSrc returns the packet-level source address, SrcAddr when unset.
func (r *Record) pktSrc() netip.Addr {
	if r.PktSrcAddr.IsValid() {
		return r.PktSrcAddr
	}
	return r.SrcAddr
}

// pktDst returns the packet-level destination address, DstAddr when unset.
func (r *Record) pktDst() netip.Addr {
	if r.PktDstAddr.IsValid() {
		return r.PktDstAddr
	}
	return r.DstAddr
}

// TrafficPathSameVPC is AWS's traffic-path 1: egress "through another
// resource in the same VPC", the only path a vpcd VPC has.
const TrafficPathSameVPC = 1
