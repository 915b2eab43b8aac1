/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 fragments. Only a datagram's first fragment carries the transport
 * header, so only it meets the rules, with its real ports. When it passes,
 * its ports are remembered under (VNI, source, destination, protocol, IP
 * ID); the datagram's later fragments follow that verdict and take those
 * ports for flow logs and mirror filters. A later fragment with no first
 * fragment remembered (never seen, denied, or older than FRAG_TIMEOUT) is
 * dropped as DROP_FRAGMENT, as is one that could overlap the transport
 * header (RFC 1858) and a first fragment too short to hold it. */
#ifndef VPCD_FRAG_H
#define VPCD_FRAG_H

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "parse.h"
#include "policy.h"

/* As long as Linux waits for a datagram's fragments (ipfrag_time). */
#define FRAG_TIMEOUT (30ULL * 1000000000ULL)

/* ip_later_fragment: a fragment at a non-zero offset (no transport header). */
static __always_inline int ip_later_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_OFFMASK)) != 0;
}

/* ip_first_fragment: offset zero, more to come. */
static __always_inline int ip_first_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_MF | IP_OFFMASK)) == bpf_htons(IP_MF);
}

/* l4_min_len is the transport header a first fragment must hold whole. */
static __always_inline __u32 l4_min_len(__u8 proto)
{
	if (proto == IPPROTO_TCP_)
		return 20;
	if (proto == IPPROTO_UDP_ || proto == IPPROTO_ICMP_)
		return 8;
	return 0;
}

static __always_inline void frag_key_for(struct frag_key *k, __u32 vni, const struct iphdr *ip)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->vni = vni;
	k->saddr = ip->saddr;
	k->daddr = ip->daddr;
	k->id = ip->id;
	k->proto = ip->protocol;
}

/* frag_budget takes one of the ENI's FRAG_BUDGET first fragments of the
 * current window, or reports (0) that it has none left: one ENI's flood of
 * first fragments costs only its own fragmented traffic. Both slots are
 * the datapath's alone; CPUs that open a window at the same instant may
 * let a few more through, never fewer. */
static __always_inline int frag_budget(__u32 eni_id)
{
	__u64 *start = usage_slot(eni_id, USAGE_FRAG_WINDOW);
	__u64 *count = usage_slot(eni_id, USAGE_FRAG_COUNT);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!start || !count)
		return 1;
	if (now - *start > (__u64)FRAG_WINDOW_MS * 1000000ULL) {
		*start = now;
		*count = 0;
	}
	if (*count >= FRAG_BUDGET)
		return 0;
	__sync_fetch_and_add(count, 1);
	return 1;
}

/* frag_check vets a fragment before policy: a first fragment must hold its
 * transport header and fit the budget of ENI eni_id (the sender's at the
 * ENI program, the receiver's at the tunnel's); a later one must not reach
 * into it and must follow a first fragment that passed, whose ports it
 * takes into pi. Returns 0 or DROP_FRAGMENT. */
static __always_inline enum drop_reason frag_check(__u32 eni_id, __u32 vni, const struct iphdr *ip,
						    struct pkt_info *pi)
{
	struct frag_key k;
	struct frag_entry *e;

	if (!ip_later_fragment(ip)) {
		if (!ip_first_fragment(ip))
			return DROP_UNSPEC;
		if (bpf_ntohs(ip->tot_len) < ip->ihl * 4 + l4_min_len(ip->protocol))
			return DROP_FRAGMENT;
		return frag_budget(eni_id) ? DROP_UNSPEC : DROP_FRAGMENT;
	}
	if ((__u32)bpf_ntohs(ip->frag_off & bpf_htons(IP_OFFMASK)) * 8 < l4_min_len(ip->protocol))
		return DROP_FRAGMENT;
	frag_key_for(&k, vni, ip);
	e = bpf_map_lookup_elem(&frags, &k);
	if (!e || bpf_ktime_get_coarse_ns() - e->seen > FRAG_TIMEOUT)
		return DROP_FRAGMENT;
	pi->sport = e->sport;
	pi->dport = e->dport;
	pi->rule_port = e->rule_port;
	pi->tcp_flags = e->tcp_flags;
	return DROP_UNSPEC;
}

/* frag_passed remembers a first fragment the rules let through; a
 * non-fragment does nothing. */
static __always_inline void frag_passed(__u32 vni, const struct iphdr *ip, const struct pkt_info *pi)
{
	struct frag_key k;
	struct frag_entry e = {
		.sport = pi->sport,
		.dport = pi->dport,
		.rule_port = pi->rule_port,
		.tcp_flags = pi->tcp_flags,
	};

	if (!ip_first_fragment(ip))
		return;
	e.seen = bpf_ktime_get_coarse_ns();
	frag_key_for(&k, vni, ip);
	bpf_map_update_elem(&frags, &k, &e, BPF_ANY);
}

/* frag_denied forgets a datagram whose first fragment was dropped, so that
 * its later fragments cannot follow an earlier datagram's verdict. */
static __always_inline void frag_denied(__u32 vni, const struct iphdr *ip)
{
	struct frag_key k;

	if (!ip_first_fragment(ip))
		return;
	frag_key_for(&k, vni, ip);
	bpf_map_delete_elem(&frags, &k);
}

#endif
