/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Proxy ARP: the VPC router answers every ARP request a workload makes for
 * an address of its VPC with the fixed gateway MAC, so that no broadcast ever
 * leaves the host. The reply is written over the request in place. */
#ifndef VPCD_ARP_H
#define VPCD_ARP_H

#include "parse.h"

#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

/* arp_answerable tells whether the VPC router answers a request for tpa. */
static __always_inline int arp_answerable(const struct eni_info *eni, __be32 tpa, __be32 spa)
{
	if ((tpa & eni->vpc_mask) != eni->vpc_net)
		return 0;
	/* Never claim the workload's own address (duplicate address probes,
	 * gratuitous ARP). */
	if (tpa == eni->ip || tpa == spa)
		return 0;
	return 1;
}

/* arp_reply_in_place turns a request into the router's reply. */
static __always_inline void arp_reply_in_place(struct ethhdr *eth, struct arp_eth_ipv4 *arp,
					       const __u8 *gw_mac)
{
	__be32 tpa = arp->tpa;

	mac_copy(eth->h_dest, eth->h_source);
	mac_copy(eth->h_source, gw_mac);
	arp->op = bpf_htons(ARP_OP_REPLY);
	mac_copy(arp->tha, arp->sha);
	arp->tpa = arp->spa;
	mac_copy(arp->sha, gw_mac);
	arp->spa = tpa;
}

#endif
