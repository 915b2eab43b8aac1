/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay filter's logic, for both hooks (see ctx.h), on the host's
 * underlay interface. It lets through WireGuard from known peers to our
 * port, ARP, IPv6 neighbour discovery and multicast listener housekeeping,
 * ICMP errors from peers about our WireGuard datagrams (path MTU for the
 * tunnel), what the operator's allow-list names and TCP replies from the
 * endpoints the daemon itself talks to (etcd); it drops everything
 * else at the earliest point, counted. Router advertisements and redirects are always dropped. The
 * same check runs at XDP (physical NICs, taps: the earliest point) and at
 * tcx ingress (veths, where XDP would cost the underlay its GSO
 * super-packets); vpcd picks per interface.
 *
 * Nothing on the underlay is authenticated but WireGuard itself, so only
 * packets that prove themselves change tunnel state: an ICMP error counts
 * for a peer only when it quotes a WireGuard datagram this host sent to
 * that peer (our address and port to the peer's address and port). Those
 * are no secret, so whoever can spoof the peer's address can still mark
 * it down; what spoofing cannot do is make the whole host pay: a mark
 * invalidates the fast path (bumps the generation) only when the peer was
 * not already down, and at most once per PEER_INVALIDATE_INTERVAL for the
 * host; unmarking never does. */
#ifndef VPCD_UNDERLAY_H
#define VPCD_UNDERLAY_H

#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include "ctx.h"
#include "common.h"
#include "maps.h"
#include "drop.h"
#include "parse.h"

/* The least time between two fast-path invalidations caused by marks. A
 * mark that comes sooner marks the peer all the same: the fast-path
 * entries toward it lapse by themselves within FAST_TTL (2.56 s), and a
 * packet without one takes the slow path, which drops it as no_tunnel. */
#define PEER_INVALIDATE_INTERVAL 1000000000ULL /* 1 s */

/* When a mark last bumped the generation (bpf_ktime_get_coarse_ns). */
__u64 last_invalidation;

#define ICMP_REDIRECT_ 5
#define ICMPV6_ROUTER_ADVERT 134
#define ICMPV6_REDIRECT 137

/* allowed reports whether underlay_allow lets a packet of IP protocol
 * proto to port in: a rule for the protocol and port, for the protocol
 * and any port (0), or for every protocol ("all": protocol 0, port 0; IP
 * protocol 0 itself never reaches here). */
static __always_inline int allowed(__u8 proto, __be16 port)
{
	struct underlay_allow_key k = { .protocol = proto, .port = port };

	if (bpf_map_lookup_elem(&underlay_allow, &k))
		return 1;
	k.port = 0;
	if (bpf_map_lookup_elem(&underlay_allow, &k))
		return 1;
	k.protocol = 0;
	return bpf_map_lookup_elem(&underlay_allow, &k) != NULL;
}

/* reply_from_allowed reports a TCP segment from an endpoint the daemon
 * talks to (its etcd servers) that is not a bare SYN: the replies of
 * connections the host opened, never a new connection towards it. */
static __always_inline int reply_from_allowed(__be32 saddr, const struct tcphdr *tcp)
{
	struct underlay_from_key k = { .addr = saddr, .port = tcp->source, .protocol = IPPROTO_TCP_ };

	if (tcp->syn && !tcp->ack)
		return 0;
	return bpf_map_lookup_elem(&underlay_from, &k) != NULL;
}

static __always_inline int underlay_drop(struct ctx_buff *ctx, enum drop_reason reason)
{
	return drop_packet(ctx, reason, DIR_INGRESS, HOOK_UNDERLAY);
}

/* filter_ipv6 decides an IPv6 packet at c. */
static __always_inline int filter_ipv6(struct ctx_buff *ctx, struct cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;
	struct icmp6hdr *icmp6;

	if ((void *)(ip6 + 1) > c->end)
		return underlay_drop(ctx, DROP_MALFORMED);
	if (ip6->nexthdr == 0 /* hop-by-hop, carries MLD's router alert */) {
		__u8 *hbh = (void *)(ip6 + 1);

		if ((void *)(hbh + 8) > c->end)
			return underlay_drop(ctx, DROP_MALFORMED);
		if (hbh[0] != IPPROTO_ICMPV6_)
			return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
		icmp6 = (void *)(hbh + 8 + hbh[1] * 8);
	} else if (ip6->nexthdr == IPPROTO_ICMPV6_) {
		icmp6 = (void *)(ip6 + 1);
	} else {
		return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
	}
	if ((void *)(icmp6 + 1) > c->end)
		return underlay_drop(ctx, DROP_MALFORMED);
	/* Only link-scope housekeeping: MLD (130-132, 143) and neighbour
	 * discovery (133, 135, 136), which the kernel itself checks to come
	 * with hop limit 255. Router advertisements (134) and redirects (137)
	 * would let any underlay neighbour reroute the host: dropped. */
	switch (icmp6->icmp6_type) {
	case 130: case 131: case 132: case 143:
	case 133: case 135: case 136:
		return CTX_PASS;
	}
	return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
}

/* quotes_our_wireguard reports whether the body of an ICMP error, between
 * body and end, quotes a WireGuard datagram this host sent to the peer at
 * peer_ip: an IPv4 header from our underlay address to the peer's, UDP, not
 * a later fragment, and the UDP header from our listen port to the
 * peer's. */
static __always_inline int quotes_our_wireguard(void *body, void *end, const struct vpcd_config *cfg,
						__be32 peer_ip, const struct peer_info *peer)
{
	struct iphdr *in = body;
	struct udphdr *udp;

	if ((void *)(in + 1) > end)
		return 0;
	if (in->version != 4 || in->ihl < 5 || in->protocol != IPPROTO_UDP_)
		return 0;
	if (in->saddr != cfg->underlay_ip || in->daddr != peer_ip)
		return 0;
	if (in->frag_off & bpf_htons(IP_OFFMASK))
		return 0;
	udp = body + in->ihl * 4;
	if ((void *)(udp + 1) > end)
		return 0;
	return peer->port && udp->source == cfg->wg_port && udp->dest == peer->port;
}

/* mark_down records that the peer's host answered our WireGuard with "port
 * unreachable": the ENI program drops traffic to it (no_tunnel) until
 * WireGuard from it arrives again or PEER_DOWN_HOLD passes. */
static __always_inline void mark_down(struct peer_info *peer, struct vpcd_config *cfg)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	int was_down = peer->unreachable && now - peer->unreachable < PEER_DOWN_HOLD;

	peer->unreachable = now;
	if (was_down || now - last_invalidation < PEER_INVALIDATE_INTERVAL)
		return;
	/* Fast-path entries toward the peer would keep sending into nothing
	 * until they lapse: retire them now. Two CPUs racing here may both
	 * bump; the bound holds per CPU. */
	last_invalidation = now;
	__sync_fetch_and_add(&cfg->gen, 1);
}

/* underlay_from_wire decides a frame that arrived on the underlay: it
 * passes it to the host or drops it, counted. */
static __always_inline int underlay_from_wire(struct ctx_buff *ctx)
{
	struct cursor c = { .pos = ctx_data(ctx), .end = ctx_data_end(ctx) };
	struct vpcd_config *cfg = get_config();
	struct ethhdr *eth;
	struct iphdr *ip;
	struct peer_info *peer;
	int from_peer;

	if (!cfg)
		return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
	eth = parse_eth(&c);
	if (!eth)
		return underlay_drop(ctx, DROP_MALFORMED);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return CTX_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return filter_ipv6(ctx, &c);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return underlay_drop(ctx, DROP_UNDERLAY_FILTER);

	ip = parse_ipv4(&c);
	if (!ip)
		return underlay_drop(ctx, DROP_MALFORMED);
	peer = bpf_map_lookup_elem(&peers, &ip->saddr);
	from_peer = peer != NULL;

	/* Later fragments carry no ports; take them from peers only (large
	 * encrypted datagrams). The kernel reassembles and the socket checks. */
	if (ip->frag_off & bpf_htons(IP_OFFMASK)) {
		if (from_peer && ip->protocol == IPPROTO_UDP_)
			return CTX_PASS;
		return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
	}

	switch (ip->protocol) {
	case IPPROTO_UDP_: {
		struct udphdr *udp = parse_udp(&c);

		if (!udp)
			return underlay_drop(ctx, DROP_MALFORMED);
		if (from_peer && udp->dest == cfg->wg_port) {
			/* From its port: its daemon is back. No fast-path entry
			 * toward a down peer exists (the ENI program drops before
			 * it makes one), so there is nothing to invalidate. */
			if (peer->unreachable && udp->source == peer->port)
				peer->unreachable = 0;
			return CTX_PASS;
		}
		if (allowed(IPPROTO_UDP_, udp->dest))
			return CTX_PASS;
		break;
	}
	case IPPROTO_TCP_: {
		struct tcphdr *tcp = parse_tcp(&c);

		if (!tcp)
			return underlay_drop(ctx, DROP_MALFORMED);
		if (allowed(IPPROTO_TCP_, tcp->dest) || reply_from_allowed(ip->saddr, tcp))
			return CTX_PASS;
		break;
	}
	case IPPROTO_ICMP_: {
		struct icmphdr *icmp = c.pos;

		if ((void *)(icmp + 1) > c.end)
			return underlay_drop(ctx, DROP_MALFORMED);
		/* Redirects would let any underlay neighbour reroute the host,
		 * whatever the allow-list says. */
		if (icmp->type == ICMP_REDIRECT_)
			return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
		/* Errors from peers about our WireGuard datagrams. "Port
		 * unreachable" means the peer's daemon is down: mark it, so that
		 * the ENI program drops (and counts) instead of sending into
		 * nothing, until WireGuard from it arrives again. An error that
		 * quotes anything else is no peer's business: the allow-list
		 * decides, as for any ICMP. */
		if (from_peer && ip->daddr == cfg->underlay_ip &&
		    (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED) &&
		    quotes_our_wireguard(icmp + 1, c.end, cfg, ip->saddr, peer)) {
			if (icmp->type == ICMP_DEST_UNREACH && icmp->code == 3)
				mark_down(peer, cfg);
			return CTX_PASS;
		}
		if (allowed(IPPROTO_ICMP_, 0))
			return CTX_PASS;
		break;
	}
	default:
		if (allowed(ip->protocol, 0))
			return CTX_PASS;
	}
	return underlay_drop(ctx, DROP_UNDERLAY_FILTER);
}

#endif
