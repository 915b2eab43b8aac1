/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Traffic mirroring, AWS semantics: for a packet at an ENI, the sessions on
 * that ENI and direction are tried in session_number order; the first whose
 * filter accepts the packet mirrors it, once. A filter's rules are tried in
 * rule_number order, the first match decides, no match is no mirror.
 *
 * The datapath decides and copies. For an ENI target (tc hook) the frame
 * is cloned into the mirror device, whose program (mirror_inject) cuts the
 * clone, wraps it in VXLAN and sends it through the VPC: no copy leaves
 * the kernel. Otherwise (a pcap target, or the XDP hook) the first bytes
 * of the frame go to the daemon through the mirror ring, which writes a
 * pcap file or wraps them and sends them back through mirror_inject. A
 * full ring or mirror queue drops the copy and counts it; the packet
 * itself is never held up.
 *
 * Callers mirror only packets that passed the network ACLs and security
 * groups, never ARP, never a mirror copy itself. */
#ifndef VPCD_MIRROR_H
#define VPCD_MIRROR_H

#include "ctx.h"
#include "common.h"
#include "maps.h"
#include "policy.h"
#include "flow.h"
#include "parse.h"

/* mirror_pick returns the session that mirrors a packet at an ENI and
 * direction (key = ifindex << 32 | wire packets << 1 | dir), or -1. pp is proto << 32 |
 * sport << 16 | dport (ports in host order, 0 when the packet has none).
 * A global function: verified once, whatever calls it. */
__attribute__((noinline)) int mirror_pick(__u64 key, __u32 saddr, __u32 daddr, __u64 pp)
{
	struct mirror_key k = { .ifindex = (__u32)(key >> 32), .dir = (__u32)key & 1 };
	struct mirror_set *set = bpf_map_lookup_elem(&mirror_sets, &k);
	__u8 proto = (__u8)(pp >> 32);
	__u16 sport = (__u16)(pp >> 16), dport = (__u16)pp;
	int skip = -1;
	__u32 n;

	if (!set)
		return -1;
	n = set->n;
	for (__u32 i = 0; i < MIRROR_RULES; i++) {
		const struct mirror_rule *r = &set->rules[i];

		if (i >= n)
			break;
		if ((int)r->session == skip)
			continue;
		if (!(r->flags & MIRROR_RULE_ANY_PROTO) && r->proto != proto)
			continue;
		if ((saddr & r->src_mask) != r->src || (daddr & r->dst_mask) != r->dst)
			continue;
		if (r->flags & MIRROR_RULE_PORTS) {
			if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
				continue;
			if (sport < r->sport_lo || sport > r->sport_hi || dport < r->dport_lo || dport > r->dport_hi)
				continue;
		}
		if (r->flags & MIRROR_RULE_ACCEPT)
			return r->session;
		skip = r->session; /* rejected: this session is done, try the next */
	}
	return -1;
}

static __always_inline __u64 mirror_wakeup(void)
{
	/* Wake the daemon once 8 KiB of copies wait (32 short ones); below
	 * that it polls every 20 ms, so a trickle costs no wakeup per copy.
	 * A later wakeup lets copies pile up into bursts that fill the
	 * tunnel device's queue ahead of the traffic: at 1/16 of the ring a
	 * mirrored TCP stream ran 15% slower (docs/mirroring.md). */
	return bpf_ringbuf_query(&mirror_ring, BPF_RB_AVAIL_DATA) > MIRROR_RING_SIZE / 512 ? BPF_RB_FORCE_WAKEUP
											     : BPF_RB_NO_WAKEUP;
}

#define MIRROR_EMIT(SIZE)                                                                      \
	do {                                                                                   \
		struct {                                                                       \
			struct mirror_record h;                                                \
			__u8 data[SIZE];                                                       \
		} *rec = bpf_ringbuf_reserve(&mirror_ring, sizeof(*rec), 0);                   \
		if (!rec) {                                                                    \
			mc->dropped++;                                                         \
			return 0;                                                              \
		}                                                                              \
		/* cap is 1..SIZE already; the mask shows the verifier. */            \
		cap = ((cap - 1) & (SIZE - 1)) + 1;                                            \
		if (ctx_load_bytes(ctx, 0, rec->data, cap) < 0) {                              \
			bpf_ringbuf_discard(rec, BPF_RB_NO_WAKEUP);                            \
			mc->dropped++;                                                         \
			return 0;                                                              \
		}                                                                              \
		rec->h.time = bpf_ktime_get_ns();                                              \
		rec->h.orig_len = len;                                                         \
		rec->h.cap = cap;                                                              \
		rec->h.session = idx;                                                          \
		rec->h.dir = (__u8)(key & 1);                                                  \
		bpf_ringbuf_submit(rec, mirror_wakeup());                                      \
		mc->packets++;                                                                 \
	} while (0)

/* mirror_admit takes segs copies from this CPU's share of the mirror
 * path's capacity; 0: the path is full, the copies are dropped. */
static __always_inline int mirror_admit(__u32 segs)
{
	const __u64 unit = 1000000000ull;
	struct mirror_limit *lim;
	struct mirror_bucket *b;
	__u32 zero = 0;
	__u64 now, elapsed, cap, cost;

	lim = bpf_map_lookup_elem(&mirror_limit, &zero);
	if (!lim || !lim->rate)
		return 1;
	b = bpf_map_lookup_elem(&mirror_bucket, &zero);
	if (!b)
		return 0;
	now = bpf_ktime_get_ns();
	elapsed = now - b->last;
	if (elapsed > unit)
		elapsed = unit;
	b->last = now;
	cap = lim->burst * unit;
	b->tokens += elapsed * lim->rate;
	if (b->tokens > cap)
		b->tokens = cap;
	cost = (__u64)segs * unit;
	if (b->tokens < cost)
		return 0;
	b->tokens -= cost;
	return 1;
}

#if defined(VPCD_HOOK_TC)
enum { MIRROR_BATCH_KERNEL = 1, MIRROR_BATCH_TUNNEL = 2 };

/* mirror_batchable reports whether the copies of a frame's segs wire
 * segments are made as one batch (see struct mirror_batch): a TCP
 * super-packet whose copies are cut shorter than its segments, for a
 * target on another host (a batch reaches the tunnel whole; a local target
 * takes its copies one by one). The tunnel makes the batch
 * (MIRROR_BATCH_TUNNEL, see VXLAN_TUNNEL_BATCH_MARK) when the frame itself
 * goes to the tunnel next (to_tunnel), the tunnel can (CFG_TUNNEL_BATCHES),
 * the target's host is up, and the
 * frame's Ethernet header is the one the tunnel rebuilds (from the source
 * ENI to the VPC router); otherwise the kernel makes it from a clone
 * (MIRROR_BATCH_KERNEL). */
static __always_inline int mirror_batchable(struct __sk_buff *ctx, const struct mirror_session *ms, __u32 segs, __u8 proto,
					    int to_tunnel)
{
	struct route_key rk = { .ip = ms->target };
	struct vpcd_config *cfg;
	struct eni_info *src;
	struct ethhdr *eth;
	struct route *rt;
	__u32 src_if = ms->src_ifindex;

	if (segs < 2 || segs > MIRROR_BATCH_SEGS || proto != IPPROTO_TCP_ || ctx->len > 0xffff ||
	    !ctx->gso_size || ctx->gso_size > MIRROR_BATCH_MSS || ms->snaplen > MIRROR_BATCH_SNAP ||
	    ms->snaplen + MIRROR_BATCH_ROOM > ctx->gso_size)
		return 0;
	src = bpf_map_lookup_elem(&enis, &src_if);
	if (!src)
		return 0;
	rk.vni = src->vni;
	rt = bpf_map_lookup_elem(&routes, &rk);
	if (!rt || rt->ifindex || !rt->remote_ip)
		return 0;
	cfg = get_config();
	if (!to_tunnel || !cfg || !(cfg->flags & CFG_TUNNEL_BATCHES) || peer_down(rt->remote_ip))
		return MIRROR_BATCH_KERNEL;
	eth = ctx_data(ctx);
	if ((void *)(eth + 1) > ctx_data_end(ctx) || !mac_equal(eth->h_dest, cfg->gw_mac) ||
	    !mac_equal(eth->h_source, src->mac))
		return MIRROR_BATCH_KERNEL;
	return MIRROR_BATCH_TUNNEL;
}
#endif

/* mirror_copy mirrors the frame in ctx if a session of the ENI takes it.
 * Bit 48 of pp says the frame goes to the tunnel next. It returns the
 * session's index + 1 when the tunnel is to make the copies (the caller
 * marks the frame's VXLAN header, VXLAN_TUNNEL_BATCH_MARK), else 0. */
__attribute__((noinline)) int mirror_copy(struct ctx_buff *ctx, __u64 key, __u32 saddr, __u32 daddr, __u64 pp)
{
	struct mirror_session *ms;
	struct mirror_counter *mc;
	__u32 idx, len, cap;
	int s;

	if (!ctx)
		return 0;
	s = mirror_pick(key, saddr, daddr, pp & 0xffffffffffffULL);
	if (s < 0 || s >= MAX_MIRROR_SESSIONS)
		return 0;
	idx = (__u32)s;
	ms = bpf_map_lookup_elem(&mirror_sessions, &idx);
	mc = bpf_map_lookup_elem(&mirror_stats, &idx);
	if (!ms || !mc)
		return 0;
#if defined(VPCD_HOOK_TC)
	if (ms->out_ifindex && ms->target) {
		/* An ENI target: the copy never leaves the kernel but through
		 * the tunnel. The clone shares the frame's data and leaves
		 * through the mirror device, which has no segmentation
		 * offload: a super-packet becomes its wire segments there,
		 * one copy each. The peer's program (mirror_inject) cuts,
		 * wraps and routes them. Refused (the device's queue full):
		 * the copies are dropped. */
		__u32 mark = ctx->mark, segs = (__u32)key >> 1;
		long ret;
		int batch;

		if (!segs)
			segs = 1;
		if (!mirror_admit(segs)) {
			mc->dropped += segs;
			return 0;
		}
		batch = mirror_batchable(ctx, ms, segs, (__u8)(pp >> 32), (pp >> 48) & 1);
		if (batch == MIRROR_BATCH_TUNNEL) {
			/* Sent from here: what the tunnel fails to make of
			 * the mark it counts itself. */
			mc->sent += segs;
			mc->batches++;
			return (int)idx + 1;
		}
		ctx->mark = MIRROR_CLONE_TAG | idx;
		/* A batch enters the mirror device whole (its ingress: no
		 * segmentation); the rest leaves it, to be cut into segments. */
		ret = bpf_clone_redirect(ctx, ms->out_ifindex, batch ? BPF_F_INGRESS : 0);
		ctx->mark = mark;
		if (ret)
			mc->dropped += segs;
		else
			mc->queued += segs;
		return 0;
	}
#endif
	len = ctx_len(ctx);
	cap = ms->snaplen;
	if (cap > len)
		cap = len;
	if (cap > MIRROR_SNAP_MAX)
		cap = MIRROR_SNAP_MAX;
	if (cap < 1)
		return 0;
	if (!mirror_admit(1)) {
		mc->dropped++;
		return 0;
	}
	if (cap <= MIRROR_SNAP_SMALL)
		MIRROR_EMIT(MIRROR_SNAP_SMALL);
	else
		MIRROR_EMIT(MIRROR_SNAP_MAX);
	return 0;
}

/* mirror_at mirrors a packet at an ENI's interface in a direction;
 * to_tunnel: the frame goes to the tunnel next. It returns what
 * mirror_copy does. */
static __always_inline int mirror_at(struct ctx_buff *ctx, __u32 ifindex, __u8 dir, const struct pkt_info *pi,
				     int to_tunnel)
{
	__u32 segs = 1;

#if defined(VPCD_HOOK_TC)
	__u32 bytes;

	/* The wire packets the frame stands for: a super-packet the tunnel
	 * device made (a VMM's, or vpcd's own coalescing) has no segment
	 * count yet. */
	wire_size(ctx_len(ctx) - ETH_HLEN, ctx_gso_segs(ctx), ctx_gso_size(ctx), pi->hdr_len, &segs, &bytes);
#endif
	segs &= 0x7fffffff;
	return mirror_copy(ctx, (__u64)ifindex << 32 | segs << 1 | dir, pi->saddr, pi->daddr,
			   (__u64)!!to_tunnel << 48 | (__u64)pi->proto << 32 | (__u32)pi->sport << 16 | pi->dport);
}

#endif
