/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The one list of reasons a vpcd program drops a packet, and the one helper
 * every program drops with (drop_packet). bpf2go turns enum drop_reason into
 * a Go type; the Go side names each value (dataplane/drops.go) and a test
 * checks that every value has a name. DROP_UNSPEC is no reason: a helper
 * that returns a reason returns it for "not dropped". */
#ifndef VPCD_DROP_H
#define VPCD_DROP_H

#include "ctx.h"
#include "common.h"
#include "maps.h"
#include "monitor.h"

enum drop_reason {
	DROP_UNSPEC = 0,
	DROP_SOURCE_CHECK,    /* spoofed source IP or MAC */
	DROP_NO_ROUTE,        /* no ENI has the destination in this VPC */
	DROP_SUBSTRATE,       /* aimed at a host, the underlay or the tunnel */
	DROP_SG_INGRESS,
	DROP_SG_EGRESS,
	DROP_NACL_INGRESS,
	DROP_NACL_EGRESS,
	DROP_CT_INVALID,
	DROP_NO_TUNNEL,       /* remote destination but no tunnel device */
	DROP_UNDERLAY_FILTER, /* underlay packet that is not ours to take */
	DROP_FRAG_NEEDED,     /* DF packet too big for the tunnel: ICMP sent */
	DROP_MALFORMED,       /* truncated or invalid headers */
	DROP_UNSUPPORTED,     /* a protocol the VPC does not carry (IPv6, VLAN) */
	DROP_UNKNOWN_ENI,     /* program runs on an interface with no ENI */
	DROP_DEST_CHECK,      /* delivered frame not addressed to the ENI */
	DROP_ENCAP_FAILED,    /* the kernel refused to resize the packet */
	DROP_ARP,             /* ARP the VPC router does not answer */
	DROP_FRAGMENT,        /* later fragment whose first was not seen or was denied */
	DROP_CONNTRACK_ALLOWANCE, /* a new connection over the ENI's max_connections */
	__DROP_MAX,
};

/* Keeps the enum in the object's BTF so that bpf2go can generate it. */
const enum drop_reason *__drop_reason_btf __attribute__((unused));

/* policy_reject reports drop reasons that flow logs record as REJECT: the
 * security groups', network ACLs' and connection tracking's. */
static __always_inline int policy_reject(enum drop_reason r)
{
	return r == DROP_SG_INGRESS || r == DROP_SG_EGRESS || r == DROP_NACL_INGRESS ||
	       r == DROP_NACL_EGRESS || r == DROP_CT_INVALID;
}

/* count_drop records one dropped packet under its reason and direction. */
static __always_inline void count_drop(enum drop_reason reason, enum direction dir)
{
	__u32 key = (__u32)reason * __DIR_MAX + (__u32)dir;
	__u64 *v = bpf_map_lookup_elem(&drops, &key);

	if (v)
		*v += 1;
}

/* drop_packet drops the packet in ctx: it counts it under its reason and
 * the workload's direction, reports it to `vpcd monitor` as seen at hook,
 * and returns the verdict that drops it. Drops at the underlay are counted
 * but not reported: whatever reaches a host's underlay would flood the
 * monitor. */
static __always_inline int drop_packet(struct ctx_buff *ctx, enum drop_reason reason, enum direction dir,
				       enum event_hook hook)
{
	count_drop(reason, dir);
	if (hook != HOOK_UNDERLAY)
		emit_drop(ctx, reason, dir, hook);
	return CTX_DROP;
}

/* Keep enum event_hook and struct drop_event in the BTF for bpf2go. */
const enum event_hook *__event_hook_btf __attribute__((unused));
const struct drop_event *__drop_event_btf __attribute__((unused));

#endif
