#!/usr/bin/env bash
# make bench: iperf3 throughput side by side, in one run, interleaved, median
# of ROUNDS: a bare veth pair, stock wireguard-go (built from the module
# proxy), kernel VXLAN over that wireguard-go, and vpcd (cross-host and
# same-host ENI to ENI). Writes BENCHMARKS.md. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
OUT=${OUT:-BENCHMARKS.md}
VPCD=${VPCD:-./bin/vpcd}
WGGO=./bin/wireguard-go
GO=${GO:-go}
LAB=bench
NS="vb-va vb-vb vb-wa vb-wb vb-wr"
TMP=$(mktemp -d)
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	"$VPCD" lab down --name "$LAB" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}x" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}f" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}m" >/dev/null 2>&1 || true
	for n in $NS; do ip netns del "$n" 2>/dev/null || true; done
	rm -f /var/run/wireguard/vbwg0.sock /var/run/wireguard/vbwg1.sock
	rm -rf "$TMP"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench: needs root" >&2; exit 1; }
cleanup
TMP=$(mktemp -d)

log "building stock wireguard-go from the module proxy"
"$GO" build -o "$WGGO" golang.zx2c4.com/wireguard

nsx() { local n=$1; shift; ip netns exec "$n" "$@"; }

log "bare veth pair"
ip netns add vb-va; ip netns add vb-vb
ip link add vb0 netns vb-va type veth peer name vb1 netns vb-vb
nsx vb-va ip addr add 10.97.0.1/24 dev vb0; nsx vb-va ip link set vb0 up; nsx vb-va ip link set lo up
nsx vb-vb ip addr add 10.97.0.2/24 dev vb1; nsx vb-vb ip link set vb1 up; nsx vb-vb ip link set lo up

log "stock wireguard-go between two hosts on a bridge, and kernel VXLAN over it"
ip netns add vb-wr; ip netns add vb-wa; ip netns add vb-wb
nsx vb-wr ip link add rack0 type bridge mcast_snooping 0; nsx vb-wr ip link set rack0 up
i=1
for n in vb-wa vb-wb; do
	ip link add "r$i" netns vb-wr type veth peer name eth0 netns "$n"
	nsx vb-wr ip link set "r$i" master rack0; nsx vb-wr ip link set "r$i" up
	nsx "$n" ip addr add "198.19.0.$i/24" dev eth0; nsx "$n" ip link set eth0 up; nsx "$n" ip link set lo up
	wg genkey > "$TMP/k$i"; wg pubkey < "$TMP/k$i" > "$TMP/p$i"
	i=$((i + 1))
done
i=0
for n in vb-wa vb-wb; do
	nsx "$n" env WG_PROCESS_FOREGROUND=1 "$WGGO" -f "vbwg$i" >"$TMP/wg$i.log" 2>&1 &
	PIDS+=($!)
	i=$((i + 1))
done
for _ in $(seq 50); do [ -S /var/run/wireguard/vbwg0.sock ] && [ -S /var/run/wireguard/vbwg1.sock ] && break; sleep 0.1; done
nsx vb-wa wg set vbwg0 private-key "$TMP/k1" listen-port 51820 peer "$(cat "$TMP/p2")" endpoint 198.19.0.2:51820 allowed-ips 10.99.0.2/32
nsx vb-wb wg set vbwg1 private-key "$TMP/k2" listen-port 51820 peer "$(cat "$TMP/p1")" endpoint 198.19.0.1:51820 allowed-ips 10.99.0.1/32
nsx vb-wa ip addr add 10.99.0.1/24 dev vbwg0; nsx vb-wa ip link set vbwg0 mtu 1420 up
nsx vb-wb ip addr add 10.99.0.2/24 dev vbwg1; nsx vb-wb ip link set vbwg1 mtu 1420 up
nsx vb-wa ip link add vx0 type vxlan id 42 local 10.99.0.1 remote 10.99.0.2 dstport 4789 dev vbwg0
nsx vb-wb ip link add vx0 type vxlan id 42 local 10.99.0.2 remote 10.99.0.1 dstport 4789 dev vbwg1
nsx vb-wa ip addr add 10.98.0.1/24 dev vx0; nsx vb-wa ip link set vx0 mtu 1370 up
nsx vb-wb ip addr add 10.98.0.2/24 dev vx0; nsx vb-wb ip link set vx0 mtu 1370 up
nsx vb-wa ping -c 2 -W 2 10.99.0.2 >/dev/null || { echo "bench: stock wireguard-go tunnel does not work" >&2; exit 1; }

log "vpcd lab: two hosts, ENIs at MTU 1500"
cat > "$TMP/topology.yaml" <<'YAML'
version: 1
hosts:
  - {name: b1, underlay_ip: 198.18.0.11}
  - {name: b2, underlay_ip: 198.18.0.12}
vpcs:
  - name: v
    vni: 77
    cidr: 10.0.0.0/16
    subnets: [{name: s, cidr: 10.0.1.0/24}]
security_groups:
  - {name: open, vpc: v, ingress: [{protocol: all, cidr: 10.0.0.0/16}]}
enis:
  - {name: e1, host: b1, subnet: s, ip: 10.0.1.10, security_groups: [open]}
  - {name: e2, host: b2, subnet: s, ip: 10.0.1.11, security_groups: [open]}
  - {name: e3, host: b1, subnet: s, ip: 10.0.1.12, security_groups: [open]}
YAML
"$VPCD" lab up --name "$LAB" --topology "$TMP/topology.yaml" >/dev/null
# The same with the underlay filter forced to XDP (auto picks tcx on veths):
# the number behind that choice (docs/hooks.md).
sed 's/name: b1/name: x1/; s/host: b1/host: x1/g; s/name: b2/name: x2/; s/host: b2/host: x2/g' "$TMP/topology.yaml" > "$TMP/topology-xdp.yaml"
"$VPCD" lab up --name "${LAB}x" --topology "$TMP/topology-xdp.yaml" --daemon-flags "--underlay-hook xdp" >/dev/null
# The same with a flow log of every flow at a 1 s interval, to a file.
sed 's/name: b1/name: y1/; s/host: b1/host: y1/g; s/name: b2/name: y2/; s/host: b2/host: y2/g' "$TMP/topology.yaml" > "$TMP/topology-fl.yaml"
cat >> "$TMP/topology-fl.yaml" <<'YAML'
flow_logs:
  - {name: all, resource: "vpc:v", traffic_type: ALL, aggregation_interval: 1s, destination: "file://flows/{host}.log"}
YAML
"$VPCD" lab up --name "${LAB}f" --topology "$TMP/topology-fl.yaml" >/dev/null
# The same with a mirror session taking all of e1's traffic, both ways, cut
# to 128 bytes, to a collector ENI on the other host.
sed 's/name: b1/name: z1/; s/host: b1/host: z1/g; s/name: b2/name: z2/; s/host: b2/host: z2/g' "$TMP/topology.yaml" > "$TMP/topology-m.yaml"
cat >> "$TMP/topology-m.yaml" <<'YAML'
  - {name: e4, host: z2, subnet: s, ip: 10.0.1.13, security_groups: [open]}
mirror_filters:
  - name: all
    ingress: [{rule_number: 1, action: accept, protocol: all}]
    egress: [{rule_number: 1, action: accept, protocol: all}]
mirror_sessions:
  - {name: all-e1, source_eni: e1, filter: all, session_number: 1, virtual_network_id: 4242, packet_length: 128, target: {eni: e4}}
YAML
"$VPCD" lab up --name "${LAB}m" --topology "$TMP/topology-m.yaml" >/dev/null

# iperf3 CLIENT_NS SERVER_NS ADDR [exec prefix] -> Gbit/s received
measure() {
	local cns=$1 sns=$2 addr=$3 kind=$4
	local srv cli
	if [ "$kind" != ns ]; then
		"$VPCD" lab exec --name "$kind" "$sns" -- iperf3 -s -1 >/dev/null 2>&1 &
		srv=$!
		sleep 0.4
		cli=$("$VPCD" lab exec --name "$kind" "$cns" -- iperf3 -c "$addr" -t "$SECS" -f g 2>&1 || true)
	else
		nsx "$sns" iperf3 -s -1 >/dev/null 2>&1 &
		srv=$!
		sleep 0.4
		cli=$(nsx "$cns" iperf3 -c "$addr" -t "$SECS" -f g 2>&1 || true)
	fi
	wait "$srv" 2>/dev/null || true
	echo "$cli" | awk '/receiver/ {print $(NF-2); found=1} END {if (!found) print "0"}'
}

declare -A R
CASES=${CASES:-"veth wggo vxlanwg vpcd_cross vpcd_cross_fl vpcd_cross_mirror vpcd_same vpcd_cross_xdp"}
for round in $(seq "$ROUNDS"); do
	for c in $CASES; do
		case $c in
		veth) v=$(measure vb-va vb-vb 10.97.0.2 ns) ;;
		wggo) v=$(measure vb-wa vb-wb 10.99.0.2 ns) ;;
		vxlanwg) v=$(measure vb-wa vb-wb 10.98.0.2 ns) ;;
		vpcd_cross) v=$(measure e1 e2 10.0.1.11 "$LAB") ;;
		vpcd_same) v=$(measure e1 e3 10.0.1.12 "$LAB") ;;
		vpcd_cross_xdp) v=$(measure e1 e2 10.0.1.11 "${LAB}x") ;;
		vpcd_cross_fl) v=$(measure e1 e2 10.0.1.11 "${LAB}f") ;;
		vpcd_cross_mirror) v=$(measure e1 e2 10.0.1.11 "${LAB}m") ;;
		esac
		R[$c]="${R[$c]:-} $v"
		log "round $round/$ROUNDS $c: $v Gbit/s"
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# latency NS/LAB FROM DST: p50 and p99 of 300 pings 10 ms apart, in ms.
latency() {
	local kind=$1 from=$2 dst=$3 out
	if [ "$kind" = ns ]; then
		out=$(nsx "$from" ping -n -c 300 -i 0.01 "$dst" 2>/dev/null || true)
	else
		out=$("$VPCD" lab exec --name "$kind" "$from" -- ping -n -c 300 -i 0.01 "$dst" 2>/dev/null || true)
	fi
	echo "$out" | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -g |
		awk '{a[NR]=$1} END {if (NR) printf "%s %s", a[int(NR*0.5+0.5)], a[int(NR*0.99+0.5)]; else print "null null"}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

declare -A M
for c in $CASES; do M[$c]=$(echo "${R[$c]}" | median); done
# Rows of cases not run (CASES=...) print n/a.

# What the mirror session copied and dropped over all its runs.
mirror_metric() {
	"$VPCD" lab host --name "${LAB}m" z1 -- bash -c "exec 3<>/dev/tcp/127.0.0.1/9477; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3" 2>/dev/null |
		awk -v m="$1" '$1 == m "{session=\"all-e1\"}" {print $2; found=1} END {if (!found) print "n/a"}'
}
MIRRORED=$(mirror_metric vpcd_mirror_packets_total)
MIRROR_DROPPED=$(mirror_metric vpcd_mirror_dropped_total)

log "ping latency: stock wireguard-go and vpcd across hosts"
read -r LWG50 LWG99 <<<"$(latency ns vb-wa 10.99.0.2)"
read -r LVP50 LVP99 <<<"$(latency "$LAB" e1 10.0.1.11)"

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
	echo "# vpcd benchmarks"
	echo
	echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d) — $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)."
	echo "iperf3, one TCP stream, ${SECS}s per run, $ROUNDS rounds interleaved, median shown; every path shares the same 2 cores"
	echo "(both ends of each connection run on this machine), so compare ratios, not absolutes."
	echo
	echo "| path | Gbit/s (median) | runs | ratio |"
	echo "|---|---:|---|---|"
	echo "| bare veth pair | ${M[veth]:-n/a} |${R[veth]:-} | 1.00x of itself |"
	echo "| stock wireguard-go, host to host | ${M[wggo]:-n/a} |${R[wggo]:-} | baseline |"
	echo "| kernel VXLAN over wireguard-go | ${M[vxlanwg]:-n/a} |${R[vxlanwg]:-} | $(ratio "${M[vxlanwg]:-n/a}" "${M[wggo]:-n/a}") of wireguard-go |"
	echo "| vpcd ENI→ENI across hosts (VXLAN in WireGuard) | ${M[vpcd_cross]:-n/a} |${R[vpcd_cross]:-} | $(ratio "${M[vpcd_cross]:-n/a}" "${M[wggo]:-n/a}") of wireguard-go |"
	echo "| vpcd ENI→ENI on one host | ${M[vpcd_same]:-n/a} |${R[vpcd_same]:-} | $(ratio "${M[vpcd_same]:-n/a}" "${M[veth]:-n/a}") of a bare veth pair |"
	echo "| vpcd across hosts with a flow log of every flow (1 s interval, file) | ${M[vpcd_cross_fl]:-n/a} |${R[vpcd_cross_fl]:-} | $(ratio "${M[vpcd_cross_fl]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd without |"
	echo "| vpcd across hosts with a mirror session copying all of the sender's traffic (128 bytes) to an ENI on the receiver's host | ${M[vpcd_cross_mirror]:-n/a} |${R[vpcd_cross_mirror]:-} | $(ratio "${M[vpcd_cross_mirror]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd without |"
	echo "| vpcd across hosts, underlay filter forced to XDP on the veth | ${M[vpcd_cross_xdp]:-n/a} |${R[vpcd_cross_xdp]:-} | $(ratio "${M[vpcd_cross_xdp]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd with tcx there |"
	echo
	echo "Mirror session over its runs: $MIRRORED copies sent, $MIRROR_DROPPED dropped (a full ring or a failed send)."
	echo
	echo "Ping latency, 300 pings 10 ms apart, milliseconds:"
	echo
	echo "| path | p50 | p99 |"
	echo "|---|---:|---:|"
	echo "| stock wireguard-go | $LWG50 | $LWG99 |"
	echo "| vpcd across hosts | $LVP50 | $LVP99 | "
	echo
	echo "p50 ratio vpcd / wireguard-go: $(ratio "$LVP50" "$LWG50")"
} > "$OUT"
{
	printf '{"date":"%s","cores":%s,"kernel":"%s","gbit_per_s":{' "$(date -u +%FT%TZ)" "$(nproc)" "$(uname -r)"
	first=1
	for c in $CASES; do
		[ $first = 1 ] || printf ','
		printf '"%s":{"median":%s,"runs":[%s]}' "$c" "${M[$c]:-null}" "$(echo ${R[$c]:-} | tr ' ' ',')"
		first=0
	done
	printf '},"ping_ms":{"wireguard_go":{"p50":%s,"p99":%s},"vpcd_cross":{"p50":%s,"p99":%s}}' \
		"${LWG50:-null}" "${LWG99:-null}" "${LVP50:-null}" "${LVP99:-null}"
	printf ',"mirror":{"copies":"%s","dropped":"%s"}}\n' "$MIRRORED" "$MIRROR_DROPPED"
} > "${OUT%.md}.json"
cat "$OUT"
log "wrote $OUT"
