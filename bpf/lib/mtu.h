/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Path MTU for the tunnel (SPEC §3), for both hooks: clamp the MSS of TCP SYNs to
 * what fits the tunnel, and answer DF packets that do not fit with ICMP
 * "fragmentation needed" carrying the tunnel's inner MTU. */
#ifndef VPCD_MTU_H
#define VPCD_MTU_H

#include "ctx.h"
#include "parse.h"

#define TCP_OPT_MSS 2

/* clamp_mss lowers the MSS option of a TCP SYN at tcp_off to mss. Every
 * common stack (Linux, Windows, BSD, macOS) sends MSS as the first option of
 * a SYN; that is the one place looked at, which keeps the program small for
 * the verifier. A SYN with MSS elsewhere still works: its too-big DF
 * segments get ICMP "fragmentation needed" below and the sender lowers
 * its path MTU. Returns 0 on success or when there is nothing to do, <0
 * when the packet could not be rewritten. */
static __always_inline int clamp_mss(struct ctx_buff *ctx, __u32 tcp_off, __u32 doff, __u16 mss)
{
	__u8 opt[4];
	__u32 off = tcp_off + sizeof(struct tcphdr);
	__u16 old_h;
	__be16 old, new;

	if (doff < 6)
		return 0;
	if (ctx_load_bytes(ctx, off, opt, sizeof(opt)) < 0)
		return -1;
	if (opt[0] != TCP_OPT_MSS || opt[1] != 4)
		return 0;
	old_h = (__u16)opt[2] << 8 | opt[3];
	if (old_h <= mss)
		return 0;
	old = bpf_htons(old_h);
	new = bpf_htons(mss);
	if (ctx_l4_csum_replace2(ctx, tcp_off + offsetof(struct tcphdr, check), old, new) < 0)
		return -1;
	return ctx_store_bytes(ctx, off + 2, &new, sizeof(new));
}

struct icmp_frag_needed {
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 quote[28]; /* the offending IPv4 header and 8 bytes of payload */
};

/* reply_frag_needed rewrites skb, a DF IPv4 packet too big for the tunnel,
 * into an ICMP "fragmentation needed" from the VPC router back to the
 * workload. The caller redirects it back out of the ENI's interface. */
static __always_inline int reply_frag_needed(struct ctx_buff *ctx, const struct eni_info *eni,
					     const __u8 *gw_mac, __u16 mtu)
{
	struct icmp_frag_needed r;
	struct ethhdr eth;
	__u64 sum;

	__builtin_memset(&r, 0, sizeof(r));
	if (ctx_load_bytes(ctx, ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return -1;
	if (ctx_set_len(ctx, ETH_HLEN + sizeof(r)) < 0)
		return -1;

	mac_copy(eth.h_dest, eni->mac);
	mac_copy(eth.h_source, gw_mac);
	eth.h_proto = bpf_htons(ETH_P_IP);

	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP_;
	r.ip.saddr = eni->gateway;
	r.ip.daddr = eni->ip;
	r.ip.check = ipv4_csum(&r.ip);

	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_FRAG_NEEDED;
	r.icmp.un.frag.mtu = bpf_htons(mtu);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.icmp, sizeof(r.icmp) + sizeof(r.quote), 0);
	r.icmp.checksum = csum_fold(sum);

	if (ctx_store_bytes(ctx, 0, &eth, ETH_HLEN) < 0)
		return -1;
	return ctx_store_bytes(ctx, ETH_HLEN, &r, sizeof(r));
}

#endif
