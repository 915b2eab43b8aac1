/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A small context shim so that one code base builds for both tc (struct
 * __sk_buff) and XDP (struct xdp_md). An entry file defines VPCD_HOOK_TC or
 * VPCD_HOOK_XDP, includes this, and the logic in lib/ calls only ctx_*. */
#ifndef VPCD_CTX_H
#define VPCD_CTX_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "limits.h"

#if defined(VPCD_HOOK_XDP)

#define ctx_buff xdp_md
#define CTX_PASS XDP_PASS
#define CTX_DROP XDP_DROP

static __always_inline void *ctx_data(struct xdp_md *ctx) { return (void *)(long)ctx->data; }
static __always_inline void *ctx_data_end(struct xdp_md *ctx) { return (void *)(long)ctx->data_end; }
static __always_inline __u32 ctx_ifindex(struct xdp_md *ctx) { return ctx->ingress_ifindex; }
static __always_inline __u32 ctx_len(struct xdp_md *ctx) { return ctx->data_end - ctx->data; }
static __always_inline __u32 ctx_gso_segs(struct xdp_md *ctx) { return 1; }
static __always_inline int ctx_is_gso(struct xdp_md *ctx) { return 0; }
static __always_inline __u32 ctx_gso_size(struct xdp_md *ctx) { return 0; }
/* XDP sees a VLAN tag in the frame itself, as ethertype 802.1Q. */
static __always_inline int ctx_vlan_tagged(struct xdp_md *ctx) { return 0; }

static __always_inline int ctx_load_bytes(struct xdp_md *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_xdp_load_bytes(ctx, off, to, len);
}

static __always_inline int ctx_store_bytes(struct xdp_md *ctx, __u32 off, const void *from, __u32 len)
{
	return bpf_xdp_store_bytes(ctx, off, (void *)from, len);
}

/* ctx_l4_csum_replace2 updates the 16-bit checksum at csum_off for a
 * 16-bit field that changed from `from` to `to` (RFC 1624). */
static __always_inline int ctx_l4_csum_replace2(struct xdp_md *ctx, __u32 csum_off, __be16 from, __be16 to)
{
	__u16 check;
	__u32 sum;

	if (bpf_xdp_load_bytes(ctx, csum_off, &check, sizeof(check)) < 0)
		return -1;
	sum = (__u16)~check + (__u16)~from + to;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	check = ~(__u16)sum;
	return bpf_xdp_store_bytes(ctx, csum_off, &check, sizeof(check));
}

static __always_inline int ctx_set_len(struct xdp_md *ctx, __u32 len)
{
	return bpf_xdp_adjust_tail(ctx, (int)len - (int)ctx_len(ctx));
}

/* Verdicts: send back out of the interface the frame came in on; hand to a
 * local ENI (the peer of its host-side interface); send to a device. */
static __always_inline int ctx_redirect_back(struct xdp_md *ctx) { return XDP_TX; }
/* A tap ENI (tap set) takes the frame as a transmit to its VMM: XDP
 * hands it to the tap's ndo_xdp_xmit either way. */
static __always_inline int ctx_redirect_local(struct xdp_md *ctx, __u32 ifindex, __u8 tap) { return bpf_redirect(ifindex, 0); }
static __always_inline int ctx_redirect(struct xdp_md *ctx, __u32 ifindex) { return bpf_redirect(ifindex, 0); }

#elif defined(VPCD_HOOK_TC)

#define ctx_buff __sk_buff
#define CTX_PASS TC_ACT_OK
#define CTX_DROP TC_ACT_SHOT

static __always_inline void *ctx_data(struct __sk_buff *ctx) { return (void *)(long)ctx->data; }
static __always_inline void *ctx_data_end(struct __sk_buff *ctx) { return (void *)(long)ctx->data_end; }
static __always_inline __u32 ctx_ifindex(struct __sk_buff *ctx) { return ctx->ifindex; }
static __always_inline __u32 ctx_len(struct __sk_buff *ctx) { return ctx->len; }
static __always_inline __u32 ctx_gso_segs(struct __sk_buff *ctx) { return ctx->gso_segs ? ctx->gso_segs : 1; }
/* A GSO super-packet. One that a VMM wrote on a tap (or a packet socket
 * sent) is SKB_GSO_DODGY: the stack has not counted its segments yet, so
 * gso_segs is 0 and only gso_size tells. */
static __always_inline int ctx_is_gso(struct __sk_buff *ctx)
{
	return ctx->gso_segs > 1 || (!ctx->gso_segs && ctx->gso_size);
}
static __always_inline __u32 ctx_gso_size(struct __sk_buff *ctx) { return ctx->gso_size; }
/* The stack moves a VLAN tag out of the frame into the skb before tc runs. */
static __always_inline int ctx_vlan_tagged(struct __sk_buff *ctx) { return ctx->vlan_present; }

static __always_inline int ctx_load_bytes(struct __sk_buff *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes(ctx, off, to, len);
}

static __always_inline int ctx_store_bytes(struct __sk_buff *ctx, __u32 off, const void *from, __u32 len)
{
	return bpf_skb_store_bytes(ctx, off, from, len, 0);
}

static __always_inline int ctx_l4_csum_replace2(struct __sk_buff *ctx, __u32 csum_off, __be16 from, __be16 to)
{
	return bpf_l4_csum_replace(ctx, csum_off, from, to, sizeof(__u16));
}

static __always_inline int ctx_set_len(struct __sk_buff *ctx, __u32 len)
{
	return bpf_skb_change_tail(ctx, len, 0);
}

static __always_inline int ctx_redirect_back(struct __sk_buff *ctx) { return bpf_redirect(ctx->ifindex, 0); }
/* The peer of a veth, straight into the workload's namespace: no second
 * pass through the host's backlog. A tap has no peer: transmitting on it
 * hands the frame to the VMM that reads the tap. */
static __always_inline int ctx_redirect_local(struct __sk_buff *ctx, __u32 ifindex, __u8 tap)
{
	return tap ? bpf_redirect(ifindex, 0) : bpf_redirect_peer(ifindex, 0);
}
static __always_inline int ctx_redirect(struct __sk_buff *ctx, __u32 ifindex) { return bpf_redirect(ifindex, 0); }

#endif

#if defined(VPCD_HOOK_XDP) || defined(VPCD_HOOK_TC)
/* ctx_head copies the first bytes of the packet into to (room for at
 * least EVENT_HEAD), returning how many: EVENT_HEAD, or for a shorter packet as many of its
 * Ethernet, IPv4 and transport headers as it has. Constant sizes only: the
 * verifier rejects what clang makes of a variable one here. */
static __always_inline __u32 ctx_head(struct ctx_buff *ctx, __u8 *to)
{
	__u32 len = ctx_len(ctx);

	if (len >= EVENT_HEAD)
		return ctx_load_bytes(ctx, 0, to, EVENT_HEAD) < 0 ? 0 : EVENT_HEAD;
	if (len >= 54)
		return ctx_load_bytes(ctx, 0, to, 54) < 0 ? 0 : 54;
	if (len >= 34)
		return ctx_load_bytes(ctx, 0, to, 34) < 0 ? 0 : 34;
	if (len >= 14)
		return ctx_load_bytes(ctx, 0, to, 14) < 0 ? 0 : 14;
	return 0;
}
#else
#error "define VPCD_HOOK_XDP or VPCD_HOOK_TC before including ctx.h"
#endif

#endif
