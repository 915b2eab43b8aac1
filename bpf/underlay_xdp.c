//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The underlay filter at XDP of the host's underlay interface (physical
 * NICs, taps: the earliest point). Logic: lib/underlay.h. */

#define VPCD_HOOK_XDP
#include "lib/underlay.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int from_underlay_xdp(struct xdp_md *ctx)
{
	return underlay_from_wire(ctx);
}
