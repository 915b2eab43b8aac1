//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay filter: XDP on the host's underlay interface. It lets through
 * WireGuard from known peers to our port, ARP, IPv6 neighbour discovery and
 * multicast listener housekeeping, ICMP errors from peers (path MTU for the
 * tunnel) and what the operator's allow-list names; it drops everything
 * else at the earliest point, counted. */

#define VPCD_HOOK_XDP
#include "lib/ctx.h"
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop.h"
#include "lib/parse.h"
#include <linux/ipv6.h>
#include <linux/icmpv6.h>

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline int drop(enum drop_reason reason)
{
	count_drop(reason, DIR_INGRESS);
	return XDP_DROP;
}

static __always_inline int allowed(__u8 proto, __be16 port)
{
	struct underlay_allow_key k = { .protocol = proto, .port = port };

	if (bpf_map_lookup_elem(&underlay_allow, &k))
		return 1;
	k.port = 0;
	return bpf_map_lookup_elem(&underlay_allow, &k) != NULL;
}

static __always_inline int filter_ipv6(struct cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;
	struct icmp6hdr *icmp6;

	if ((void *)(ip6 + 1) > c->end)
		return drop(DROP_MALFORMED);
	if (ip6->nexthdr == 0 /* hop-by-hop, carries MLD's router alert */) {
		__u8 *hbh = (void *)(ip6 + 1);

		if ((void *)(hbh + 8) > c->end)
			return drop(DROP_MALFORMED);
		if (hbh[0] != IPPROTO_ICMPV6_)
			return drop(DROP_UNDERLAY_FILTER);
		icmp6 = (void *)(hbh + 8 + hbh[1] * 8);
	} else if (ip6->nexthdr == IPPROTO_ICMPV6_) {
		icmp6 = (void *)(ip6 + 1);
	} else {
		return drop(DROP_UNDERLAY_FILTER);
	}
	if ((void *)(icmp6 + 1) > c->end)
		return drop(DROP_MALFORMED);
	/* Only link-scope housekeeping: MLD (130-132, 143) and ND (133-137),
	 * which the kernel itself checks to come with hop limit 255. */
	switch (icmp6->icmp6_type) {
	case 130: case 131: case 132: case 143:
	case 133: case 134: case 135: case 136: case 137:
		return XDP_PASS;
	}
	return drop(DROP_UNDERLAY_FILTER);
}

SEC("xdp")
int underlay_filter(struct xdp_md *ctx)
{
	struct cursor c = { .pos = ctx_data(ctx), .end = ctx_data_end(ctx) };
	struct vpcd_config *cfg = get_config();
	struct ethhdr *eth;
	struct iphdr *ip;
	int from_peer;

	if (!cfg)
		return drop(DROP_UNDERLAY_FILTER);
	eth = parse_eth(&c);
	if (!eth)
		return drop(DROP_MALFORMED);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return filter_ipv6(&c);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop(DROP_UNDERLAY_FILTER);

	ip = parse_ipv4(&c);
	if (!ip)
		return drop(DROP_MALFORMED);
	from_peer = bpf_map_lookup_elem(&peers, &ip->saddr) != NULL;

	/* Later fragments carry no ports; take them from peers only (large
	 * encrypted datagrams). The kernel reassembles and the socket checks. */
	if (ip->frag_off & bpf_htons(IP_OFFMASK)) {
		if (from_peer && ip->protocol == IPPROTO_UDP_)
			return XDP_PASS;
		return drop(DROP_UNDERLAY_FILTER);
	}

	switch (ip->protocol) {
	case IPPROTO_UDP_: {
		struct udphdr *udp = parse_udp(&c);

		if (!udp)
			return drop(DROP_MALFORMED);
		if (from_peer && udp->dest == cfg->wg_port)
			return XDP_PASS;
		if (allowed(IPPROTO_UDP_, udp->dest))
			return XDP_PASS;
		break;
	}
	case IPPROTO_TCP_: {
		struct tcphdr *tcp = parse_tcp(&c);

		if (!tcp)
			return drop(DROP_MALFORMED);
		if (allowed(IPPROTO_TCP_, tcp->dest))
			return XDP_PASS;
		break;
	}
	case IPPROTO_ICMP_: {
		struct icmphdr *icmp = c.pos;

		if ((void *)(icmp + 1) > c.end)
			return drop(DROP_MALFORMED);
		/* Errors from peers about our WireGuard datagrams. */
		if (from_peer && (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED))
			return XDP_PASS;
		if (allowed(IPPROTO_ICMP_, 0))
			return XDP_PASS;
		break;
	}
	default:
		if (allowed(ip->protocol, 0))
			return XDP_PASS;
	}
	return drop(DROP_UNDERLAY_FILTER);
}
