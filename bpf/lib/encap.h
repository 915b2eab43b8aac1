/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The VXLAN headers vpcd puts in front of an inner Ethernet frame before the
 * frame enters the WireGuard tunnel (RFC 7348: outer IPv4, UDP to 4789, an
 * 8-byte VXLAN header with the I flag and the VPC's VNI). */
#ifndef VPCD_ENCAP_H
#define VPCD_ENCAP_H

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

#endif
