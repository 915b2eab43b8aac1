/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A small context shim so that one code base builds for both tc (struct
 * __sk_buff) and XDP (struct xdp_md). Programs include this after defining
 * VPCD_HOOK_XDP or VPCD_HOOK_TC. */
#ifndef VPCD_CTX_H
#define VPCD_CTX_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#if defined(VPCD_HOOK_XDP)
#define ctx_buff xdp_md
#define CTX_PASS XDP_PASS
#define CTX_DROP XDP_DROP
static __always_inline void *ctx_data(struct xdp_md *ctx) { return (void *)(long)ctx->data; }
static __always_inline void *ctx_data_end(struct xdp_md *ctx) { return (void *)(long)ctx->data_end; }
static __always_inline __u32 ctx_ifindex(struct xdp_md *ctx) { return ctx->ingress_ifindex; }
static __always_inline __u32 ctx_len(struct xdp_md *ctx) { return ctx->data_end - ctx->data; }
#elif defined(VPCD_HOOK_TC)
#define ctx_buff __sk_buff
#define CTX_PASS TC_ACT_OK
#define CTX_DROP TC_ACT_SHOT
static __always_inline void *ctx_data(struct __sk_buff *ctx) { return (void *)(long)ctx->data; }
static __always_inline void *ctx_data_end(struct __sk_buff *ctx) { return (void *)(long)ctx->data_end; }
static __always_inline __u32 ctx_ifindex(struct __sk_buff *ctx) { return ctx->ifindex; }
static __always_inline __u32 ctx_len(struct __sk_buff *ctx) { return ctx->len; }
#else
#error "define VPCD_HOOK_XDP or VPCD_HOOK_TC before including ctx.h"
#endif

#endif
