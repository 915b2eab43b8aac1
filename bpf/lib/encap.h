/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The VXLAN headers vpcd puts in front of an inner Ethernet frame before the
 * frame enters the WireGuard tunnel (RFC 7348: outer IPv4, UDP to 4789, an
 * 8-byte VXLAN header with the I flag and the VPC's VNI). */
#ifndef VPCD_ENCAP_H
#define VPCD_ENCAP_H

#include "ctx.h"
#include "parse.h"

struct vxlan_encap {
	struct iphdr ip;
	struct udphdr udp;
	struct vxlanhdr vxlan;
	struct ethhdr inner;
};

_Static_assert(__builtin_offsetof(struct vxlan_encap, inner) == VXLAN_OUTER_LEN, "outer headers");

/* vxlan_source_port spreads flows over the dynamic port range as RFC 7348
 * recommends, from the flow hash of the inner packet. */
static __always_inline __be16 vxlan_source_port(__u32 hash)
{
	return bpf_htons(49152 + (hash % 16384));
}

/* vxlan_fill writes the outer headers for an inner frame of inner_len bytes
 * (Ethernet header included). */
static __always_inline void vxlan_fill(struct vxlan_encap *h, __be32 saddr, __be32 daddr,
				       __u32 vni, __u32 inner_len, __u32 hash,
				       const __u8 *inner_dst, const __u8 *inner_src)
{
	__u32 udp_len = sizeof(struct udphdr) + sizeof(struct vxlanhdr) + inner_len;

	__builtin_memset(h, 0, sizeof(*h));
	h->ip.version = 4;
	h->ip.ihl = 5;
	h->ip.tot_len = bpf_htons(sizeof(struct iphdr) + udp_len);
	h->ip.ttl = 64;
	h->ip.protocol = IPPROTO_UDP_;
	h->ip.saddr = saddr;
	h->ip.daddr = daddr;
	h->ip.check = ipv4_csum(&h->ip);
	h->udp.source = vxlan_source_port(hash);
	h->udp.dest = bpf_htons(VXLAN_PORT);
	h->udp.len = bpf_htons(udp_len);
	h->udp.check = 0; /* optional over IPv4; the tunnel authenticates */
	h->vxlan.flags = bpf_htonl(VXLAN_FLAG_VNI);
	h->vxlan.vni = bpf_htonl(vni << 8);
	mac_copy(h->inner.h_dest, inner_dst);
	mac_copy(h->inner.h_source, inner_src);
	h->inner.h_proto = bpf_htons(ETH_P_IP);
}

/* vxlan_mark_batch marks a super-packet's VXLAN header for the tunnel to
 * make the copies of its segments for session mirror - 1 (mirror_copy's
 * return; 0: none). */
static __always_inline void vxlan_mark_batch(struct vxlan_encap *h, int mirror)
{
	if (mirror > 0)
		h->vxlan.flags = bpf_htonl(VXLAN_FLAG_VNI | VXLAN_TUNNEL_BATCH_MARK << 16 | ((__u32)(mirror - 1) & 0xffff));
}

/* vxlan_push puts the outer headers and the inner Ethernet header of h in
 * front of the frame's IPv4 packet. After it the frame is laid out for a
 * redirect to the tunnel device: with tc, an Ethernet header the redirect
 * strips, then h; with XDP, h itself (the frame's own Ethernet header
 * becomes the inner one). */
static __always_inline int vxlan_push(struct ctx_buff *ctx, const struct vxlan_encap *h)
{
#if defined(VPCD_HOOK_TC)
	/* GSO-aware: the kernel learns the packet is UDP-tunnelled and can
	 * still segment (or hand whole to the tunnel device) a super-packet. */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
		      BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
		      BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);

	if (bpf_skb_adjust_room(ctx, VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags) < 0)
		return -1;
	return ctx_store_bytes(ctx, ETH_HLEN, h, VXLAN_ENCAP_LEN);
#else
	if (bpf_xdp_adjust_head(ctx, -(int)VXLAN_OUTER_LEN) < 0)
		return -1;
	return ctx_store_bytes(ctx, 0, h, VXLAN_ENCAP_LEN);
#endif
}

#if defined(VPCD_HOOK_TC)
/* vxlan_pop removes the outer headers and the inner Ethernet header in
 * front of the inner IPv4 packet of a VXLAN packet that starts with its
 * outer IPv4 header (as the layer-3 tunnel device hands it over), and
 * makes room for an Ethernet header in front of it: the caller fills it
 * in after parsing the packet afresh. */
static __always_inline int vxlan_pop(struct __sk_buff *ctx)
{
	/* FIXED_GSO: a coalesced super-packet keeps the inner MSS.
	 * NO_CSUM_RESET: the tunnel device marked the payload as verified. */
	if (bpf_skb_adjust_room(ctx, -(__s32)VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET) < 0)
		return -1;
	return bpf_skb_change_head(ctx, ETH_HLEN, 0);
}
#endif

#endif
