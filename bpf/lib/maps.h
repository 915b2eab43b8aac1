/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps shared by all vpcd programs. Every map is pinned by name under the
 * daemon's bpffs directory so that the programs of all attach points share
 * one set and a restarted daemon adopts them. */
#ifndef VPCD_MAPS_H
#define VPCD_MAPS_H

#include <bpf/bpf_helpers.h>
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vpcd_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

/* enis, routes and peers are read through a pointer for the whole of a
 * packet's run while the daemon may update other entries: without
 * preallocation a replaced element is freed only after every program that
 * could hold it has finished (RCU), never handed at once to the next
 * update, so a packet never reads another ENI's or route's new value. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENIS);
	__type(key, __u32); /* ifindex of the host-side interface */
	__type(value, struct eni_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enis SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ROUTES);
	__type(key, struct route_key);
	__type(value, struct route);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routes SEC(".maps");

/* Host, underlay and link-local prefixes a workload must never reach. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_SUBSTRATE);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} substrate SEC(".maps");

/* Underlay addresses of the other hosts, network order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PEERS);
	__type(key, __u32);
	__type(value, struct peer_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_UNDERLAY_ALLOW);
	__type(key, struct underlay_allow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} underlay_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_UNDERLAY_ALLOW);
	__type(key, struct underlay_from_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} underlay_from SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drops SEC(".maps");

/* Per ENI and direction: eni_id * __DIR_MAX + direction. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_ENIS * __DIR_MAX);
	__type(key, __u32);
	__type(value, struct eni_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} eni_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_POLICY_CIDRS);
	__type(key, struct policy_cidr_key);
	__type(value, struct rule_bits);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_cidr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_POLICY_PORTS);
	__type(key, struct policy_port_key);
	__type(value, struct rule_bits);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_POLICY_SETS);
	__type(key, __u32);
	__type(value, struct policy_set);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNECTIONS);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* Connections the conntrack table gained: with its size, the daemon works
 * out how many the LRU evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_inserts SEC(".maps");

/* Each ENI's use of the host-wide conntrack and flow tables (fair share,
 * SPEC §10), slot eni_id * USAGE_SLOTS + enum usage_slot. Every slot has
 * one writer: the datapath adds to the MADE and REFUSED slots (atomic
 * adds), the daemon writes the GONE slots and the flow share. An ENI holds
 * MADE - GONE entries of a table (read as signed: a GONE written just
 * after an entry went in may briefly pass its MADE). */
enum usage_slot {
	USAGE_CT_MADE = 0, /* new connections tracked (fresh keys) */
	USAGE_CT_GONE,     /* of those, gone: expired and swept, flushed or evicted */
	USAGE_CT_REFUSED,  /* new connections dropped as conntrack_allowance */
	USAGE_FLOW_MADE,   /* flow entries added */
	USAGE_FLOW_GONE,   /* of those, drained by the daemon */
	USAGE_FLOW_SHARE,  /* flow entries the ENI may hold; 0 = no limit */
	USAGE_FRAG_WINDOW, /* when the ENI's current fragment window began (ns) */
	USAGE_FRAG_COUNT,  /* first fragments remembered in that window */
	__USAGE_MAX,
};

/* Keeps enum usage_slot in the BTF for bpf2go: Go names the slots too. */
const enum usage_slot *__usage_slot_btf __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_ENIS * USAGE_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} eni_usage SEC(".maps");

static __always_inline __u64 *usage_slot(__u32 eni_id, enum usage_slot slot)
{
	__u32 key = eni_id * USAGE_SLOTS + (__u32)slot;

	return bpf_map_lookup_elem(&eni_usage, &key);
}

/* usage_room reports whether the ENI holds fewer than limit entries of a
 * table (made and gone are its MADE and GONE slots); limit 0 = no limit. */
static __always_inline int usage_room(__u32 eni_id, enum usage_slot made_slot, __u64 limit)
{
	__u64 *made, *gone;

	if (!limit)
		return 1;
	made = usage_slot(eni_id, made_slot);
	gone = usage_slot(eni_id, made_slot + 1);
	if (!made || !gone)
		return 1; /* eni_id out of range: cannot happen (the daemon gives < MAX_ENIS) */
	return (__s64)(*made - *gone) < (__s64)limit;
}

/* usage_next is what a slot will read after one more add (low 32 bits):
 * the sequence number of an entry about to be counted there. Two CPUs may
 * get the same number; each adds after it numbered its entry, so the
 * number is never above the slot's value once the entry is counted. */
static __always_inline __u32 usage_next(__u32 eni_id, enum usage_slot slot)
{
	__u64 *v = usage_slot(eni_id, slot);

	return v ? (__u32)(*v + 1) : 0;
}

/* usage_add adds one to a slot the datapath writes. */
static __always_inline void usage_add(__u32 eni_id, enum usage_slot slot)
{
	__u64 *v = usage_slot(eni_id, slot);

	if (v)
		__sync_fetch_and_add(v, 1);
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FAST_ENTRIES);
	__type(key, struct fast_key);
	__type(value, struct fast_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fastpath SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FRAGS);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

/* Packets whose flow found no room in flows, per ENI. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_ENIS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENIS * __DIR_MAX);
	__type(key, struct mirror_key);
	__type(value, struct mirror_set);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mirror_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_MIRROR_SESSIONS);
	__type(key, __u32);
	__type(value, struct mirror_session);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mirror_sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_MIRROR_SESSIONS);
	__type(key, __u32);
	__type(value, struct mirror_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mirror_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_limit);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mirror_limit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mirror_bucket SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MIRROR_RING_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mirror_ring SEC(".maps");

/* Scratch for building a batch of mirror copies (lib/eni.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_batch);
} mirror_batch_scratch SEC(".maps");

/* peer_down reports a peer host whose daemon answered our WireGuard with
 * "port unreachable" recently (the underlay filter marks it), or a host
 * that is no tunnel peer at all (etcd mode: its daemon is not registered,
 * so no key to encrypt to). */
static __always_inline int peer_down(__u32 remote_ip)
{
	struct peer_info *peer = bpf_map_lookup_elem(&peers, &remote_ip);

	return !peer || (peer->unreachable && bpf_ktime_get_coarse_ns() - peer->unreachable < PEER_DOWN_HOLD);
}

static __always_inline struct vpcd_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

/* count_eni adds packets (a GSO super-packet's segments) of bytes IP bytes
 * in all to an ENI's counters. */
static __always_inline void count_eni(__u32 eni_id, enum direction dir, __u32 packets, __u32 bytes)
{
	__u32 key = eni_id * __DIR_MAX + (__u32)dir;
	struct eni_counter *c = bpf_map_lookup_elem(&eni_stats, &key);

	if (c) {
		c->packets += packets;
		c->bytes += bytes;
	}
}

#endif
