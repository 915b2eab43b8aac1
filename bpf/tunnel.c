//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The tunnel program: runs at ingress of the WireGuard tunnel device, which
 * carries only what wireguard-go decrypted from an authenticated peer. It
 * accepts VXLAN from the peer's underlay address, checks that the inner
 * source lives on that peer in that VPC and the inner destination is an ENI
 * of this host, strips the VPC header and delivers the inner packet to the
 * ENI. Everything else is dropped: nothing from the tunnel reaches the host. */

#define VPCD_HOOK_TC
#include "lib/ctx.h"
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/flow.h"
#include "lib/monitor.h"
#include "lib/mirror.h"
#include "lib/frag.h"

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline int drop(struct __sk_buff *skb, enum drop_reason reason)
{
	count_drop(reason, DIR_INGRESS);
	emit_drop(skb, reason, DIR_INGRESS, HOOK_TUNNEL);
	return TC_ACT_SHOT;
}

SEC("tc")
int tunnel_ingress(struct __sk_buff *skb)
{
	struct cursor c = { .pos = (void *)(long)skb->data, .end = (void *)(long)skb->data_end };
	struct vpcd_config *cfg;
	struct route_key rk;
	struct route *dst, *src;
	struct iphdr *outer, *inner;
	struct udphdr *udp;
	struct vxlanhdr *vx;
	struct ethhdr *ieth, *eth;
	__u32 vni, ifindex, eni_id;
	__u8 mac[ETH_ALEN];
	__u8 mirror, copy;
	struct pkt_info pi;
	struct eni_info *deni;
	enum drop_reason why;
	__u32 segs, bytes;

	cfg = get_config();
	if (!cfg)
		return drop(skb, DROP_UNKNOWN_ENI);

	outer = parse_ipv4(&c);
	if (!outer || outer->ihl != 5 || ip_is_fragment(outer))
		return drop(skb, DROP_MALFORMED);
	if (outer->protocol != IPPROTO_UDP_)
		return drop(skb, DROP_MALFORMED);
	if (!bpf_map_lookup_elem(&peers, &outer->saddr) || outer->daddr != cfg->underlay_ip)
		return drop(skb, DROP_SOURCE_CHECK);
	udp = parse_udp(&c);
	if (!udp || udp->dest != bpf_htons(VXLAN_PORT))
		return drop(skb, DROP_MALFORMED);
	vx = parse_vxlan(&c);
	if (!vx || !(vx->flags & bpf_htonl(VXLAN_FLAG_VNI)))
		return drop(skb, DROP_MALFORMED);
	vni = bpf_ntohl(vx->vni) >> 8;
	/* A mirror copy is delivered, never mirrored again nor flow-logged. */
	copy = (bpf_ntohl(vx->vni) & 0xff) == VXLAN_MIRROR_MARK;
	ieth = parse_eth(&c);
	if (!ieth || ieth->h_proto != bpf_htons(ETH_P_IP))
		return drop(skb, DROP_MALFORMED);
	inner = parse_ipv4(&c);
	if (!inner || bpf_ntohs(outer->tot_len) > skb->len ||
	    bpf_ntohs(inner->tot_len) > skb->len - VXLAN_ENCAP_LEN)
		return drop(skb, DROP_MALFORMED);
	if (pkt_info_fill(&pi, inner, &c) < 0)
		return drop(skb, ip_first_fragment(inner) ? DROP_FRAGMENT : DROP_MALFORMED);

	/* The inner source must be an ENI of this VPC on the sending host. */
	rk.vni = vni;
	rk.ip = inner->saddr;
	src = bpf_map_lookup_elem(&routes, &rk);
	if (!src || src->remote_ip != outer->saddr)
		return drop(skb, DROP_SOURCE_CHECK);

	rk.ip = inner->daddr;
	dst = bpf_map_lookup_elem(&routes, &rk);
	if (!dst || !dst->ifindex)
		return drop(skb, DROP_NO_ROUTE);
	ifindex = dst->ifindex;
	eni_id = dst->eni_id;
	mac_copy(mac, dst->mac);

	/* The destination ENI's network ACL and security groups. */
	deni = bpf_map_lookup_elem(&enis, &ifindex);
	if (!deni)
		return drop(skb, DROP_UNKNOWN_ENI);
	why = frag_check(vni, inner, &pi);
	if (why)
		return drop(skb, why);
	/* A later fragment follows its first fragment's verdict. */
	why = ip_later_fragment(inner) ? DROP_UNSPEC : policy_check(deni, &pi, DIR_INGRESS, bpf_ktime_get_coarse_ns());
	if (why)
		frag_denied(vni, inner);
	else
		frag_passed(vni, inner, &pi);
	wire_size(skb->len, skb->gso_segs, skb->gso_size, pi.hdr_len + VXLAN_ENCAP_LEN, &segs, &bytes);
	bytes -= segs * VXLAN_ENCAP_LEN; /* the inner packets' IP bytes */
	if (why) {
		if (policy_reject(why) && deni->flow_log && !copy)
			flow_count(eni_id, &pi, DIR_INGRESS, FLOW_REJECT, segs, bytes, 1);
		return drop(skb, why);
	}
	if (deni->flow_log && !copy)
		flow_count(eni_id, &pi, DIR_INGRESS, FLOW_ACCEPT, segs, bytes, 1);
	mirror = copy ? 0 : deni->mirror & MIRROR_IN;

	/* FIXED_GSO: a coalesced super-packet keeps the inner MSS.
	 * NO_CSUM_RESET: the tunnel device marked the payload as verified. */
	if (bpf_skb_adjust_room(skb, -(__s32)VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET) < 0)
		return drop(skb, DROP_ENCAP_FAILED);
	/* The tunnel is a layer-3 device: give the inner packet the Ethernet
	 * header the workload expects, from the VPC router. */
	if (bpf_skb_change_head(skb, ETH_HLEN, 0) < 0)
		return drop(skb, DROP_ENCAP_FAILED);

	c.pos = (void *)(long)skb->data;
	c.end = (void *)(long)skb->data_end;
	eth = parse_eth(&c);
	if (!eth)
		return drop(skb, DROP_MALFORMED);
	mac_copy(eth->h_dest, mac);
	mac_copy(eth->h_source, cfg->gw_mac);
	eth->h_proto = bpf_htons(ETH_P_IP);

	count_eni(eni_id, DIR_INGRESS, segs, bytes);
	if (mirror)
		mirror_at(skb, ifindex, DIR_INGRESS, &pi);
	return bpf_redirect_peer(ifindex, 0);
}
