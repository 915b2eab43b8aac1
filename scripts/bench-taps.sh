#!/usr/bin/env bash
# make bench-taps (and the end of make bench): tap ENI throughput with the
# ENI program at XDP and at tcx, by the Go benchmarks BenchmarkTapENI (a
# frame generator writing MTU-sized UDP frames behind virtio-net headers on
# a tap's queue, as a VMM's virtio-net backend does) and BenchmarkTapIperf3
# (iperf3 between workload namespaces joined to their taps by frame pumps:
# TSO and checksum offload as a virtio-net guest has them), and a real VM's
# boot-to-ping time (BenchmarkVMBootToPing), all in test/netns. Writes the "Tap ENIs" section of BENCHMARKS.md between its
# markers, the rest of the file untouched. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-BENCHMARKS.md}
GO=${GO:-go}
ROUNDS=${ROUNDS:-3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[ "$(id -u)" = 0 ] || { echo "bench-taps: needs root" >&2; exit 1; }
"$GO" test -count="$ROUNDS" -run '^$' -bench '^BenchmarkTapENI$' -benchtime 300000x -timeout 20m ./test/netns/ \
	| grep '^Benchmark' | tee "$TMP/frames.txt" >&2
"$GO" test -count="$ROUNDS" -run '^$' -bench '^BenchmarkTapIperf3$' -benchtime 1x -timeout 20m ./test/netns/ \
	| grep '^Benchmark' | tee "$TMP/iperf.txt" >&2
"$GO" test -count=1 -run '^$' -bench '^BenchmarkVMBootToPing$' -benchtime "${ROUNDS}x" -timeout 20m ./test/netns/ \
	| grep '^Benchmark' | tee "$TMP/boot.txt" >&2

# median FILE CASE UNIT: the median over the rounds of one metric of one
# benchmark (its name without the -GOMAXPROCS suffix), or n/a.
median() {
	awk -v c="$2" -v u="$3" '{ n = $1; sub(/-[0-9]+$/, "", n); if (n != c) next
		for (i = 3; i < NF; i++) if ($(i + 1) == u) print $i }' "$1" |
		sort -g | awk '{a[NR] = $1} END { if (NR) print a[int((NR + 1) / 2)]; else print "n/a" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

F=BenchmarkTapENI
XW=$(median "$TMP/frames.txt" $F/xdp/tap-tap write-Mpps)
TW=$(median "$TMP/frames.txt" $F/tcx/tap-tap write-Mpps)
{
	echo "<!-- taps -->"
	echo "## Tap ENIs (VMs)"
	echo
	echo "Measured by \`make bench-taps\` (part of \`make bench\`) on $(date -u +%Y-%m-%d), Linux $(uname -r), median of $ROUNDS rounds."
	echo "A frame generator stands in for the VMM: 300,000 frames of 1,514 bytes (UDP, no offloads), one \`write\` each behind"
	echo "a virtio-net header on the source tap's queue, as Firecracker's virtio-net backend writes them; a reader drains the"
	echo "destination. A write returns once the ENI program has run and the frame is in the destination's queue, so the write"
	echo "rate is the datapath's; frames the reader (one \`read\` each, on the same two cores) did not keep up with are lost."
	echo
	echo "| hook | path | write Mpps | write Gbit/s | read Gbit/s | lost % |"
	echo "|---|---|---:|---:|---:|---:|"
	for c in xdp/tap-tap tcx/tap-tap tcx/tap-veth tcx/tap-tap-remote; do
		echo "| ${c%%/*} | ${c#*/} | $(median "$TMP/frames.txt" $F/$c write-Mpps) | $(median "$TMP/frames.txt" $F/$c write-Gbit/s) | $(median "$TMP/frames.txt" $F/$c read-Gbit/s) | $(median "$TMP/frames.txt" $F/$c %lost) |"
	done
	echo
	echo "XDP / tcx, tap → tap on one host: $(ratio "$XW" "$TW") of the frames per second. XDP on a tap delivers only to"
	echo "another tap of the host, and loses the checksum-offload state of what it redirects (docs/datapath.md), so tap ENIs"
	echo "run at tcx by default. iperf3, one TCP stream, 3 s, tap ENI s1 with TSO and checksum offload (frame pumps), at tcx:"
	echo
	echo "| path | Gbit/s |"
	echo "|---|---:|"
	for c in tap-tap tap-veth tap-tap-remote; do
		echo "| $c | $(median "$TMP/iperf.txt" BenchmarkTapIperf3/$c Gbit/s) |"
	done
	echo
	echo "A real VM (QEMU \`-M microvm\` under TCG: nested KVM does not boot a guest on this machine kind, docs/datapath.md;"
	echo "Debian's cloud kernel, a busybox initramfs) on a tap ENI, mean of $ROUNDS boots: at its shell with its NIC configured"
	echo "$(median "$TMP/boot.txt" BenchmarkVMBootToPing s-to-shell) s after QEMU starts, first ping of an ENI on another host answered"
	echo "$(median "$TMP/boot.txt" BenchmarkVMBootToPing s-to-ping) s after \`vpcd lab vm up\` begins."
	echo "<!-- /taps -->"
} >"$TMP/section.md"

if grep -q '^<!-- taps -->$' "$OUT" 2>/dev/null; then
	python3 - "$OUT" "$TMP/section.md" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(path).read()
text = re.sub(r"(?ms)^<!-- taps -->$.*?^<!-- /taps -->$", lambda m: section, text)
open(path, "w").write(text)
PY
else
	printf '\n%s\n' "$(cat "$TMP/section.md")" >>"$OUT"
fi
sed -n '/^<!-- taps -->$/,/^<!-- \/taps -->$/p' "$OUT"
