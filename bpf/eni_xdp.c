//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ENI program at XDP of an ENI's host-side interface (taps of VMs,
 * where the driver runs XDP natively), where the frames the workload sends
 * arrive. Logic: lib/eni.h. */

#define VPCD_HOOK_XDP
#include "lib/eni.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int from_workload_xdp(struct xdp_md *ctx)
{
	return eni_from_workload(ctx);
}
