//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ENI program at tcx ingress of an ENI's host-side interface (veths:
 * keeps the workload's GSO super-packets whole). Logic: lib/eni.h. */

#define VPCD_HOOK_TC
#include "lib/eni.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int eni_ingress(struct __sk_buff *skb)
{
	return eni_egress(skb);
}
