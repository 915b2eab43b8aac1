package dataplane

import "github.com/vpcd/vpcd/bpf"

// DropReason is why the datapath dropped a packet. Its values come from the
// C enum drop_reason through bpf2go, so C and Go cannot drift apart.
type DropReason = bpf.EniDropReason

// dropReasonNames are the metric label values of SPEC §8, one per reason.
var dropReasonNames = map[DropReason]string{
	bpf.EniDropReasonDROP_UNSPEC:              "unspec",
	bpf.EniDropReasonDROP_SOURCE_CHECK:        "source_check",
	bpf.EniDropReasonDROP_NO_ROUTE:            "no_route",
	bpf.EniDropReasonDROP_SUBSTRATE:           "substrate",
	bpf.EniDropReasonDROP_SG_INGRESS:          "sg_ingress",
	bpf.EniDropReasonDROP_SG_EGRESS:           "sg_egress",
	bpf.EniDropReasonDROP_NACL_INGRESS:        "nacl_ingress",
	bpf.EniDropReasonDROP_NACL_EGRESS:         "nacl_egress",
	bpf.EniDropReasonDROP_CT_INVALID:          "ct_invalid",
	bpf.EniDropReasonDROP_NO_TUNNEL:           "no_tunnel",
	bpf.EniDropReasonDROP_UNDERLAY_FILTER:     "underlay_filter",
	bpf.EniDropReasonDROP_FRAG_NEEDED:         "frag_needed",
	bpf.EniDropReasonDROP_MALFORMED:           "malformed",
	bpf.EniDropReasonDROP_UNSUPPORTED:         "unsupported",
	bpf.EniDropReasonDROP_UNKNOWN_ENI:         "unknown_eni",
	bpf.EniDropReasonDROP_DEST_CHECK:          "dest_check",
	bpf.EniDropReasonDROP_ENCAP_FAILED:        "encap_failed",
	bpf.EniDropReasonDROP_ARP:                 "arp",
	bpf.EniDropReasonDROP_FRAGMENT:            "fragment",
	bpf.EniDropReasonDROP_CONNTRACK_ALLOWANCE: "conntrack_allowance",
}

// NumDropReasons is the number of drop reasons the datapath knows.
const NumDropReasons = int(bpf.EniDropReasonDROP_MAX)

// DropReasonName returns the metric label of a reason.
func DropReasonName(r DropReason) string {
	if n, ok := dropReasonNames[r]; ok {
		return n
	}
	return "unknown"
}

// DropReasonNames lists every reason's label in enum order.
func DropReasonNames() []string {
	out := make([]string, 0, NumDropReasons)
	for r := 0; r < NumDropReasons; r++ {
		out = append(out, DropReasonName(DropReason(r)))
	}
	return out
}

// Direction as seen by the workload, as in the C enum direction.
type Direction int

const (
	Ingress Direction = 0 // into the workload
	Egress  Direction = 1 // out of the workload
)

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}
