/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants and structs shared by every vpcd program and, through bpf2go
 * (-type), by the Go loader. Everything here is plain data: no logic. */
#ifndef VPCD_COMMON_H
#define VPCD_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include "limits.h"

#define ETH_ALEN 6
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMPV6_ 58

#define VXLAN_PORT 4789
#define VXLAN_FLAG_VNI 0x08000000 /* the I flag, RFC 7348 */
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

/* Outer headers the ENI program pushes in front of the inner Ethernet frame:
 * IPv4 (20) + UDP (8) + VXLAN (8). */
#define VXLAN_OUTER_LEN 36
/* Outer headers plus the inner Ethernet header. */
#define VXLAN_ENCAP_LEN (VXLAN_OUTER_LEN + ETH_HLEN)

/* Direction as seen by the workload. */
enum direction {
	DIR_INGRESS = 0, /* into the workload */
	DIR_EGRESS = 1,  /* out of the workload */
	__DIR_MAX = 2,
};

/* Per-host settings written by the daemon into the one-slot config map. */
struct vpcd_config {
	__u32 tun_ifindex;      /* tunnel device; 0 = no tunnel (fail closed) */
	__u32 underlay_ip;      /* this host's underlay address, network order */
	__u16 wg_port;          /* WireGuard listen port, network order */
	__u16 inner_mtu;        /* largest inner IP packet that fits the tunnel */
	__u8 gw_mac[ETH_ALEN];  /* the VPC router's fixed MAC */
	__u16 flags;            /* CFG_* */
	__u32 gen;              /* bumped by every reconcile: fast-path entries of
				 * an older generation are ignored */
	__u32 monitor;          /* 1 while `vpcd monitor` listens: drops become events */
};

/* vpcd_config.flags: the tunnel makes the batches of mirror copies of the
 * super-packets it carries (VXLAN_TUNNEL_BATCH_MARK). */
#define CFG_TUNNEL_BATCHES 0x1

enum event_hook {
	HOOK_ENI = 0,      /* the frame from the workload, Ethernet first */
	HOOK_TUNNEL = 1,   /* the decrypted VXLAN packet, outer IPv4 first */
	HOOK_UNDERLAY = 2, /* the underlay frame, Ethernet first */
};

/* A dropped packet, for `vpcd monitor`: why, where, and its first bytes. */
struct drop_event {
	__u64 time; /* bpf_ktime_get_coarse_ns */
	__u32 ifindex;
	__u32 len;
	__u16 reason;
	__u8 dir;
	__u8 hook;
	__u32 captured;
	__u8 head[EVENT_HEAD];
};

/* One ENI attached on this host, keyed by the ifindex of its host-side
 * interface. */
struct eni_info {
	__u32 vni;
	__u32 ip;         /* network order */
	__u32 gateway;    /* the subnet's .1, network order */
	__u32 vpc_net;    /* VPC CIDR network, network order */
	__u32 vpc_mask;   /* VPC CIDR mask, network order */
	__u32 subnet_net; /* subnet CIDR network, network order */
	__u32 subnet_mask;
	__u32 eni_id;     /* dense index for per-ENI counters, < MAX_ENIS */
	__u32 ifindex;    /* of the host-side interface (the key) */
	/* Compiled rule sets (policy maps); 0 = none. Security groups always
	 * have sets (an empty one denies); a subnet with the default network
	 * ACL has none (allow all, no lookups). */
	__u32 sg_in;
	__u32 sg_out;
	__u32 nacl_in;
	__u32 nacl_out;
	/* Connections the ENI may track (max_connections); a new one over it
	 * is dropped as conntrack_allowance. 0 = no limit. */
	__u32 max_conns;
	__u8 mac[ETH_ALEN];
	__u8 source_dest_check;
	__u8 flow_log; /* a flow log covers the ENI: count its flows */
	__u8 mirror;   /* MIRROR_IN | MIRROR_OUT: sessions watch the ENI */
	__u8 tap;      /* the interface is a tap: deliver by transmitting on it */
};

/* eni_info.mirror and fast_entry.mirror bits. */
#define MIRROR_IN 1  /* the ENI's ingress has sessions (fast path: the target's) */
#define MIRROR_OUT 2 /* the ENI's egress has sessions (fast path: the source's) */

/* Traffic mirroring (lib/mirror.h). Each ENI and direction with sessions
 * has a mirror_set: the rules of its sessions' filters, sessions in
 * session_number order and each session's rules in rule_number order. */
#define MIRROR_RULE_ACCEPT 1
#define MIRROR_RULE_ANY_PROTO 2
#define MIRROR_RULE_PORTS 4 /* the rule names port ranges: TCP/UDP only */

struct mirror_rule {
	__u32 src;      /* network order */
	__u32 src_mask; /* network order */
	__u32 dst;
	__u32 dst_mask;
	__u16 sport_lo; /* host order */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u16 session; /* index in mirror_sessions */
	__u8 proto;
	__u8 flags;
};

struct mirror_key {
	__u32 ifindex; /* of the ENI's host-side interface */
	__u32 dir;     /* enum direction */
};

struct mirror_set {
	__u32 n;
	__u32 _pad;
	struct mirror_rule rules[MIRROR_RULES];
};

struct mirror_session {
	__u32 snaplen;     /* bytes of the frame to copy; at most MIRROR_SNAP_MAX are */
	__u32 src_ifindex; /* the source ENI's interface (injected copies) */
	__u32 target;      /* an ENI target's address (network order); 0: a pcap target */
	__u32 vni;         /* the session's virtual_network_id */
	/* The mirror device (tc hook, ENI target): the ENI program clones the
	 * frame out of it (vpcd-mirror, no segmentation offload, so the stack
	 * cuts a super-packet into its wire segments); mirror_inject at its
	 * peer's ingress cuts and wraps each and sends it back, through GRO,
	 * to be routed in batches; 0: copies go through the ring to the
	 * daemon. */
	__u32 out_ifindex;
	__u32 _pad;
};

struct mirror_counter {
	__u64 packets; /* copies handed to the daemon */
	__u64 dropped; /* copies the full ring or mirror device refused */
	__u64 sent;    /* copies the kernel wrapped and sent to an ENI target itself */
	__u64 queued;  /* wire packets cloned into the mirror device for an ENI target */
	__u64 failed;  /* cloned copies mirror_inject could not wrap */
	__u64 batches; /* super-packets whose copies mirror_inject made as one batch */
};

/* The mirror path's capacity (`vpcd run --mirror-max-pps`), per CPU: a
 * token bucket in copies, scaled by 1e9 (a copy costs 1e9, a nanosecond
 * earns rate). rate 0: no limit. */
struct mirror_limit {
	__u64 rate;  /* copies per second, per CPU */
	__u64 burst; /* copies the bucket holds */
};

struct mirror_bucket {
	__u64 tokens; /* copies x 1e9 */
	__u64 last;   /* bpf_ktime_get_ns of the last refill */
};

/* A frame cloned into the mirror device carries its session in skb->mark:
 * MIRROR_CLONE_TAG | index (the index fits the low 16 bits). */
#define MIRROR_CLONE_TAG 0x6d4d0000u
#define MIRROR_CLONE_MASK 0xffff0000u

/* A batch of copies (tc hook, ENI target on another host): a TCP
 * super-packet is cloned into the mirror device's ingress whole, and
 * mirror_inject makes one packet of its wire segments' copies there, one
 * skb per super-packet instead of one per copy. Every byte of a copy but
 * the segment's own payload follows from the super-packet's headers and
 * the segment's place (lengths, IPv4 ID, sequence number, flags, the
 * checksums), so the batch holds the headers once: the VPC's VXLAN
 * headers to the target's host, IPv4 and UDP from the source ENI to the
 * target, the VXLAN header with the session's VNI, struct
 * mirror_batch_desc, the frame's Ethernet, IPv4 and TCP headers, then for
 * each segment its first bytes after them, as many as the copy holds
 * (packet_length less the headers). The sending vpcd cuts it into tunnel
 * packets of whole segments, each with its own headers; the receiving
 * vpcd rebuilds the copies (tunnel/compact.go). */
/* Its bounds are MIRROR_BATCH_* in lib/limits.h. */

struct mirror_batch_desc {
	__be16 mss;     /* the segments' payload size */
	__be16 snap;    /* the session's packet_length */
	__be16 payload; /* TCP payload bytes of the whole super-packet */
	__u8 hdr_len;   /* the frame's Ethernet, IPv4 and TCP headers */
	__u8 segs;      /* wire segments of the super-packet */
	__u8 first;     /* the first segment whose bytes follow */
	__u8 count;     /* how many segments' bytes follow */
	__be16 _pad;
};

/* mirror_inject's scratch for making a batch. */
struct mirror_batch {
	__u8 hdrs[256]; /* the frame's headers (MIRROR_BATCH_HDRS; the rest for the verifier's bounds) */
	__u8 buf[256];  /* one segment's bytes */
};

/* The VPC VXLAN header of such a batch carries the batch mark and the
 * size of one copy's unit (VXLAN header and packet_length bytes) in its
 * reserved bytes 1..3 (compactMark in tunnel/compact.go). The mark never
 * leaves the host but inside WireGuard, between vpcd hosts. */
#define VXLAN_BATCH_MARK 0x43

/* Such a batch leaves mirror_inject longer than its IPv4 length (the rest
 * of the frame it was made of, in pages shared with the original) with
 * this skb->mark: the tunnel device's socket filter cuts it there
 * (tunnel/filter.go, batchTag), dropping the pages. */
#define MIRROR_BATCH_TAG 0x6d420000u

/* Most batches are made by the tunnel instead, from the frame itself: a
 * TCP super-packet that the ENI program sends to another host through the
 * tunnel, for a session whose target lives on another host, goes with
 * this mark in reserved byte 1 of its own VPC VXLAN header and the
 * session's index in bytes 2..3. The daemon, cutting the super-packet into
 * its wire segments anyway, makes the batch of their copies from the
 * bytes in hand and clears the mark (tunnelBatchMark in
 * tunnel/compact.go): no clone, no second pass through the kernel. */
#define VXLAN_TUNNEL_BATCH_MARK 0x54

/* The head of a copy in the mirror ring; the frame's first cap bytes
 * follow it. */
struct mirror_record {
	__u64 time; /* bpf_ktime_get_ns */
	__u32 orig_len;
	__u16 cap;
	__u16 session;
	__u8 dir;
	__u8 _pad[7];
};

/* The VPC header of a mirror copy carries this in the reserved low byte
 * of its VNI word: the receiving host delivers it to the target without
 * mirroring it again or counting it in flow logs. */
#define VXLAN_MIRROR_MARK 0x4d

/* Injected copies name their session in the source MAC of the frame the
 * daemon writes to the injection interface: 02:6d:SS:SS:SS:SS. */
#define MIRROR_INJECT_MAC0 0x02
#define MIRROR_INJECT_MAC1 0x6d

/* Rule bitmaps: one bit per rule of a set, up to POLICY_RULES rules. */
struct rule_bits {
	__u64 w[POLICY_WORDS];
};

/* Which rules of a set match a remote address: the bits of every rule
 * whose CIDR contains it (Go ORs the bits of enclosing CIDRs into each
 * entry, so the longest match carries them all). */
struct policy_cidr_key {
	__u32 prefixlen;
	__u32 set;
	__u32 ip; /* network order */
};

/* Which rules match a protocol and port: port is the destination port,
 * or ICMP type << 8 | code; any = 1 holds the rules for all protocols. */
struct policy_port_key {
	__u32 prefixlen;
	__u32 set;
	__u8 any;
	__u8 proto;
	__u16 port; /* network order, so prefixes run from the high bits */
};

/* Per set: which rules allow (network ACLs; security-group rules all do). */
struct policy_set {
	struct rule_bits allow;
	__u32 rules;
	__u32 _pad;
};

/* Connection tracking, per ENI: one entry serves both directions. */
struct ct_key {
	__u32 eni_id;
	__u32 remote_ip;
	__u16 local_port; /* ICMP echo: the identifier */
	__u16 remote_port;
	__u8 proto;
	__u8 _pad[3];
};

enum ct_state {
	CT_NEW = 0,
	CT_SYN_SENT,
	CT_ESTABLISHED,
	CT_CLOSING, /* FIN seen both ways */
	CT_CLOSED,  /* RST seen: later packets are not replies */
};

/* Keep enum ct_state and enum direction in the BTF for bpf2go. */
const enum ct_state *__ct_state_btf __attribute__((unused));
const enum direction *__direction_btf __attribute__((unused));

struct ct_entry {
	__u64 last_seen; /* bpf_ktime_get_coarse_ns */
	__u8 state;
	__u8 origin;   /* direction of the first packet, as seen by the ENI */
	__u8 fin_dirs; /* bit per direction that sent a FIN */
	__u8 _pad;
	__u32 seq; /* the ENI's USAGE_CT_MADE count with this connection (low 32 bits) */
};

struct route_key {
	__u32 vni;
	__u32 ip; /* network order */
};

/* A routes key whose vni carries this bit (no VNI does: they have 24
 * bits) and whose ip is a peer host's underlay address says that host has
 * an ENI of the VPC without the source/destination check: packets of that
 * VPC from that host may carry any inner source. */
#define ROUTE_UNCHECKED_FROM 0x80000000u

/* Where an address of a VPC lives. Exactly one of ifindex (local ENI) and
 * remote_ip (the underlay address of the host that has it) is non-zero. */
struct route {
	__u32 ifindex;
	__u32 remote_ip;
	__u32 eni_id; /* valid for local routes */
	__u8 mac[ETH_ALEN];
	__u16 _pad;
};

struct peer_info {
	__u32 id;
	__u16 port; /* its WireGuard port, network order */
	__u16 _pad;
	/* When the peer's host last answered our WireGuard datagrams with ICMP
	 * "port unreachable" (its daemon is down), bpf_ktime_get_coarse_ns;
	 * 0 once WireGuard from its address and port arrives again. */
	__u64 unreachable;
};

/* How long a peer stays marked unreachable without a fresh ICMP error:
 * then traffic is tried again. */
#define PEER_DOWN_HOLD (30ULL * 1000000000ULL)

struct underlay_allow_key {
	__u8 protocol;
	__u8 _pad;
	__u16 port; /* network order; 0 = any */
};

/* A remote endpoint whose TCP replies the underlay lets in (the daemon's
 * etcd servers): source address and port. */
struct underlay_from_key {
	__u32 addr; /* network order */
	__u16 port; /* network order */
	__u8 protocol;
	__u8 _pad;
};

struct eni_counter {
	__u64 packets;
	__u64 bytes;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr; /* network order */
};

struct flow_key {
	__u32 eni_id;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport; /* ICMP: type << 8 | code */
	__u8 proto;
	__u8 dir;
	__u8 action; /* 0 ACCEPT, 1 REJECT */
	__u8 _pad;
};

struct flow_val {
	__u64 packets;
	__u64 bytes;
	__u64 first; /* bpf_ktime_get_coarse_ns */
	__u64 last;
	__u8 tcp_flags; /* AWS tcp-flags, ORed */
	__u8 encrypted; /* crossed hosts inside the tunnel */
	__u8 _pad[6];
};

/* IP fragments: the first fragment of a datagram that passed, so that its
 * later fragments (no transport header) follow its verdict and carry its
 * ports in flow logs and mirror filters (lib/frag.h). */
struct frag_key {
	__u32 vni;
	__u32 saddr;
	__u32 daddr;
	__u16 id; /* the IPv4 identification, network order */
	__u8 proto;
	__u8 _pad;
};

struct frag_entry {
	__u64 seen; /* bpf_ktime_get_coarse_ns of the first fragment */
	__u16 sport;
	__u16 dport;
	__u16 rule_port;
	__u8 tcp_flags;
	__u8 _pad;
};

/* The egress fast path: what the slow path decided for one direction of
 * a flow leaving an ENI, so that the next packets of an established flow
 * cost one lookup. Entries are valid for FAST_TTL jiffies after the slow
 * path last confirmed them (at most 2.56 s, well inside every conntrack
 * timeout), only in the generation of the maps they were made in, and
 * never for TCP SYN, FIN or RST: those always take the slow path, which
 * moves the connection's state and removes the entries of a closed one. */
#define FAST_TTL 256

struct fast_key {
	__u32 ifindex;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 _pad;
	__u16 rule_port; /* ICMP type and code decide too */
};

struct fast_entry {
	__u64 confirmed; /* bpf_jiffies64 of the last slow-path pass */
	__u32 gen;
	__u32 out_ifindex; /* local target's host-side interface; 0 = remote */
	__u32 remote_ip;   /* remote: the host's underlay address */
	__u32 vni;
	__u32 src_eni_id;
	__u32 dst_eni_id; /* local only */
	__u8 dst_mac[ETH_ALEN];
	__u8 src_mac[ETH_ALEN]; /* the ENI's own MAC */
	__u8 source_dest_check;
	__u8 src_flow_log; /* count the flow at the source / the local target */
	__u8 dst_flow_log;
	__u8 mirror; /* MIRROR_OUT: the source's egress, MIRROR_IN: the target's ingress */
	/* Flow-log counters of the packets the fast path forwarded (when a
	 * flow log covers the source or the target): they only grow for the
	 * entry's life, and the daemon reads the growth every second, so the
	 * fast path counts a flow without a lookup of its own (nor a clock
	 * read: the daemon's drain dates the packets, to the second that flow
	 * logs keep). */
	__u64 packets;
	__u64 bytes;
	__u64 first; /* bpf_ktime_get_coarse_ns when the entry was made */
	__u8 closed; /* a FIN or RST passed: the fast path no longer applies */
	__u8 out_tap; /* the local target is a tap ENI (eni_info.tap) */
	__u8 _pad[6];
};

#endif
