//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay filter at tcx ingress of the host's underlay interface
 * (veths, where XDP would cost the underlay its GSO super-packets).
 * Logic: lib/underlay.h. */

#define VPCD_HOOK_TC
#include "lib/underlay.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_underlay(struct __sk_buff *skb)
{
	return underlay_from_wire(skb);
}
