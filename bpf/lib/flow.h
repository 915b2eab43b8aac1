/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-flow counters for VPC flow logs: one entry per ENI, direction,
 * action and 5-tuple, drained by the daemon every second with an atomic
 * lookup-and-delete, so counting never stops. A full table is never
 * silent: what could not be counted is counted per ENI in flow_lost, and
 * that ENI's records of the interval become SKIPDATA. Each ENI may hold
 * its share of the table (eni_usage's USAGE_FLOW_SHARE, from its
 * max_connections); beyond it, its new flows are lost the same way. */
#ifndef VPCD_FLOW_H
#define VPCD_FLOW_H

#include "common.h"
#include "maps.h"
#include "policy.h"

#define FLOW_ACCEPT 0
#define FLOW_REJECT 1

/* AWS's tcp-flags: FIN 1, SYN 2, RST 4, and SYN-ACK 18 for a packet that
 * carries both. */
static __always_inline __u8 aws_tcp_flags(const struct pkt_info *pi)
{
	__u8 f;

	if (pi->proto != IPPROTO_TCP_)
		return 0;
	f = pi->tcp_flags & (TCPF_FIN | TCPF_RST);
	if (pi->tcp_flags & TCPF_SYN)
		f |= (pi->tcp_flags & TCPF_ACK) ? 18 : TCPF_SYN;
	return f;
}

/* flow_count adds a packet (segs wire packets of bytes IP bytes in all)
 * to its flow at ENI eni_id in dir with action. */
static __always_inline void flow_count(__u32 eni_id, const struct pkt_info *pi, __u8 dir, __u8 action,
				       __u32 segs, __u32 bytes, __u8 encrypted)
{
	struct flow_key k = {
		.eni_id = eni_id,
		.saddr = pi->saddr,
		.daddr = pi->daddr,
		.sport = pi->sport,
		.dport = pi->dport,
		.proto = pi->proto,
		.dir = dir,
		.action = action,
	};
	__u64 now = bpf_ktime_get_coarse_ns();
	__u8 flags = aws_tcp_flags(pi);
	struct flow_val *v;

	if (pi->proto == IPPROTO_ICMP_) { /* one flow per type and code */
		k.sport = 0;
		k.dport = pi->rule_port;
	}
	v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		struct flow_val nv = { .first = now, .last = now, .encrypted = encrypted };
		__u64 *share = usage_slot(eni_id, USAGE_FLOW_SHARE);

		/* An ENI that holds its share of the table loses its own
		 * records (SKIPDATA) rather than the room of the others. */
		if (!usage_room(eni_id, USAGE_FLOW_MADE, share ? *share : 0) ||
		    bpf_map_update_elem(&flows, &k, &nv, BPF_NOEXIST) < 0) {
			v = bpf_map_lookup_elem(&flows, &k); /* another CPU won the race */
			if (!v) {
				__u64 *lost = bpf_map_lookup_elem(&flow_lost, &eni_id);

				if (lost)
					*lost += segs;
				return;
			}
		} else {
			usage_add(eni_id, USAGE_FLOW_MADE);
			v = bpf_map_lookup_elem(&flows, &k);
			if (!v)
				return;
		}
	}
	__sync_fetch_and_add(&v->packets, segs);
	__sync_fetch_and_add(&v->bytes, bytes);
	v->last = now;
	v->tcp_flags |= flags;
}

/* wire_size is how many packets and IP bytes a (possibly GSO) packet of
 * len IP bytes stands for: a super-packet's segments each carry the
 * headers again. */
static __always_inline void wire_size(__u32 len, __u32 gso_segs, __u32 gso_size, __u32 hdrs,
				      __u32 *segs, __u32 *bytes)
{
	__u32 n = gso_segs;

	if (n <= 1 && gso_size && len > hdrs + gso_size && hdrs < len)
		n = (len - hdrs + gso_size - 1) / gso_size;
	if (n < 1)
		n = 1;
	*segs = n;
	*bytes = len + (n - 1) * hdrs;
}

#endif
