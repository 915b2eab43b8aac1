#!/usr/bin/env bash
# make bench-cni: vpcd-cni's ADD, ADD-to-reachable and DEL latency (p50,
# p99, max over 100 containers) in a two-host etcd lab, by the Go
# benchmark BenchmarkCNI (test/netns/cni_bench_test.go) with cnitool.
# Writes the "CNI" section of BENCHMARKS.md between its markers (the rest
# of the file untouched; `make bench` keeps it). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-BENCHMARKS.md}
GO=${GO:-go}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[ "$(id -u)" = 0 ] || { echo "bench-cni: needs root" >&2; exit 1; }
VPCD_CNI_BENCH_OUT="$TMP/table.md" "$GO" test -count=1 -run '^$' -bench '^BenchmarkCNI$' -benchtime 1x -timeout 20m ./test/netns/ \
	| grep -v 'level=' >&2

{
	echo "<!-- cni -->"
	echo "## CNI"
	echo
	echo "Measured by \`make bench-cni\` on $(date -u +%Y-%m-%d), Linux $(uname -r): \`vpcd-cni\` run by the reference runner"
	echo "\`cnitool\` in a lab host's namespace; each ADD asks the daemon for a dynamic ENI (etcd transaction for the lowest"
	echo "free address, the daemon's own apply with attach-before-up), moves the veth into a fresh namespace and configures it."
	echo
	cat "$TMP/table.md"
	echo "<!-- /cni -->"
} >"$TMP/section.md"

if grep -q '^<!-- cni -->$' "$OUT" 2>/dev/null; then
	python3 - "$OUT" "$TMP/section.md" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(path).read()
text = re.sub(r"(?ms)^<!-- cni -->$.*?^<!-- /cni -->$", lambda m: section, text)
open(path, "w").write(text)
PY
else
	printf '\n%s\n' "$(cat "$TMP/section.md")" >>"$OUT"
fi
sed -n '/^<!-- cni -->$/,/^<!-- \/cni -->$/p' "$OUT"
