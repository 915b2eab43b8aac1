//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay filter on the host's underlay interface. It lets through
 * WireGuard from known peers to our port, ARP, IPv6 neighbour discovery and
 * multicast listener housekeeping, ICMP errors from peers (path MTU for the
 * tunnel) and what the operator's allow-list names; it drops everything
 * else at the earliest point, counted. The same check runs at XDP (physical
 * NICs, taps: the earliest point) and at tcx ingress (veths, where XDP would
 * cost the underlay its GSO super-packets); vpcd picks per interface. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop.h"
#include "lib/parse.h"
#include <linux/ipv6.h>
#include <linux/icmpv6.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define PASS DROP_UNSPEC

static __always_inline int allowed(__u8 proto, __be16 port)
{
	struct underlay_allow_key k = { .protocol = proto, .port = port };

	if (bpf_map_lookup_elem(&underlay_allow, &k))
		return 1;
	k.port = 0;
	return bpf_map_lookup_elem(&underlay_allow, &k) != NULL;
}

static __always_inline enum drop_reason filter_ipv6(struct cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;
	struct icmp6hdr *icmp6;

	if ((void *)(ip6 + 1) > c->end)
		return DROP_MALFORMED;
	if (ip6->nexthdr == 0 /* hop-by-hop, carries MLD's router alert */) {
		__u8 *hbh = (void *)(ip6 + 1);

		if ((void *)(hbh + 8) > c->end)
			return DROP_MALFORMED;
		if (hbh[0] != IPPROTO_ICMPV6_)
			return DROP_UNDERLAY_FILTER;
		icmp6 = (void *)(hbh + 8 + hbh[1] * 8);
	} else if (ip6->nexthdr == IPPROTO_ICMPV6_) {
		icmp6 = (void *)(ip6 + 1);
	} else {
		return DROP_UNDERLAY_FILTER;
	}
	if ((void *)(icmp6 + 1) > c->end)
		return DROP_MALFORMED;
	/* Only link-scope housekeeping: MLD (130-132, 143) and ND (133-137),
	 * which the kernel itself checks to come with hop limit 255. */
	switch (icmp6->icmp6_type) {
	case 130: case 131: case 132: case 143:
	case 133: case 134: case 135: case 136: case 137:
		return PASS;
	}
	return DROP_UNDERLAY_FILTER;
}

/* underlay_check returns PASS or why the frame between data and end must
 * be dropped. */
static __always_inline enum drop_reason underlay_check(void *data, void *end)
{
	struct cursor c = { .pos = data, .end = end };
	struct vpcd_config *cfg = get_config();
	struct ethhdr *eth;
	struct iphdr *ip;
	struct peer_info *peer;
	int from_peer;

	if (!cfg)
		return DROP_UNDERLAY_FILTER;
	eth = parse_eth(&c);
	if (!eth)
		return DROP_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return filter_ipv6(&c);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DROP_UNDERLAY_FILTER;

	ip = parse_ipv4(&c);
	if (!ip)
		return DROP_MALFORMED;
	peer = bpf_map_lookup_elem(&peers, &ip->saddr);
	from_peer = peer != NULL;

	/* Later fragments carry no ports; take them from peers only (large
	 * encrypted datagrams). The kernel reassembles and the socket checks. */
	if (ip->frag_off & bpf_htons(IP_OFFMASK)) {
		if (from_peer && ip->protocol == IPPROTO_UDP_)
			return PASS;
		return DROP_UNDERLAY_FILTER;
	}

	switch (ip->protocol) {
	case IPPROTO_UDP_: {
		struct udphdr *udp = parse_udp(&c);

		if (!udp)
			return DROP_MALFORMED;
		if (from_peer && udp->dest == cfg->wg_port) {
			if (peer->unreachable) { /* its daemon is back */
				peer->unreachable = 0;
				__sync_fetch_and_add(&cfg->gen, 1);
			}
			return PASS;
		}
		if (allowed(IPPROTO_UDP_, udp->dest))
			return PASS;
		break;
	}
	case IPPROTO_TCP_: {
		struct tcphdr *tcp = parse_tcp(&c);

		if (!tcp)
			return DROP_MALFORMED;
		if (allowed(IPPROTO_TCP_, tcp->dest))
			return PASS;
		break;
	}
	case IPPROTO_ICMP_: {
		struct icmphdr *icmp = c.pos;

		if ((void *)(icmp + 1) > c.end)
			return DROP_MALFORMED;
		/* Errors from peers about our WireGuard datagrams. "Port
		 * unreachable" means the peer's daemon is down: mark it, so that
		 * the ENI program drops (and counts) instead of sending into
		 * nothing, until WireGuard from it arrives again. */
		if (from_peer && (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED)) {
			if (icmp->type == ICMP_DEST_UNREACH && icmp->code == 3) {
				if (!peer->unreachable)
					__sync_fetch_and_add(&cfg->gen, 1);
				peer->unreachable = bpf_ktime_get_coarse_ns();
			}
			return PASS;
		}
		if (allowed(IPPROTO_ICMP_, 0))
			return PASS;
		break;
	}
	default:
		if (allowed(ip->protocol, 0))
			return PASS;
	}
	return DROP_UNDERLAY_FILTER;
}

SEC("xdp")
int underlay_filter_xdp(struct xdp_md *ctx)
{
	enum drop_reason r = underlay_check((void *)(long)ctx->data, (void *)(long)ctx->data_end);

	if (r == PASS)
		return XDP_PASS;
	count_drop(r, DIR_INGRESS);
	return XDP_DROP;
}

SEC("tc")
int underlay_filter_tc(struct __sk_buff *skb)
{
	enum drop_reason r = underlay_check((void *)(long)skb->data, (void *)(long)skb->data_end);

	if (r == PASS)
		return TC_ACT_OK;
	count_drop(r, DIR_INGRESS);
	return TC_ACT_SHOT;
}
