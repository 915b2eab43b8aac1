/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Security groups and network ACLs, compiled by Go into rule bitmaps
 * (dataplane/policy.go): a packet's rules are found with two LPM lookups
 * (remote CIDR; protocol and port) and one for the all-protocol rules, and
 * the verdict is the AND of the bitmaps. Nothing walks rules per packet. */
#ifndef VPCD_POLICY_H
#define VPCD_POLICY_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/* What policy needs of a packet, seen in its own direction. */
struct pkt_info {
	__be32 saddr;
	__be32 daddr;
	__u16 sport; /* host order; ICMP echo: identifier */
	__u16 dport; /* host order; ICMP echo: 0 */
	__u16 rule_port; /* destination port, or ICMP type << 8 | code */
	__u8 proto;
	__u8 tcp_flags;
	__u16 hdr_len; /* IPv4 and transport headers: repeated per GSO segment */
};

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

/* ICMP queries: a request and its reply share an identifier and form one
 * tracked exchange (echo 8/0, timestamp 13/14). Every other ICMP type
 * (errors, redirects, router messages) is never tracked: the rules decide
 * each such packet. */
static __always_inline int icmp_query(__u8 type)
{
	return type == 8 || type == 0 || type == 13 || type == 14;
}

static __always_inline int icmp_request(__u8 type)
{
	return type == 8 || type == 13;
}

/* pkt_info_fill reads the transport header at c (none for a later fragment). */
static __always_inline int pkt_info_fill(struct pkt_info *pi, struct iphdr *ip, struct cursor *c)
{
	pi->saddr = ip->saddr;
	pi->daddr = ip->daddr;
	pi->proto = ip->protocol;
	pi->sport = 0;
	pi->dport = 0;
	pi->rule_port = 0;
	pi->tcp_flags = 0;
	pi->hdr_len = ip->ihl * 4;
	if (ip->frag_off & bpf_htons(IP_OFFMASK)) /* a later fragment: lib/frag.h */
		return 0;
	if (ip->protocol == IPPROTO_TCP_) {
		struct tcphdr *tcp = c->pos;

		if ((void *)(tcp + 1) > c->end)
			return -1;
		pi->sport = bpf_ntohs(tcp->source);
		pi->dport = bpf_ntohs(tcp->dest);
		pi->tcp_flags = ((__u8 *)tcp)[13];
		pi->rule_port = pi->dport;
		pi->hdr_len += tcp->doff * 4;
	} else if (ip->protocol == IPPROTO_UDP_) {
		struct udphdr *udp = c->pos;

		if ((void *)(udp + 1) > c->end)
			return -1;
		pi->sport = bpf_ntohs(udp->source);
		pi->dport = bpf_ntohs(udp->dest);
		pi->rule_port = pi->dport;
		pi->hdr_len += sizeof(*udp);
	} else if (ip->protocol == IPPROTO_ICMP_) {
		struct icmphdr *icmp = c->pos;

		if ((void *)(icmp + 1) > c->end)
			return -1;
		pi->rule_port = (__u16)icmp->type << 8 | icmp->code;
		if (icmp_query(icmp->type)) /* echo, timestamp: the identifier */
			pi->sport = bpf_ntohs(icmp->un.echo.id);
	}
	return 0;
}

static __always_inline int lowest_bit(__u64 m)
{
	int n = 0;

	if (!(m & 0xffffffffULL)) {
		n += 32;
		m >>= 32;
	}
	if (!(m & 0xffff)) {
		n += 16;
		m >>= 16;
	}
	if (!(m & 0xff)) {
		n += 8;
		m >>= 8;
	}
	if (!(m & 0xf)) {
		n += 4;
		m >>= 4;
	}
	if (!(m & 0x3)) {
		n += 2;
		m >>= 2;
	}
	if (!(m & 0x1))
		n += 1;
	return n;
}

/* policy_first returns the index of the first rule of set that matches a
 * packet to or from remote with proto and port, or -1. A global function:
 * the verifier checks it once, not once per path that reaches it. */
__attribute__((noinline)) int policy_first(__u32 set, __u32 remote, __u32 proto, __u32 port)
{
	struct policy_cidr_key ck = { .prefixlen = 64, .set = set, .ip = remote };
	struct policy_port_key pk = { .prefixlen = 64, .set = set, .proto = (__u8)proto, .port = bpf_htons((__u16)port) };
	struct rule_bits *c, *p, *a;

	c = bpf_map_lookup_elem(&policy_cidr, &ck);
	if (!c)
		return -1;
	p = bpf_map_lookup_elem(&policy_port, &pk);
	pk.any = 1;
	pk.proto = 0;
	pk.port = 0;
	a = bpf_map_lookup_elem(&policy_port, &pk);
	for (int i = 0; i < POLICY_WORDS; i++) {
		__u64 m = 0;

		if (p)
			m |= p->w[i];
		if (a)
			m |= a->w[i];
		m &= c->w[i];
		if (m)
			return i * 64 + lowest_bit(m);
	}
	return -1;
}

/* nacl_allows: stateless, the first matching rule decides, no match
 * denies. set 0 is the default network ACL: allow all. */
__attribute__((noinline)) int nacl_allows(__u32 set, __u32 remote, __u32 proto, __u32 port)
{
	struct policy_set *ps;
	__u32 idx;
	int first;

	if (!set)
		return 1;
	first = policy_first(set, remote, proto, port);
	if (first < 0 || first >= POLICY_RULES)
		return 0;
	idx = (__u32)first;
	ps = bpf_map_lookup_elem(&policy_sets, &set);
	if (!ps)
		return 0;
	return (ps->allow.w[(idx >> 6) & (POLICY_WORDS - 1)] >> (idx & 63)) & 1;
}

/* sg_allows: any matching allow rule of the ENI's groups. */
static __always_inline int sg_allows(__u32 set, __be32 remote, __u8 proto, __u16 port)
{
	return set && policy_first(set, remote, proto, port) >= 0;
}

#endif
