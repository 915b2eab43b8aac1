/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The tunnel program's logic (tc only): it runs at ingress of the WireGuard
 * tunnel device, which carries only what wireguard-go decrypted from an
 * authenticated peer. It accepts VXLAN from the peer's underlay address,
 * checks that the inner source lives on that peer in that VPC and the inner
 * destination is an ENI of this host, applies the destination's network
 * ACL and security groups, strips the VPC header and delivers the inner
 * packet to the ENI. Everything else is dropped: nothing from the tunnel
 * reaches the host. */
#ifndef VPCD_TUNNEL_H
#define VPCD_TUNNEL_H

#include "ctx.h"
#include "common.h"
#include "maps.h"
#include "drop.h"
#include "parse.h"
#include "encap.h"
#include "conntrack.h"
#include "flow.h"
#include "mirror.h"
#include "frag.h"

#if !defined(VPCD_HOOK_TC)
#error "the tunnel program runs at tc only: it resizes the packet with skb helpers"
#endif

static __always_inline int tunnel_drop(struct ctx_buff *ctx, enum drop_reason reason)
{
	return drop_packet(ctx, reason, DIR_INGRESS, HOOK_TUNNEL);
}

/* tunnel_to_workload handles a packet a peer sent through the tunnel to a
 * workload of this host. */
static __always_inline int tunnel_to_workload(struct ctx_buff *ctx)
{
	struct cursor c = { .pos = ctx_data(ctx), .end = ctx_data_end(ctx) };
	struct vpcd_config *cfg;
	struct route_key rk;
	struct route *dst, *src;
	struct iphdr *outer, *inner;
	struct udphdr *udp;
	struct vxlanhdr *vx;
	struct ethhdr *ieth, *eth;
	__u32 vni, ifindex, eni_id, len;
	__u8 mac[ETH_ALEN];
	__u8 mirror, copy;
	struct pkt_info pi;
	struct eni_info *deni;
	enum drop_reason why;
	__u32 segs, bytes;

	cfg = get_config();
	if (!cfg)
		return tunnel_drop(ctx, DROP_UNKNOWN_ENI);

	outer = parse_ipv4(&c);
	if (!outer || outer->ihl != 5 || ip_is_fragment(outer))
		return tunnel_drop(ctx, DROP_MALFORMED);
	if (outer->protocol != IPPROTO_UDP_)
		return tunnel_drop(ctx, DROP_MALFORMED);
	if (!bpf_map_lookup_elem(&peers, &outer->saddr) || outer->daddr != cfg->underlay_ip)
		return tunnel_drop(ctx, DROP_SOURCE_CHECK);
	udp = parse_udp(&c);
	if (!udp || udp->dest != bpf_htons(VXLAN_PORT))
		return tunnel_drop(ctx, DROP_MALFORMED);
	vx = parse_vxlan(&c);
	if (!vx || !(vx->flags & bpf_htonl(VXLAN_FLAG_VNI)))
		return tunnel_drop(ctx, DROP_MALFORMED);
	vni = bpf_ntohl(vx->vni) >> 8;
	/* A mirror copy is delivered, never mirrored again nor flow-logged. */
	copy = (bpf_ntohl(vx->vni) & 0xff) == VXLAN_MIRROR_MARK;
	ieth = parse_eth(&c);
	if (!ieth || ieth->h_proto != bpf_htons(ETH_P_IP))
		return tunnel_drop(ctx, DROP_MALFORMED);
	inner = parse_ipv4(&c);
	len = ctx_len(ctx);
	if (!inner || bpf_ntohs(outer->tot_len) > len || bpf_ntohs(inner->tot_len) > len - VXLAN_ENCAP_LEN)
		return tunnel_drop(ctx, DROP_MALFORMED);
	if (pkt_info_fill(&pi, inner, &c) < 0)
		return tunnel_drop(ctx, ip_first_fragment(inner) ? DROP_FRAGMENT : DROP_MALFORMED);

	/* The inner source must be an ENI of this VPC on the sending host,
	 * unless that host has an ENI of this VPC whose source/destination
	 * check is off (a NAT or router instance sends others' packets; its
	 * host's ENI program let them out). */
	rk.vni = vni;
	rk.ip = inner->saddr;
	src = bpf_map_lookup_elem(&routes, &rk);
	if (!src || src->remote_ip != outer->saddr) {
		rk.vni = vni | ROUTE_UNCHECKED_FROM;
		rk.ip = outer->saddr;
		if (!bpf_map_lookup_elem(&routes, &rk))
			return tunnel_drop(ctx, DROP_SOURCE_CHECK);
		rk.vni = vni;
	}

	rk.ip = inner->daddr;
	dst = bpf_map_lookup_elem(&routes, &rk);
	if (!dst || !dst->ifindex)
		return tunnel_drop(ctx, DROP_NO_ROUTE);
	ifindex = dst->ifindex;
	eni_id = dst->eni_id;
	mac_copy(mac, dst->mac);

	/* The destination ENI's network ACL and security groups. */
	deni = bpf_map_lookup_elem(&enis, &ifindex);
	if (!deni)
		return tunnel_drop(ctx, DROP_UNKNOWN_ENI);
	why = frag_check(eni_id, vni, inner, &pi);
	if (why)
		return tunnel_drop(ctx, why);
	/* A later fragment follows its first fragment's verdict. */
	why = ip_later_fragment(inner) ? DROP_UNSPEC : policy_check(deni, &pi, DIR_INGRESS, bpf_ktime_get_coarse_ns());
	if (why)
		frag_denied(vni, inner);
	else
		frag_passed(vni, inner, &pi);
	wire_size(len, ctx_gso_segs(ctx), ctx_gso_size(ctx), pi.hdr_len + VXLAN_ENCAP_LEN, &segs, &bytes);
	bytes -= segs * VXLAN_ENCAP_LEN; /* the inner packets' IP bytes */
	if (why) {
		if (policy_reject(why) && deni->flow_log && !copy)
			flow_count(eni_id, &pi, DIR_INGRESS, FLOW_REJECT, segs, bytes, 1);
		return tunnel_drop(ctx, why);
	}
	if (deni->flow_log && !copy)
		flow_count(eni_id, &pi, DIR_INGRESS, FLOW_ACCEPT, segs, bytes, 1);
	mirror = copy ? 0 : deni->mirror & MIRROR_IN;

	if (vxlan_pop(ctx) < 0)
		return tunnel_drop(ctx, DROP_ENCAP_FAILED);
	/* The tunnel is a layer-3 device: give the inner packet the Ethernet
	 * header the workload expects, from the VPC router. */
	c.pos = ctx_data(ctx);
	c.end = ctx_data_end(ctx);
	eth = parse_eth(&c);
	if (!eth)
		return tunnel_drop(ctx, DROP_MALFORMED);
	mac_copy(eth->h_dest, mac);
	mac_copy(eth->h_source, cfg->gw_mac);
	eth->h_proto = bpf_htons(ETH_P_IP);
	count_eni(eni_id, DIR_INGRESS, segs, bytes);
	if (mirror)
		mirror_at(ctx, ifindex, DIR_INGRESS, &pi, 0);
	return ctx_redirect_local(ctx, ifindex, deni->tap);
}

#endif
