/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking for security groups, per ENI, one LRU entry for both
 * directions of a connection. Timeouts follow AWS's documented idle
 * timeouts for tracked connections (docs/security.md). */
#ifndef VPCD_CONNTRACK_H
#define VPCD_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "policy.h"

#define NSEC 1000000000ULL
#define CT_TCP_ESTABLISHED ((__u64)CT_TCP_ESTABLISHED_S * NSEC) /* 5 days */
#define CT_TCP_SYN ((__u64)CT_TCP_SYN_S * NSEC)
#define CT_TCP_CLOSING ((__u64)CT_TCP_CLOSING_S * NSEC)
#define CT_UDP ((__u64)CT_UDP_S * NSEC)               /* no reply yet */
#define CT_UDP_STREAM ((__u64)CT_UDP_STREAM_S * NSEC) /* replies seen */
#define CT_ICMP ((__u64)CT_ICMP_S * NSEC)
#define CT_OTHER ((__u64)CT_OTHER_S * NSEC)

enum ct_result {
	CT_MISS = 0, /* no entry: rules decide */
	CT_HIT,      /* part of a live connection: passes */
	CT_STALE,    /* an entry, closed or idle too long: rules decide */
};

static __always_inline __u64 ct_timeout(__u8 proto, __u8 state)
{
	if (proto == IPPROTO_TCP_) {
		if (state == CT_ESTABLISHED)
			return CT_TCP_ESTABLISHED;
		if (state == CT_CLOSING)
			return CT_TCP_CLOSING;
		return CT_TCP_SYN;
	}
	if (proto == IPPROTO_UDP_)
		return state == CT_ESTABLISHED ? CT_UDP_STREAM : CT_UDP;
	if (proto == IPPROTO_ICMP_)
		return CT_ICMP;
	return CT_OTHER;
}

/* ct_key_for builds the ENI's key for a packet in dir (as seen by the ENI):
 * the same key for both directions of a connection. */
static __always_inline void ct_key_for(struct ct_key *k, __u32 eni_id, const struct pkt_info *pi, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->eni_id = eni_id;
	k->proto = pi->proto;
	if (dir == DIR_EGRESS) {
		k->remote_ip = pi->daddr;
		k->local_port = pi->sport;
		k->remote_port = pi->dport;
	} else {
		k->remote_ip = pi->saddr;
		k->local_port = pi->dport;
		k->remote_port = pi->sport;
	}
	if (pi->proto == IPPROTO_ICMP_) {
		/* A query exchange: the identifier, the request's type and the
		 * direction requests travel in. A reply matches the entry its
		 * request made; a request coming the other way does not. */
		__u8 type = pi->rule_port >> 8;
		__u8 req_dir = icmp_request(type) ? dir : dir ^ 1;
		__u16 kind = type == 8 || type == 0 ? 8 : 13;

		k->local_port = pi->sport;
		k->remote_port = kind << 8 | (req_dir + 1);
	}
}

/* fast_forget closes the egress fast-path entry of the ENI for a
 * connection (key k, the ENI's address ip): after a FIN or RST nothing of
 * it may skip the state machine. The entry stays, closed, until the daemon
 * has read its flow counters and deletes it. */
static __always_inline void fast_forget(const struct eni_info *eni, const struct ct_key *k)
{
	struct fast_key fk = {
		.ifindex = eni->ifindex,
		.saddr = eni->ip,
		.daddr = k->remote_ip,
		.sport = k->local_port,
		.dport = k->remote_port,
		.proto = k->proto,
		.rule_port = k->remote_port, /* TCP: the destination port */
	};

	struct fast_entry *fe = bpf_map_lookup_elem(&fastpath, &fk);

	if (fe)
		fe->closed = 1;
}

/* ct_update looks the packet's connection up and moves its state on.
 * A closed or idle-expired entry is no connection. */
static __always_inline int ct_update(const struct ct_key *k, __u8 dir, __u8 flags, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&conntrack, k);

	if (!e)
		return CT_MISS;
	if (e->state == CT_CLOSED || now - e->last_seen > ct_timeout(k->proto, e->state))
		return CT_STALE;
	e->last_seen = now;
	if (k->proto == IPPROTO_TCP_) {
		if (flags & TCPF_RST) {
			e->state = CT_CLOSED;
		} else {
			if (dir != e->origin && e->state == CT_SYN_SENT)
				e->state = CT_ESTABLISHED;
			if (flags & TCPF_FIN) {
				e->fin_dirs |= 1 << dir;
				if (e->fin_dirs == 3)
					e->state = CT_CLOSING;
			}
		}
	} else if (dir != e->origin) {
		e->state = CT_ESTABLISHED;
	}
	return CT_HIT;
}

/* ct_create starts tracking a connection of ENI eni the rules allowed;
 * fresh says the key had no entry, so the table grows by one (or, full,
 * evicts). A fresh key over the ENI's max_conns is refused (-1): the
 * connection is not tracked and its packet is dropped as
 * conntrack_allowance. Limit check and count are two steps, so CPUs
 * creating at the same instant can take the ENI a few entries (at most one
 * per CPU) over its limit. */
static __always_inline int ct_create(const struct eni_info *eni, const struct ct_key *k, __u8 dir, __u8 flags,
				     __u64 now, int fresh)
{
	struct ct_entry e = { .last_seen = now, .origin = dir, .state = CT_NEW };

	/* Only an ICMP request opens an exchange: a reply the rules let out
	 * must not open the way for requests in (the key's low byte is the
	 * direction requests travel, plus one). */
	if (k->proto == IPPROTO_ICMP_ && (k->remote_port & 0xff) != dir + 1)
		return 0;
	if (k->proto == IPPROTO_TCP_) {
		if (flags & TCPF_RST)
			return 0; /* nothing to track */
		e.state = (flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN ? CT_SYN_SENT : CT_ESTABLISHED;
		if (flags & TCPF_FIN)
			e.fin_dirs = 1 << dir;
	}
	if (fresh) {
		if (!usage_room(eni->eni_id, USAGE_CT_MADE, eni->max_conns)) {
			usage_add(eni->eni_id, USAGE_CT_REFUSED);
			return -1;
		}
		e.seq = usage_next(eni->eni_id, USAGE_CT_MADE);
	} else {
		/* A stale entry replaced: the same connection slot, counted
		 * when it was made. */
		struct ct_entry *old = bpf_map_lookup_elem(&conntrack, k);

		if (old)
			e.seq = old->seq;
	}
	/* In this order: entry, then MADE, then the inserts. The daemon's
	 * recount (dataplane/usage.go) reads the inserts, then MADE, then
	 * the table, and counts only entries numbered up to the MADE it
	 * read: an entry made while it reads is neither counted nor in
	 * MADE, so the ENI is charged neither less nor more than it holds. */
	if (bpf_map_update_elem(&conntrack, k, &e, BPF_ANY) == 0 && fresh) {
		__u32 slot = 0;
		__u64 *n;

		usage_add(eni->eni_id, USAGE_CT_MADE);
		n = bpf_map_lookup_elem(&ct_inserts, &slot);
		if (n)
			*n += 1;
	}
	return 0;
}

/* ct_not_start reports a TCP packet that cannot open a connection: one
 * that is neither a SYN nor allowed is a stray (ct_invalid), not a new
 * connection the groups refused. */
static __always_inline int ct_not_start(const struct pkt_info *pi)
{
	return pi->proto == IPPROTO_TCP_ && (pi->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN;
}

/* policy_check applies, for a packet leaving (DIR_EGRESS) or entering
 * (DIR_INGRESS) the ENI eni: the subnet's network ACL when the packet
 * crosses the subnet's boundary, then the ENI's connection tracking, then
 * its security groups. Returns 0 or the drop reason. */
static __always_inline enum drop_reason policy_check(const struct eni_info *eni, const struct pkt_info *pi,
						     __u8 dir, __u64 now)
{
	__be32 remote = dir == DIR_EGRESS ? pi->daddr : pi->saddr;
	struct ct_key k;
	int ct;

	if ((remote & eni->subnet_mask) != eni->subnet_net) {
		__u32 nacl = dir == DIR_EGRESS ? eni->nacl_out : eni->nacl_in;

		if (!nacl_allows(nacl, remote, pi->proto, pi->rule_port))
			return dir == DIR_EGRESS ? DROP_NACL_EGRESS : DROP_NACL_INGRESS;
	}
	/* ICMP that is no query (errors and the like) is never tracked. */
	if (pi->proto == IPPROTO_ICMP_ && !icmp_query(pi->rule_port >> 8)) {
		if (sg_allows(dir == DIR_EGRESS ? eni->sg_out : eni->sg_in, remote, pi->proto, pi->rule_port))
			return DROP_UNSPEC;
		return dir == DIR_EGRESS ? DROP_SG_EGRESS : DROP_SG_INGRESS;
	}
	ct_key_for(&k, eni->eni_id, pi, dir);
	if (pi->proto == IPPROTO_TCP_ && (pi->tcp_flags & (TCPF_FIN | TCPF_RST)))
		fast_forget(eni, &k);
	ct = ct_update(&k, dir, pi->tcp_flags, now);
	if (ct == CT_HIT)
		return DROP_UNSPEC;
	if (sg_allows(dir == DIR_EGRESS ? eni->sg_out : eni->sg_in, remote, pi->proto, pi->rule_port)) {
		if (ct_create(eni, &k, dir, pi->tcp_flags, now, ct == CT_MISS) < 0)
			return DROP_CONNTRACK_ALLOWANCE;
		return DROP_UNSPEC;
	}
	if (ct_not_start(pi))
		return DROP_CT_INVALID;
	return dir == DIR_EGRESS ? DROP_SG_EGRESS : DROP_SG_INGRESS;
}

#endif
