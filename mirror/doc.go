// Package mirror is the daemon's half of traffic mirroring (AWS Traffic
// Mirroring semantics; docs/mirroring.md). The eBPF datapath decides which
// packets a session takes and hands the first bytes of each to the daemon
// through a ring buffer (bpf/lib/mirror.h); this package wraps every copy
// in VXLAN (UDP 4789, the session's VNI, outer source the source ENI's
// address) and sends it into the VPC through the injection interface, or
// appends it to a pcap file. A copy that cannot be sent is dropped and
// counted: mirroring never holds up the traffic it watches.
package mirror
