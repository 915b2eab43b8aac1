//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ENI program: runs on the host side of every ENI's interface and sees
 * each frame a workload sends. It checks the source, answers ARP as the VPC
 * router, looks the destination up by (VNI, IP) and either delivers to a
 * local ENI or wraps the frame in VXLAN and hands it to the WireGuard
 * tunnel. Nothing it does not understand is passed to the host. */

#define VPCD_HOOK_TC
#include "lib/ctx.h"
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop.h"
#include "lib/parse.h"
#include "lib/arp.h"
#include "lib/encap.h"
#include "lib/mtu.h"

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline int drop(enum drop_reason reason)
{
	count_drop(reason, DIR_EGRESS);
	return TC_ACT_SHOT;
}

static __always_inline int handle_arp(struct __sk_buff *skb, struct cursor *c, struct ethhdr *eth,
				      const struct eni_info *eni, const struct vpcd_config *cfg)
{
	struct arp_eth_ipv4 *arp = parse_arp(c);

	if (!arp)
		return drop(DROP_MALFORMED);
	if (eni->source_dest_check && !mac_equal(arp->sha, eni->mac))
		return drop(DROP_SOURCE_CHECK);
	if (arp->op != bpf_htons(ARP_OP_REQUEST))
		return TC_ACT_SHOT; /* replies and announcements: nobody to tell */
	if (!arp_answerable(eni, arp->tpa, arp->spa))
		return drop(DROP_ARP);
	arp_reply_in_place(eth, arp, cfg->gw_mac);
	return bpf_redirect(skb->ifindex, 0);
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

/* to_tunnel wraps the frame in VXLAN and hands it to the tunnel device.
 * syn_doff is the TCP data offset of a SYN (0 for anything else), whose MSS
 * is clamped to what fits the tunnel. */
static __always_inline int to_tunnel(struct __sk_buff *skb, const struct eni_info *eni,
				     const struct route *rt, const struct vpcd_config *cfg,
				     __u32 l4_off, __u32 syn_doff)
{
	struct vxlan_encap h;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
		      BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
		      BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	__u32 inner_len;
	__u32 hash;

	if (!cfg->tun_ifindex)
		return drop(DROP_NO_TUNNEL);

	if (syn_doff && cfg->inner_mtu > 40) {
		if (clamp_mss(skb, l4_off, syn_doff, cfg->inner_mtu - 40) < 0)
			return drop(DROP_MALFORMED);
	}

	if (skb->gso_segs <= 1 && skb->len - ETH_HLEN > cfg->inner_mtu) {
		void *data = (void *)(long)skb->data;
		void *end = (void *)(long)skb->data_end;
		struct iphdr *ip2 = data + ETH_HLEN;

		if ((void *)(ip2 + 1) > end)
			return drop(DROP_MALFORMED);
		if (ip2->frag_off & bpf_htons(IP_DF)) {
			count_drop(DROP_FRAG_NEEDED, DIR_EGRESS);
			if (reply_frag_needed(skb, eni, cfg->gw_mac, cfg->inner_mtu) < 0)
				return TC_ACT_SHOT;
			return bpf_redirect(skb->ifindex, 0);
		}
		/* Without DF the encrypted packet is fragmented on the underlay. */
	}

	inner_len = skb->len;
	hash = bpf_get_hash_recalc(skb);
	if (bpf_skb_adjust_room(skb, VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags) < 0)
		return drop(DROP_ENCAP_FAILED);
	vxlan_fill(&h, cfg->underlay_ip, rt->remote_ip, eni->vni, inner_len, hash, rt->mac, eni->mac);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, VXLAN_ENCAP_LEN, 0) < 0)
		return drop(DROP_ENCAP_FAILED);
	/* The tunnel device has no link layer: redirecting strips the outer
	 * Ethernet header that still leads the frame. */
	return bpf_redirect(cfg->tun_ifindex, 0);
}

SEC("tc")
int eni_ingress(struct __sk_buff *skb)
{
	struct cursor c = { .pos = (void *)(long)skb->data, .end = (void *)(long)skb->data_end };
	__u32 ifindex = skb->ifindex;
	struct vpcd_config *cfg;
	struct eni_info *eni;
	struct route_key rk;
	struct route *rt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 l4_off, syn_doff = 0;

	eni = bpf_map_lookup_elem(&enis, &ifindex);
	if (!eni)
		return drop(DROP_UNKNOWN_ENI);
	cfg = get_config();
	if (!cfg)
		return drop(DROP_UNKNOWN_ENI);

	eth = parse_eth(&c);
	if (!eth)
		return drop(DROP_MALFORMED);
	if (eni->source_dest_check && !mac_equal(eth->h_source, eni->mac))
		return drop(DROP_SOURCE_CHECK);

	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(skb, &c, eth, eni, cfg);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop(DROP_UNSUPPORTED);

	ip = parse_ipv4(&c);
	if (!ip)
		return drop(DROP_MALFORMED);
	if (eni->source_dest_check && ip->saddr != eni->ip)
		return drop(DROP_SOURCE_CHECK);
	l4_off = ETH_HLEN + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP_ && !ip_is_fragment(ip)) {
		struct tcphdr *tcp = parse_tcp(&c);

		if (!tcp)
			return drop(DROP_MALFORMED);
		if (tcp->syn)
			syn_doff = tcp->doff;
	}

	rk.vni = eni->vni;
	rk.ip = ip->daddr;
	rt = bpf_map_lookup_elem(&routes, &rk);
	if (!rt)
		return drop(drop_reason_for_miss(eni, ip->daddr));

	count_eni(eni->eni_id, DIR_EGRESS, skb->len - ETH_HLEN);

	if (rt->ifindex) {
		/* Same host: rewrite as the VPC router would and hand the frame
		 * straight to the peer of the target's host-side interface. */
		mac_copy(eth->h_dest, rt->mac);
		mac_copy(eth->h_source, cfg->gw_mac);
		count_eni(rt->eni_id, DIR_INGRESS, skb->len - ETH_HLEN);
		return bpf_redirect_peer(rt->ifindex, 0);
	}
	return to_tunnel(skb, eni, rt, cfg, l4_off, syn_doff);
}
