/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ENI program's logic, for both hooks (see ctx.h): it runs on the host
 * side of every ENI's interface and sees each frame a workload sends. It
 * checks the source, answers ARP as the VPC router, looks the destination
 * up by (VNI, IP) and either delivers to a local ENI or wraps the frame in
 * VXLAN and hands it to the WireGuard tunnel. Nothing it does not
 * understand is passed to the host. */
#ifndef VPCD_ENI_H
#define VPCD_ENI_H

#include "ctx.h"
#include "common.h"
#include "maps.h"
#include "drop.h"
#include "parse.h"
#include "arp.h"
#include "encap.h"
#include "mtu.h"
#include "conntrack.h"
#include "flow.h"
#include "monitor.h"
#include "mirror.h"
#include "frag.h"

/* policy_dir is the direction a policy drop happened in: the target's
 * ingress rules or the source's egress rules. */
static __always_inline enum direction policy_dir(enum drop_reason reason)
{
	return reason == DROP_SG_INGRESS || reason == DROP_NACL_INGRESS ? DIR_INGRESS : DIR_EGRESS;
}

static __always_inline int handle_arp(struct ctx_buff *ctx, struct cursor *c, struct ethhdr *eth,
				      const struct eni_info *eni, const struct vpcd_config *cfg)
{
	struct arp_eth_ipv4 *arp = parse_arp(c);

	if (!arp)
		return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	if (eni->source_dest_check && !mac_equal(arp->sha, eni->mac))
		return drop_packet(ctx, DROP_SOURCE_CHECK, DIR_EGRESS, HOOK_ENI);
	if (arp->op != bpf_htons(ARP_OP_REQUEST))
		return CTX_DROP; /* replies and announcements: nobody to tell */
	if (!arp_answerable(eni, arp->tpa, arp->spa))
		return drop_packet(ctx, DROP_ARP, DIR_EGRESS, HOOK_ENI);
	arp_reply_in_place(eth, arp, cfg->gw_mac);
	return ctx_redirect_back(ctx);
}

/* drop_reason_for_miss classifies a destination that no ENI of the VPC has. */
static __always_inline enum drop_reason drop_reason_for_miss(const struct eni_info *eni, __be32 daddr)
{
	struct lpm_v4_key k = { .prefixlen = 32, .addr = daddr };

	if (bpf_map_lookup_elem(&substrate, &k))
		return DROP_SUBSTRATE;
	if (daddr == eni->gateway)
		return DROP_SUBSTRATE;
	return DROP_NO_ROUTE;
}

/* flow_hash spreads flows over VXLAN source ports: the same for both
 * hooks, from the addresses, protocol and (for TCP/UDP) ports. */
static __always_inline __u32 flow_hash(__be32 saddr, __be32 daddr, __u8 proto, __u32 ports)
{
	__u32 h = saddr * 0x9e3779b1u;

	h ^= daddr + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= ports + proto + 0x165667b1u + (h << 6) + (h >> 2);
	return h ^ (h >> 16);
}

/* to_tunnel wraps the frame in VXLAN and hands it to the tunnel device.
 * syn_doff is the TCP data offset of a SYN (0 for anything else), whose MSS
 * is clamped to what fits the tunnel. */
static __always_inline int to_tunnel(struct ctx_buff *ctx, const struct eni_info *eni,
				     const struct route *rt, const struct vpcd_config *cfg,
				     __u32 l4_off, __u32 syn_doff, __u32 hash, int mirror)
{
	struct vxlan_encap h;
	__u32 len;

	if (!cfg->tun_ifindex)
		return drop_packet(ctx, DROP_NO_TUNNEL, DIR_EGRESS, HOOK_ENI);

	if (syn_doff && cfg->inner_mtu > 40) {
		if (clamp_mss(ctx, l4_off, syn_doff, cfg->inner_mtu - 40) < 0)
			return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	}

	len = ctx_len(ctx);
	if (!ctx_is_gso(ctx) && len - ETH_HLEN > cfg->inner_mtu) {
		void *data = ctx_data(ctx);
		void *end = ctx_data_end(ctx);
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > end)
			return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
		if (ip->frag_off & bpf_htons(IP_DF)) {
			count_drop(DROP_FRAG_NEEDED, DIR_EGRESS);
			if (reply_frag_needed(ctx, eni, cfg->gw_mac, cfg->inner_mtu) < 0)
				return CTX_DROP;
			return ctx_redirect_back(ctx);
		}
		/* Without DF the encrypted packet is fragmented on the underlay. */
	}

	vxlan_fill(&h, cfg->underlay_ip, rt->remote_ip, eni->vni, len, hash, rt->mac, eni->mac);
	vxlan_mark_batch(&h, mirror);
	if (vxlan_push(ctx, &h) < 0)
		return drop_packet(ctx, DROP_ENCAP_FAILED, DIR_EGRESS, HOOK_ENI);
	return ctx_redirect(ctx, cfg->tun_ifindex);
}

/* count_flow adds the packet in ctx to its flow at an ENI. */
static __always_inline void count_flow(struct ctx_buff *ctx, __u32 eni_id, const struct pkt_info *pi, __u8 dir,
				       __u8 action, __u8 encrypted)
{
	__u32 segs, bytes;

	wire_size(ctx_len(ctx) - ETH_HLEN, ctx_gso_segs(ctx), ctx_gso_size(ctx), pi->hdr_len, &segs, &bytes);
	flow_count(eni_id, pi, dir, action, segs, bytes, encrypted);
}

/* fast_eligible: packets that may skip the slow path when their flow has
 * a fast-path entry. */
static __always_inline int fast_eligible(const struct pkt_info *pi, const struct iphdr *ip)
{
	if (ip_is_fragment(ip))
		return 0;
	return pi->proto != IPPROTO_TCP_ || !(pi->tcp_flags & (TCPF_SYN | TCPF_FIN | TCPF_RST));
}

/* fast_key_for is the fast-path key of a packet leaving the ENI on ctx's
 * interface. */
static __always_inline void fast_key_for(struct fast_key *fk, struct ctx_buff *ctx, const struct pkt_info *pi)
{
	__builtin_memset(fk, 0, sizeof(*fk));
	fk->ifindex = ctx_ifindex(ctx);
	fk->saddr = pi->saddr;
	fk->daddr = pi->daddr;
	fk->sport = pi->sport;
	fk->dport = pi->dport;
	fk->proto = pi->proto;
	fk->rule_port = pi->rule_port;
}

/* fast_local_mirrored rewrites the frame for a local target ENI whose ingress
 * is mirrored, mirrors it as the target sees it, and delivers it. */
static __always_inline int fast_local_mirrored(struct ctx_buff *ctx, __u32 out_ifindex, __u8 out_tap, const __u8 *dst_mac,
					       const __u8 *gw_mac, const struct pkt_info *pi)
{
	void *data = ctx_data(ctx);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > ctx_data_end(ctx))
		return CTX_DROP;
	mac_copy(eth->h_dest, dst_mac);
	mac_copy(eth->h_source, gw_mac);
	mirror_at(ctx, out_ifindex, DIR_INGRESS, pi, 0);
	return ctx_redirect_local(ctx, out_ifindex, out_tap);
}

/* fast_forward sends a packet of an established flow as the slow path did
 * before: one lookup, no policy, no route. Returns -1 to fall back to the
 * slow path. */
static __always_inline int fast_forward(struct ctx_buff *ctx, struct ethhdr *eth, const struct pkt_info *pi,
					const struct vpcd_config *cfg)
{
	struct fast_key fk;
	struct fast_entry *fe;
	struct vxlan_encap h;
	__u32 len, bytes, segs, wbytes;
	int mirror = 0;

	fast_key_for(&fk, ctx, pi);
	fe = bpf_map_lookup_elem(&fastpath, &fk);

	if (!fe || fe->closed || fe->gen != cfg->gen || bpf_jiffies64() - fe->confirmed >= FAST_TTL)
		return -1;
	if (fe->source_dest_check && !mac_equal(eth->h_source, fe->src_mac))
		return -1;
	len = ctx_len(ctx);
	bytes = len - ETH_HLEN;
	wire_size(bytes, ctx_gso_segs(ctx), ctx_gso_size(ctx), pi->hdr_len, &segs, &wbytes);
	if (fe->src_flow_log | fe->dst_flow_log) {
		__sync_fetch_and_add(&fe->packets, segs);
		__sync_fetch_and_add(&fe->bytes, wbytes);
	}
	if (fe->out_ifindex) {
		count_eni(fe->src_eni_id, DIR_EGRESS, segs, wbytes);
		count_eni(fe->dst_eni_id, DIR_INGRESS, segs, wbytes);
		if (fe->mirror & MIRROR_OUT)
			mirror_at(ctx, fk.ifindex, DIR_EGRESS, pi, 0);
		if (fe->mirror & MIRROR_IN)
			return fast_local_mirrored(ctx, fe->out_ifindex, fe->out_tap, fe->dst_mac, cfg->gw_mac, pi);
		/* A copy (a clone) may have moved the frame: find it afresh. */
		eth = ctx_data(ctx);
		if ((void *)(eth + 1) > ctx_data_end(ctx))
			return CTX_DROP;
		mac_copy(eth->h_dest, fe->dst_mac);
		mac_copy(eth->h_source, cfg->gw_mac);
		return ctx_redirect_local(ctx, fe->out_ifindex, fe->out_tap);
	}
	if (!cfg->tun_ifindex || (!ctx_is_gso(ctx) && bytes > cfg->inner_mtu))
		return -1; /* no tunnel, or too big: the slow path says why */
	count_eni(fe->src_eni_id, DIR_EGRESS, segs, wbytes);
	if (fe->mirror & MIRROR_OUT)
		mirror = mirror_at(ctx, fk.ifindex, DIR_EGRESS, pi, 1);
	vxlan_fill(&h, cfg->underlay_ip, fe->remote_ip, fe->vni, len,
		   flow_hash(pi->saddr, pi->daddr, pi->proto, (__u32)pi->sport << 16 | pi->dport),
		   fe->dst_mac, fe->src_mac);
	vxlan_mark_batch(&h, mirror);
	if (vxlan_push(ctx, &h) < 0)
		return drop_packet(ctx, DROP_ENCAP_FAILED, DIR_EGRESS, HOOK_ENI);
	return ctx_redirect(ctx, cfg->tun_ifindex);
}

/* fast_remember records the slow path's decision for a flow's next
 * packets. */
static __always_inline void fast_remember(struct ctx_buff *ctx, const struct pkt_info *pi,
					  const struct eni_info *eni, const struct route *rt,
					  const struct vpcd_config *cfg, const struct eni_info *dst)
{
	struct fast_key fk;
	struct fast_entry *old;
	struct fast_entry fe = {
		.confirmed = bpf_jiffies64(),
		.gen = cfg->gen,
		.out_ifindex = rt->ifindex,
		.remote_ip = rt->remote_ip,
		.vni = eni->vni,
		.src_eni_id = eni->eni_id,
		.source_dest_check = eni->source_dest_check,
		.src_flow_log = eni->flow_log,
		.mirror = eni->mirror & MIRROR_OUT,
	};

	if (pi->proto == IPPROTO_TCP_ && (pi->tcp_flags & (TCPF_FIN | TCPF_RST)))
		return;
	if (dst) {
		fe.dst_eni_id = dst->eni_id;
		fe.dst_flow_log = dst->flow_log;
		fe.out_tap = dst->tap;
		fe.mirror |= dst->mirror & MIRROR_IN;
	}
	fast_key_for(&fk, ctx, pi);
	mac_copy(fe.dst_mac, rt->mac);
	mac_copy(fe.src_mac, eni->mac);
	/* An entry that exists keeps its flow counters, which the daemon
	 * reads as they grow: refresh the decision around them. */
	old = bpf_map_lookup_elem(&fastpath, &fk);
	if (old) {
		__builtin_memcpy(old, &fe, __builtin_offsetof(struct fast_entry, packets));
		old->closed = 0;
		return;
	}
	fe.first = bpf_ktime_get_coarse_ns();
	bpf_map_update_elem(&fastpath, &fk, &fe, BPF_NOEXIST);
}

/* eni_from_workload handles a frame the workload sent, at the host side of
 * its ENI's interface. */
static __always_inline int eni_from_workload(struct ctx_buff *ctx)
{
	struct cursor c = { .pos = ctx_data(ctx), .end = ctx_data_end(ctx) };
	__u32 ifindex = ctx_ifindex(ctx);
	struct vpcd_config *cfg;
	struct eni_info *eni;
	struct route_key rk;
	struct route *rt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 l4_off, syn_doff = 0, ports = 0, bytes, segs;
	int mirror = 0;
	struct pkt_info pi;
	enum drop_reason why;
	__u64 now;
	int later;

	cfg = get_config();
	if (!cfg)
		return drop_packet(ctx, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
	eth = parse_eth(&c);
	if (!eth)
		return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	/* A VLAN tag (in the frame it is an unknown ethertype, below). */
	if (ctx_vlan_tagged(ctx))
		return drop_packet(ctx, DROP_UNSUPPORTED, DIR_EGRESS, HOOK_ENI);

	/* The fast path: an established flow's packet, one lookup. */
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct cursor fc = c;
		struct iphdr *fip = parse_ipv4(&fc);

		if (fip && bpf_ntohs(fip->tot_len) <= ctx_len(ctx) - ETH_HLEN &&
		    pkt_info_fill(&pi, fip, &fc) == 0 && fast_eligible(&pi, fip)) {
			int ret = fast_forward(ctx, eth, &pi, cfg);

			if (ret >= 0)
				return ret;
			/* Helpers may have moved the packet: parse afresh. */
			c.pos = ctx_data(ctx);
			c.end = ctx_data_end(ctx);
			eth = parse_eth(&c);
			if (!eth)
				return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
		}
	}

	eni = bpf_map_lookup_elem(&enis, &ifindex);
	if (!eni)
		return drop_packet(ctx, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
	if (eni->source_dest_check && !mac_equal(eth->h_source, eni->mac))
		return drop_packet(ctx, DROP_SOURCE_CHECK, DIR_EGRESS, HOOK_ENI);

	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(ctx, &c, eth, eni, cfg);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop_packet(ctx, DROP_UNSUPPORTED, DIR_EGRESS, HOOK_ENI);

	ip = parse_ipv4(&c);
	if (!ip)
		return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	/* A packet shorter than its IPv4 header says is truncated: never
	 * forwarded (padding after it is allowed). */
	if (bpf_ntohs(ip->tot_len) > ctx_len(ctx) - ETH_HLEN)
		return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	if (eni->source_dest_check && ip->saddr != eni->ip)
		return drop_packet(ctx, DROP_SOURCE_CHECK, DIR_EGRESS, HOOK_ENI);
	l4_off = ETH_HLEN + ip->ihl * 4;
	if (pkt_info_fill(&pi, ip, &c) < 0) /* a first fragment too short is a fragment attack */
		return drop_packet(ctx, ip_first_fragment(ip) ? DROP_FRAGMENT : DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	why = frag_check(eni->eni_id, eni->vni, ip, &pi);
	if (why)
		return drop_packet(ctx, why, DIR_EGRESS, HOOK_ENI);
	later = ip_later_fragment(ip);
	/* The VXLAN source port's ports word, as fast_forward hashes it: one
	 * outer port for all of a flow's packets and a datagram's fragments. */
	if (pi.proto == IPPROTO_TCP_ || pi.proto == IPPROTO_UDP_)
		ports = (__u32)pi.sport << 16 | pi.dport;
	if (!later) {
		if (ip->protocol == IPPROTO_TCP_) {
			struct tcphdr *tcp = parse_tcp(&c);

			if (!tcp)
				return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
			if (tcp->syn && !ip_is_fragment(ip))
				syn_doff = tcp->doff;
		} else if (ip->protocol == IPPROTO_UDP_) {
			if (!parse_udp(&c))
				return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
		}
	}

	rk.vni = eni->vni;
	rk.ip = ip->daddr;
	rt = bpf_map_lookup_elem(&routes, &rk);
	if (!rt)
		return drop_packet(ctx, drop_reason_for_miss(eni, ip->daddr), DIR_EGRESS, HOOK_ENI);

	now = bpf_ktime_get_coarse_ns();
	/* A later fragment follows its first fragment's verdict. */
	why = later ? DROP_UNSPEC : policy_check(eni, &pi, DIR_EGRESS, now);
	if (why) {
		frag_denied(eni->vni, ip);
		if (policy_reject(why) && eni->flow_log)
			count_flow(ctx, eni->eni_id, &pi, DIR_EGRESS, FLOW_REJECT, 0);
		return drop_packet(ctx, why, policy_dir(why), HOOK_ENI);
	}

	wire_size(ctx_len(ctx) - ETH_HLEN, ctx_gso_segs(ctx), ctx_gso_size(ctx), pi.hdr_len, &segs, &bytes);

	if (rt->ifindex) {
		/* Same host: the target's ingress policy, then rewrite as the VPC
		 * router would and hand the frame to the target ENI. */
		__u32 dst_if = rt->ifindex;
		struct eni_info *dst = bpf_map_lookup_elem(&enis, &dst_if);

		if (!dst)
			return drop_packet(ctx, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
		/* The packet left the source: its egress sessions see it, as
		 * they would if the target lived on another host, whatever the
		 * target's policy says next. */
		if (eni->mirror & MIRROR_OUT) {
			mirror_at(ctx, ifindex, DIR_EGRESS, &pi, 0);
			/* A copy (a clone) may have moved the frame. */
			c.pos = ctx_data(ctx);
			c.end = ctx_data_end(ctx);
			eth = parse_eth(&c);
			ip = eth ? parse_ipv4(&c) : NULL;
			if (!ip)
				return drop_packet(ctx, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
		}
		why = later ? DROP_UNSPEC : policy_check(dst, &pi, DIR_INGRESS, now);
		if (eni->flow_log)
			count_flow(ctx, eni->eni_id, &pi, DIR_EGRESS, FLOW_ACCEPT, 0);
		if (why) {
			frag_denied(eni->vni, ip);
			if (policy_reject(why) && dst->flow_log)
				count_flow(ctx, dst->eni_id, &pi, DIR_INGRESS, FLOW_REJECT, 0);
			return drop_packet(ctx, why, policy_dir(why), HOOK_ENI);
		}
		if (dst->flow_log)
			count_flow(ctx, dst->eni_id, &pi, DIR_INGRESS, FLOW_ACCEPT, 0);
		frag_passed(eni->vni, ip, &pi);
		if (!ip_is_fragment(ip))
			fast_remember(ctx, &pi, eni, rt, cfg, dst);
		count_eni(eni->eni_id, DIR_EGRESS, segs, bytes);
		count_eni(rt->eni_id, DIR_INGRESS, segs, bytes);
		if (dst->mirror & MIRROR_IN)
			return fast_local_mirrored(ctx, dst_if, dst->tap, rt->mac, cfg->gw_mac, &pi);
		mac_copy(eth->h_dest, rt->mac);
		mac_copy(eth->h_source, cfg->gw_mac);
		return ctx_redirect_local(ctx, rt->ifindex, dst->tap);
	}
	/* The peer's daemon is down: no session to send in; dropped here,
	 * counted, and no fast-path entry that would skip this check. */
	if (peer_down(rt->remote_ip))
		return drop_packet(ctx, DROP_NO_TUNNEL, DIR_EGRESS, HOOK_ENI);
	frag_passed(eni->vni, ip, &pi);
	if (!ip_is_fragment(ip))
		fast_remember(ctx, &pi, eni, rt, cfg, NULL);
	count_eni(eni->eni_id, DIR_EGRESS, segs, bytes);
	if (eni->flow_log)
		count_flow(ctx, eni->eni_id, &pi, DIR_EGRESS, FLOW_ACCEPT, 1);
	/* The hash before a copy (a clone) may move the frame. */
	ports = flow_hash(ip->saddr, ip->daddr, ip->protocol, ports);
	if (eni->mirror & MIRROR_OUT)
		mirror = mirror_at(ctx, ifindex, DIR_EGRESS, &pi, 1);
	return to_tunnel(ctx, eni, rt, cfg, l4_off, syn_doff, ports, mirror);
}

#if defined(VPCD_HOOK_TC)
/* mirror_udp_csum writes the full UDP checksum of a copy mirror_wrap has
 * just built (outer IPv4 without options at ETH_HLEN) and marks the copy
 * checksum-verified. GRO batches only UDP with a checksum, and the stack
 * need not sum the copy again. */
static __always_inline int mirror_udp_csum(struct __sk_buff *skb, const struct vxlan_encap *h, __u32 ulen)
{
	const __u32 off = ETH_HLEN + sizeof(struct iphdr);
	struct {
		__be32 saddr, daddr;
		__u8 zero, proto;
		__be16 len;
	} ph = { .saddr = h->ip.saddr, .daddr = h->ip.daddr, .proto = IPPROTO_UDP_, .len = bpf_htons(ulen) };
	__u8 buf[64];
	__s64 sum;
	__u16 check;

	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	for (__u32 i = 0; i < (MIRROR_SNAP_MAX + 16 + 63) / 64; i++) {
		__u32 pos = i * 64, n;

		if (pos >= ulen || sum < 0)
			break;
		n = ulen - pos;
		if (n > 64)
			n = 64;
		/* n is 1..64; the mask shows the verifier. */
		n = ((n - 1) & 63) + 1;
		__builtin_memset(buf, 0, sizeof(buf));
		if (bpf_skb_load_bytes(skb, off + pos, buf, n) < 0)
			return -1;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)buf, sizeof(buf), (__u32)sum);
	}
	if (sum < 0)
		return -1;
	check = csum_fold((__u32)sum);
	if (!check)
		check = 0xffff;
	if (bpf_skb_store_bytes(skb, off + offsetof(struct udphdr, check), &check, sizeof(check), 0) < 0)
		return -1;
	bpf_csum_level(skb, BPF_CSUM_LEVEL_INC);
	return 0;
}

/* mirror_wrap turns a frame the ENI program cloned into the mirror device
 * into the frame the daemon would have written for it: cut to the
 * session's packet_length, then Ethernet (from the session's inject MAC),
 * IPv4 from the source ENI to the target, UDP to 4789 and VXLAN with the
 * session's VNI in front. */
static __always_inline int mirror_wrap(struct __sk_buff *skb, __u32 idx)
{
	struct mirror_session *ms = bpf_map_lookup_elem(&mirror_sessions, &idx);
	struct vxlan_encap h;
	struct ethhdr inner, outer;
	struct eni_info *src;
	__u32 src_if, cap, len = skb->len;

	if (!ms || !ms->target || !ms->src_ifindex)
		return -1;
	src_if = ms->src_ifindex;
	src = bpf_map_lookup_elem(&enis, &src_if);
	if (!src)
		return -1;
	cap = ms->snaplen;
	if (cap > len)
		cap = len;
	if (cap < ETH_HLEN + sizeof(struct iphdr))
		cap = ETH_HLEN + sizeof(struct iphdr);
	/* Also when nothing is cut: a super-packet's copy is one packet. */
	if (bpf_skb_change_tail(skb, cap, 0) < 0)
		return -1;
	if (bpf_skb_load_bytes(skb, 0, &inner, ETH_HLEN) < 0)
		return -1;
	if (bpf_skb_adjust_room(skb, VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	vxlan_fill(&h, src->ip, ms->target, ms->vni, cap, idx * 2654435761u, inner.h_dest, inner.h_source);
	h.inner.h_proto = inner.h_proto;
	/* An atomic datagram (DF, fixed ID): GRO may batch a session's
	 * copies into one UDP super-packet. */
	h.ip.id = 0;
	h.ip.frag_off = bpf_htons(IP_DF);
	h.ip.check = 0;
	h.ip.check = ipv4_csum(&h.ip);
	__builtin_memset(&outer, 0, sizeof(outer));
	outer.h_source[0] = MIRROR_INJECT_MAC0;
	outer.h_source[1] = MIRROR_INJECT_MAC1;
	outer.h_source[2] = (__u8)(idx >> 24);
	outer.h_source[3] = (__u8)(idx >> 16);
	outer.h_source[4] = (__u8)(idx >> 8);
	outer.h_source[5] = (__u8)idx;
	outer.h_proto = bpf_htons(ETH_P_IP);
	if (bpf_skb_store_bytes(skb, 0, &outer, ETH_HLEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &h, VXLAN_ENCAP_LEN, 0) < 0)
		return -1;
	return mirror_udp_csum(skb, &h, sizeof(struct udphdr) + sizeof(struct vxlanhdr) + cap);
}

/* mirror_end_gso makes the clone of a GSO super-packet a plain packet:
 * growing the room after the Ethernet header lowers the segment size by
 * as much, to 0 here, and taking the room out again leaves it so.
 * (bpf_skb_change_tail ends GSO too, but copies the whole 64 KiB frame
 * into one buffer first.) Early, while the clone's own head is a few
 * headers: a plain packet that long cannot grow at tc ingress. */
static __always_inline int mirror_end_gso(struct __sk_buff *skb)
{
	__u32 left = ctx_gso_size(skb);

	for (__u32 i = 0; i < 3 && left; i++) {
		__u32 d = left > 0xfff ? 0xfff : left;

		if (bpf_skb_adjust_room(skb, d, BPF_ADJ_ROOM_MAC, 0) < 0 ||
		    bpf_skb_adjust_room(skb, -(__s32)d, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO) < 0)
			return -1;
		left -= d;
	}
	return ctx_gso_size(skb) ? -1 : 0;
}

/* mirror_batch turns a TCP super-packet the ENI program cloned into the
 * mirror device's ingress into one packet for the tunnel device that
 * holds the copies of all its wire segments, compactly (struct
 * mirror_batch_desc), wrapped in the VPC's VXLAN to the target's host rt
 * with the mirror and batch marks: the frame's headers once, then each
 * segment's first bytes. It writes the packet in place, at the front of
 * the clone, and leaves the rest of the frame behind it, in the pages it
 * shares with the original, for the tunnel device's filter to cut off
 * (tunnel/filter.go). *segs is the wire segments (known once the headers
 * are read). Negative on failure. */
static __always_inline int mirror_batch(struct __sk_buff *skb, const struct vpcd_config *cfg,
					const struct mirror_session *ms, const struct eni_info *src,
					const struct route *rt, __u32 idx, __u32 *segs)
{
	struct mirror_batch *b;
	struct vxlan_encap vpc;
	struct {
		struct iphdr ip;
		struct udphdr udp;
		struct vxlanhdr vxlan;
		struct mirror_batch_desc desc;
	} head;
	struct iphdr ip;
	struct tcphdr tcp;
	__u32 zero = 0, len = skb->len, mss = ctx_gso_size(skb), h, n, snap = ms->snaplen, pfx, total, at;

	_Static_assert(sizeof(head) == 48, "no holes");

	*segs = ctx_gso_segs(skb);
	b = bpf_map_lookup_elem(&mirror_batch_scratch, &zero);
	if (!b || len > 0xffff || !mss || mss > MIRROR_BATCH_MSS ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(ip), &tcp, sizeof(tcp)) < 0)
		return -1;
	if (ip.version != 4 || ip.ihl != 5 || ip.protocol != IPPROTO_TCP_ || ip_is_fragment(&ip) || tcp.doff < 5)
		return -1;
	h = ETH_HLEN + sizeof(ip) + tcp.doff * 4;
	if (len <= h)
		return -1;
	n = (len - h + mss - 1) / mss;
	*segs = n;
	if (n < 2 || n > MIRROR_BATCH_SEGS || snap > MIRROR_BATCH_SNAP || snap + MIRROR_BATCH_ROOM > mss ||
	    h > MIRROR_BATCH_HDRS)
		return -1;
	/* Each segment's bytes after the headers that a copy holds. */
	pfx = snap > h ? snap - h : 0;
	if (bpf_skb_load_bytes(skb, 0, b->hdrs, ((h - 1) & 255) + 1) < 0 || mirror_end_gso(skb) < 0)
		return -1;
	/* The packet's room linear and private, in one pull. The prefixes go
	 * first, each over bytes already read: prefix i ends before segment
	 * i+1 begins, as a copy and the batch's headers
	 * (MIRROR_BATCH_ROOM) are shorter than a segment. The headers go
	 * last, over segment 0. */
	at = ETH_HLEN + VXLAN_ENCAP_LEN + sizeof(head) + h;
	total = at + (n - 1) * (pfx < mss ? pfx : mss) + pfx;
	if (bpf_skb_pull_data(skb, total < len ? total : len) < 0)
		return -1;
	total = 0;
	if (pfx) {
		for (__u32 i = 0; i < MIRROR_BATCH_SEGS; i++) {
			__u32 m, k;

			if (i >= n)
				break;
			m = len - h - i * mss;
			if (m > mss)
				m = mss;
			k = m < pfx ? m : pfx;
			if (!k)
				break;
			k = ((k - 1) & (MIRROR_BATCH_SNAP - 1)) + 1; /* 1..256, as the verifier sees it */
			if (bpf_skb_load_bytes(skb, h + i * mss, b->buf, k) < 0 ||
			    bpf_skb_store_bytes(skb, at + total, b->buf, k, 0) < 0)
				return -1;
			total += k;
		}
	}
	if (bpf_skb_store_bytes(skb, at - h, b->hdrs, ((h - 1) & 255) + 1, 0) < 0)
		return -1;
	/* The copies' IPv4 packet: from the source ENI to the target. */
	total += sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr) + sizeof(struct mirror_batch_desc) + h;
	vxlan_fill(&vpc, cfg->underlay_ip, rt->remote_ip, src->vni, ETH_HLEN + total, idx * 0x9e3779b1u, rt->mac,
		   src->mac);
	vpc.vxlan.flags = bpf_htonl(VXLAN_FLAG_VNI | VXLAN_BATCH_MARK << 16 | ((8 + snap) & 0xffff));
	vpc.vxlan.vni |= bpf_htonl(VXLAN_MIRROR_MARK);
	__builtin_memset(&head, 0, sizeof(head));
	head.ip.version = 4;
	head.ip.ihl = 5;
	head.ip.tot_len = bpf_htons(total);
	head.ip.frag_off = bpf_htons(IP_DF);
	head.ip.ttl = 64;
	head.ip.protocol = IPPROTO_UDP_;
	head.ip.saddr = src->ip;
	head.ip.daddr = ms->target;
	head.ip.check = ipv4_csum(&head.ip);
	head.udp.source = vxlan_source_port(idx * 2654435761u);
	head.udp.dest = bpf_htons(VXLAN_PORT);
	head.udp.len = bpf_htons(total - sizeof(struct iphdr));
	head.vxlan.flags = bpf_htonl(VXLAN_FLAG_VNI);
	head.vxlan.vni = bpf_htonl(ms->vni << 8);
	head.desc.mss = bpf_htons(mss);
	head.desc.snap = bpf_htons(snap);
	head.desc.payload = bpf_htons(len - h);
	head.desc.hdr_len = h;
	head.desc.segs = n;
	head.desc.first = 0;
	head.desc.count = n;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &vpc, VXLAN_ENCAP_LEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + VXLAN_ENCAP_LEN, &head, sizeof(head), 0) < 0)
		return -1;
	return 0;
}

/* mirror_to_tunnel sends a copy of len bytes (Ethernet header included)
 * to the target's host: the VPC's VXLAN header, with the mirror mark,
 * then the tunnel device. */
static __always_inline int mirror_to_tunnel(struct __sk_buff *skb, const struct vpcd_config *cfg,
					    const struct eni_info *src, const struct route *rt, __u32 hash,
					    __u32 len)
{
	struct vxlan_encap h;

	if (!cfg->tun_ifindex || peer_down(rt->remote_ip))
		return drop_packet(skb, DROP_NO_TUNNEL, DIR_EGRESS, HOOK_ENI);
	vxlan_fill(&h, cfg->underlay_ip, rt->remote_ip, src->vni, len, hash, rt->mac, src->mac);
	h.vxlan.vni |= bpf_htonl(VXLAN_MIRROR_MARK);
	if (vxlan_push(skb, &h) < 0)
		return drop_packet(skb, DROP_ENCAP_FAILED, DIR_EGRESS, HOOK_ENI);
	return ctx_redirect(skb, cfg->tun_ifindex);
}

static __always_inline int mirror_inject_frame(struct __sk_buff *skb)
{
	struct cursor c = { .pos = ctx_data(skb), .end = ctx_data_end(skb) };
	struct vpcd_config *cfg;
	struct mirror_session *ms;
	struct eni_info *src, *dst;
	struct route_key rk;
	struct route *rt;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	struct cursor lc;
	struct pkt_info pi;
	enum drop_reason why;
	__u32 idx, src_if, dst_if, len;

	cfg = get_config();
	if (!cfg)
		return drop_packet(skb, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
	if ((skb->mark & MIRROR_CLONE_MASK) == MIRROR_CLONE_TAG) {
		/* A frame the ENI program cloned here: make it a copy. */
		idx = skb->mark & ~MIRROR_CLONE_MASK;
		skb->mark = 0;
		struct mirror_counter *mc = bpf_map_lookup_elem(&mirror_stats, &idx);

		if (ctx_is_gso(skb)) {
			/* Entered whole (mirror_batchable): a batch, for the
			 * target's host. */
			struct route_key brk = {};
			struct route *brt;
			__u32 segs = ctx_gso_segs(skb), bsrc;

			ms = bpf_map_lookup_elem(&mirror_sessions, &idx);
			bsrc = ms ? ms->src_ifindex : 0;
			src = bsrc ? bpf_map_lookup_elem(&enis, &bsrc) : NULL;
			if (src && ms->target) {
				brk.vni = src->vni;
				brk.ip = ms->target;
			}
			brt = brk.ip ? bpf_map_lookup_elem(&routes, &brk) : NULL;
			if (!brt || brt->ifindex || !cfg->tun_ifindex || peer_down(brt->remote_ip) ||
			    mirror_batch(skb, cfg, ms, src, brt, idx, &segs) < 0) {
				if (mc)
					mc->failed += segs;
				return CTX_DROP;
			}
			if (mc) {
				mc->sent += segs;
				mc->batches++;
			}
			/* For the tunnel device's filter: cut me to my IPv4
			 * length. */
			skb->mark = MIRROR_BATCH_TAG;
			return ctx_redirect(skb, cfg->tun_ifindex);
		}
		if (mirror_wrap(skb, idx) < 0) {
			if (mc)
				mc->failed++;
			return CTX_DROP;
		}
		/* Back out of this device to its peer, whose GRO makes one UDP
		 * super-packet of a session's copies: the route, the policy
		 * and the tunnel then run once per batch. The peer's GRO holds
		 * copies up to a millisecond (EnsureMirrorInject), so that
		 * copies of single packets (a stream's ACKs) that come one by
		 * one still leave in batches. */
		return bpf_redirect(skb->ifindex, 0);
	}
	eth = parse_eth(&c);
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP) || eth->h_source[0] != MIRROR_INJECT_MAC0 ||
	    eth->h_source[1] != MIRROR_INJECT_MAC1)
		return drop_packet(skb, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	idx = (__u32)eth->h_source[2] << 24 | (__u32)eth->h_source[3] << 16 | (__u32)eth->h_source[4] << 8 |
	      eth->h_source[5];
	ms = bpf_map_lookup_elem(&mirror_sessions, &idx);
	if (!ms || !ms->src_ifindex)
		return drop_packet(skb, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
	src_if = ms->src_ifindex;
	src = bpf_map_lookup_elem(&enis, &src_if);
	if (!src)
		return drop_packet(skb, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
	if (ms->out_ifindex && skb->ifindex == ms->out_ifindex) {
		/* Copies the kernel made, back through GRO: sent from here
		 * on (what the route, the target's groups or the tunnel drop
		 * later is counted there). */
		struct mirror_counter *mc = bpf_map_lookup_elem(&mirror_stats, &idx);

		if (mc)
			mc->sent += ctx_is_gso(skb) && ctx_gso_segs(skb) ? ctx_gso_segs(skb) : 1;
	}
	ip = parse_ipv4(&c);
	if (!ip || ip->ihl != 5 || ip_is_fragment(ip) || ip->protocol != IPPROTO_UDP_ || ip->saddr != src->ip ||
	    bpf_ntohs(ip->tot_len) > skb->len - ETH_HLEN)
		return drop_packet(skb, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
	lc = c;
	udp = parse_udp(&c);
	if (!udp || udp->dest != bpf_htons(VXLAN_PORT) || pkt_info_fill(&pi, ip, &lc) < 0)
		return drop_packet(skb, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);

	rk.vni = src->vni;
	rk.ip = ip->daddr;
	rt = bpf_map_lookup_elem(&routes, &rk);
	if (!rt)
		return drop_packet(skb, drop_reason_for_miss(src, ip->daddr), DIR_EGRESS, HOOK_ENI);
	len = skb->len;
	if (rt->ifindex) {
		dst_if = rt->ifindex;
		dst = bpf_map_lookup_elem(&enis, &dst_if);
		if (!dst)
			return drop_packet(skb, DROP_UNKNOWN_ENI, DIR_EGRESS, HOOK_ENI);
		why = policy_check(dst, &pi, DIR_INGRESS, bpf_ktime_get_coarse_ns());
		if (why)
			return drop_packet(skb, why, policy_dir(why), HOOK_ENI);
		count_eni(dst->eni_id, DIR_INGRESS, ctx_is_gso(skb) ? ctx_gso_segs(skb) : 1, len - ETH_HLEN);
		c.pos = ctx_data(skb);
		c.end = ctx_data_end(skb);
		eth = parse_eth(&c);
		if (!eth)
			return drop_packet(skb, DROP_MALFORMED, DIR_EGRESS, HOOK_ENI);
		mac_copy(eth->h_dest, rt->mac);
		mac_copy(eth->h_source, cfg->gw_mac);
		return ctx_redirect_local(skb, dst_if, dst->tap);
	}
	return mirror_to_tunnel(skb, cfg, src, rt, idx * 0x9e3779b1u ^ pi.sport, len);
}
#endif

#endif
