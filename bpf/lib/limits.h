/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every size of the datapath, named once. The maps, structs and loops of
 * the programs use these names, and Go reads the same values: `go generate`
 * writes them from the object's BTF into package bpf/limits (which the
 * topology validator imports without pulling in the loader), so a change
 * here reaches the daemon and the validator and cannot drift.
 *
 * An enum rather than macros: clang keeps an enum's values in the BTF. */
#ifndef VPCD_LIMITS_H
#define VPCD_LIMITS_H

enum vpcd_limit {
	/* ENIs on one host: eni_id < MAX_ENIS (enis, eni_stats, eni_usage,
	 * flow_lost, mirror_sets). */
	MAX_ENIS = 4096,
	/* (VNI, IP) routes: every address of the VPCs the host's ENIs are in. */
	MAX_ROUTES = 65536,
	/* Other hosts (peers). */
	MAX_PEERS = 1024,
	/* Host, underlay and link-local prefixes a workload must never reach. */
	MAX_SUBSTRATE = 1024,
	/* Entries of the operator's underlay allow-list. */
	MAX_UNDERLAY_ALLOW = 256,
	/* Slots of the drops map: reason * __DIR_MAX + direction, sized
	 * generously so that adding a reason does not change the map's shape. */
	DROP_SLOTS = 128,

	/* Rule bitmaps: one bit per rule of a set, up to POLICY_RULES rules. */
	POLICY_WORDS = 16,
	POLICY_RULES = POLICY_WORDS * 64,
	MAX_POLICY_CIDRS = 262144, /* policy_cidr entries of all sets */
	MAX_POLICY_PORTS = 262144, /* policy_port entries of all sets */
	MAX_POLICY_SETS = 65536,

	/* Connections the host tracks in all (conntrack): no ENI may track
	 * more, and an ENI's default max_connections is a share of it. */
	MAX_CONNECTIONS = 262144,
	/* The least max_connections an ENI gets by default, however many ENIs
	 * share its host (the daemon's, beside the table it divides). */
	MIN_DEFAULT_CONNECTIONS = 1024,
	MAX_FAST_ENTRIES = 262144, /* the egress fast path */
	MAX_FRAGS = 65536,         /* first fragments remembered, host-wide */
	/* First fragments one ENI may have remembered per FRAG_WINDOW_MS: a
	 * flood from one ENI cannot push the others' entries out of frags in
	 * the milliseconds their datagrams take to arrive. */
	FRAG_BUDGET = 4096,
	FRAG_WINDOW_MS = 100,
	MAX_FLOWS = 65536,         /* flow-log entries between two drains */
	/* Slots of eni_usage per ENI: >= __USAGE_MAX, room to add slots
	 * without a new map shape. */
	USAGE_SLOTS = 8,

	/* Bytes of a dropped packet a drop event carries. */
	EVENT_HEAD = 96,
	EVENTS_RING_SIZE = 1 << 20,

	/* Idle timeouts of tracked connections, in seconds (lib/conntrack.h;
	 * the daemon's conntrack sweep uses the same). AWS's documented ones:
	 * TCP established 5 days, UDP 30 s or 180 s once replies were seen,
	 * other protocols 60 s; vpcd's own for TCP before the handshake and
	 * after FINs both ways, and ICMP. */
	CT_TCP_ESTABLISHED_S = 432000,
	CT_TCP_SYN_S = 60,
	CT_TCP_CLOSING_S = 10,
	CT_UDP_S = 30,
	CT_UDP_STREAM_S = 180,
	CT_ICMP_S = 30,
	CT_OTHER_S = 60,

	/* Traffic mirroring (lib/mirror.h). */
	MIRROR_RULES = 32, /* filter rules of one ENI and direction */
	MAX_MIRROR_SESSIONS = 1024,
	MIRROR_SNAP_MAX = 2048,  /* bytes of a frame a copy can hold; a power of 2 */
	MIRROR_SNAP_SMALL = 256, /* a power of 2 */
	MIRROR_RING_SIZE = 4 << 20,
	/* A batch of copies made in the kernel (struct mirror_batch_desc in
	 * lib/common.h; the daemon checks a peer's against these). */
	MIRROR_BATCH_SEGS = 64,  /* segments of one batch, at most */
	MIRROR_BATCH_SNAP = 256, /* a packet_length batches up to this; a power of 2 */
	MIRROR_BATCH_MSS = 9000, /* and segments up to this size */
	MIRROR_BATCH_HDRS = 134, /* the frame's Ethernet, IPv4 (20) and TCP headers, at most */
	MIRROR_BATCH_ROOM = 128, /* a batch's own headers and a copy fit a segment with this to spare */
};

/* Keeps enum vpcd_limit in the object's BTF for the Go generator. */
const enum vpcd_limit *__vpcd_limit_btf __attribute__((unused));

#endif
