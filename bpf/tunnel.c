//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The tunnel program at tcx ingress of the WireGuard tunnel device: what
 * peers send to the workloads of this host arrives here, decrypted.
 * Logic: lib/tunnel.h. */

#define VPCD_HOOK_TC
#include "lib/tunnel.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_tunnel(struct __sk_buff *skb)
{
	return tunnel_to_workload(skb);
}
