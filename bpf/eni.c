//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ENI program at tcx ingress of an ENI's host-side interface (veths:
 * keeps the workload's GSO super-packets whole), where the frames the
 * workload sends arrive. Logic: lib/eni.h. */

#define VPCD_HOOK_TC
#include "lib/eni.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_workload(struct __sk_buff *skb)
{
	return eni_from_workload(skb);
}

/* mirror_inject runs at tcx ingress of the mirror injection interface,
 * whose other end the daemon writes mirror copies to: each a VXLAN packet
 * from the source ENI's address to the target ENI's. It sends the copy
 * through the VPC as the source ENI would, except that no policy of the
 * source applies and nothing counts it in flow logs or mirrors it again:
 * the target's network ACL and security groups decide, here for a local
 * target, on the target's host for a remote one. */
SEC("tc")
int mirror_inject(struct __sk_buff *skb)
{
	return mirror_inject_frame(skb);
}
