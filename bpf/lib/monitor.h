/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop events for `vpcd monitor`: only while someone listens (the config
 * map's monitor flag), one ring-buffer record per dropped packet with its
 * reason, interface and first bytes. A full ring drops the event, never
 * the traffic's progress. */
#ifndef VPCD_MONITOR_H
#define VPCD_MONITOR_H

#include "ctx.h"
#include "common.h"
#include "maps.h"

static __always_inline void emit_drop(struct ctx_buff *ctx, __u16 reason, __u8 dir, __u8 hook)
{
	struct vpcd_config *cfg = get_config();
	struct drop_event *e;

	if (!cfg || !cfg->monitor)
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	e->time = bpf_ktime_get_coarse_ns();
	e->ifindex = ctx_ifindex(ctx);
	e->len = ctx_len(ctx);
	e->reason = reason;
	e->dir = dir;
	e->hook = hook;
	e->captured = ctx_head(ctx, e->head);
	bpf_ringbuf_submit(e, 0);
}

#endif
