#!/usr/bin/env bash
# make bench: every performance number of the project, side by side in one
# run. iperf3 throughput interleaved, median of ROUNDS (5) after a warm-up
# run of every case, one stream and four:
# a bare veth pair, kernel VXLAN, stock wireguard-go (built from the module
# proxy), kernel VXLAN over that wireguard-go, and vpcd (across hosts, on
# one host, with a flow log, with a mirror session of all traffic, with a
# session whose filter matches nothing, an ENI without a session on a host
# that has one, with the underlay filter at XDP); ping latency; eBPF cost
# per packet in place and with BPF_PROG_TEST_RUN; memory with 1,000 ENIs
# and 100,000 connections.
# Writes BENCHMARKS.md, BENCHMARKS.json and BENCHMARKS.png. Needs root.
#
# ROUNDS, COMPARE, SECS, WARM, OUT and CASES (a subset of the default list below) may be
# set. QUICK=1 measures only the throughput CASES: no latency, eBPF cost,
# memory or tap section, and only the namespaces and labs those CASES use
# (e.g. QUICK=1 ROUNDS=1 SECS=2 CASES="vpcd_cross vpcd_cross_mirror"
# OUT=/tmp/b.md). make bench leaves QUICK unset.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
OUT=${OUT:-BENCHMARKS.md}
QUICK=${QUICK:-}
VPCD=${VPCD:-./bin/vpcd}
WGGO=./bin/wireguard-go
GO=${GO:-go}
LAB=bench
NS="vb-va vb-vb vb-wa vb-wb vb-ua vb-ub vb-wr"
TMP=$(mktemp -d)
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	# PIDS holds the shells that started stock wireguard-go; the daemons
	# themselves are the processes left in our namespaces.
	for n in $NS; do
		for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
	done
	"$VPCD" lab down --name "$LAB" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}x" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}f" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}m" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}n" >/dev/null 2>&1 || true
	"$VPCD" lab down --name "${LAB}big" >/dev/null 2>&1 || true
	for n in $NS; do ip netns del "$n" 2>/dev/null || true; done
	rm -f /var/run/wireguard/vbwg[0-3].sock
	rm -rf "$TMP"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench: needs root" >&2; exit 1; }
cleanup
TMP=$(mktemp -d)

CASES=${CASES:-"veth vxlan wggo wggo1 vxlanwg vpcd_cross vpcd_cross_fl vpcd_cross_mirror vpcd_cross_mirror_none vpcd_cross_e3 vpcd_cross_nosession vpcd_same vpcd_cross_xdp veth4 wggo4 wggo14 vpcd_cross4 vpcd_same4"}
# needed CASE...: whether a setup step serves one of these cases; always
# true without QUICK (latency and memory use the stock pairs too).
needed() {
	[ -n "$QUICK" ] || return 0
	local c
	for c in "$@"; do case " $CASES " in *" $c "*) return 0 ;; esac; done
	return 1
}

nsx() { local n=$1; shift; ip netns exec "$n" "$@"; }

if needed veth vxlan wggo wggo1 vxlanwg veth4 wggo4 wggo14; then
log "building stock wireguard-go from the module proxy"
"$GO" build -o "$WGGO" golang.zx2c4.com/wireguard

log "bare veth pair"
ip netns add vb-va; ip netns add vb-vb
ip link add vb0 netns vb-va type veth peer name vb1 netns vb-vb
nsx vb-va ip addr add 10.97.0.1/24 dev vb0; nsx vb-va ip link set vb0 up; nsx vb-va ip link set lo up
nsx vb-vb ip addr add 10.97.0.2/24 dev vb1; nsx vb-vb ip link set vb1 up; nsx vb-vb ip link set lo up

log "stock wireguard-go between two hosts on a bridge, and kernel VXLAN over it"
ip netns add vb-wr
nsx vb-wr ip link add rack0 type bridge mcast_snooping 0; nsx vb-wr ip link set rack0 up
# stock_pair A B N [ENV...]: hosts A and B on the rack (underlay
# 198.19.0.N and N+1), each running stock wireguard-go with ENV as device
# vbwgN / vbwgN+1, tunnel addresses 10.99.N.1 and 10.99.N.2.
stock_pair() {
	local a=$1 b=$2 n=$3 i j
	shift 3
	for i in 0 1; do
		local ns=$a; [ $i = 1 ] && ns=$b
		j=$((n + i))
		ip netns add "$ns"
		ip link add "r$j" netns vb-wr type veth peer name eth0 netns "$ns"
		nsx vb-wr ip link set "r$j" master rack0; nsx vb-wr ip link set "r$j" up
		nsx "$ns" ip addr add "198.19.0.$((j + 1))/24" dev eth0; nsx "$ns" ip link set eth0 up; nsx "$ns" ip link set lo up
		wg genkey > "$TMP/k$j"; wg pubkey < "$TMP/k$j" > "$TMP/p$j"
		nsx "$ns" env WG_PROCESS_FOREGROUND=1 "$@" "$WGGO" -f "vbwg$j" >"$TMP/wg$j.log" 2>&1 &
		PIDS+=($!)
	done
	for _ in $(seq 50); do [ -S "/var/run/wireguard/vbwg$n.sock" ] && [ -S "/var/run/wireguard/vbwg$((n + 1)).sock" ] && break; sleep 0.1; done
	nsx "$a" wg set "vbwg$n" private-key "$TMP/k$n" listen-port 51820 peer "$(cat "$TMP/p$((n + 1))")" endpoint "198.19.0.$((n + 2)):51820" allowed-ips "10.99.$n.2/32"
	nsx "$b" wg set "vbwg$((n + 1))" private-key "$TMP/k$((n + 1))" listen-port 51820 peer "$(cat "$TMP/p$n")" endpoint "198.19.0.$((n + 1)):51820" allowed-ips "10.99.$n.1/32"
	nsx "$a" ip addr add "10.99.$n.1/24" dev "vbwg$n"; nsx "$a" ip link set "vbwg$n" mtu 1420 up
	nsx "$b" ip addr add "10.99.$n.2/24" dev "vbwg$((n + 1))"; nsx "$b" ip link set "vbwg$((n + 1))" mtu 1420 up
	nsx "$a" ping -c 2 -W 2 "10.99.$n.2" >/dev/null || { echo "bench: stock wireguard-go tunnel $a-$b does not work" >&2; exit 1; }
}
# As shipped: the Go runtime's default, one thread per CPU.
stock_pair vb-wa vb-wb 0
# The same binary held to one CPU, as vpcd's default budget holds itself
# on this machine (cmd/vpcd/cpus.go): the setting's share of the gain.
stock_pair vb-ua vb-ub 2 GOMAXPROCS=1
nsx vb-wa ip link add vx0 type vxlan id 42 local 10.99.0.1 remote 10.99.0.2 dstport 4789 dev vbwg0
nsx vb-wb ip link add vx0 type vxlan id 42 local 10.99.0.2 remote 10.99.0.1 dstport 4789 dev vbwg1
nsx vb-wa ip addr add 10.98.0.1/24 dev vx0; nsx vb-wa ip link set vx0 mtu 1370 up
nsx vb-wb ip addr add 10.98.0.2/24 dev vx0; nsx vb-wb ip link set vx0 mtu 1370 up
# Kernel VXLAN alone, in the clear over the same underlay: what the
# encapsulation costs without encryption.
nsx vb-wa ip link add vx1 type vxlan id 43 local 198.19.0.1 remote 198.19.0.2 dstport 4790 dev eth0
nsx vb-wb ip link add vx1 type vxlan id 43 local 198.19.0.2 remote 198.19.0.1 dstport 4790 dev eth0
nsx vb-wa ip addr add 10.96.0.1/24 dev vx1; nsx vb-wa ip link set vx1 up
nsx vb-wb ip addr add 10.96.0.2/24 dev vx1; nsx vb-wb ip link set vx1 up
fi

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
# The plain lab also serves the CPU budget and memory readings of the report.
"$VPCD" lab up --name "$LAB" --topology "$TMP/topology.yaml" >/dev/null
# The same with the underlay filter forced to XDP (auto picks tcx on veths):
# the number behind that choice (docs/hooks.md).
sed 's/name: b1/name: x1/; s/host: b1/host: x1/g; s/name: b2/name: x2/; s/host: b2/host: x2/g' "$TMP/topology.yaml" > "$TMP/topology-xdp.yaml"
! needed vpcd_cross_xdp || "$VPCD" lab up --name "${LAB}x" --topology "$TMP/topology-xdp.yaml" --daemon-flags "--underlay-hook xdp" >/dev/null
# The same with a flow log of every flow at a 1 s interval, to a file.
sed 's/name: b1/name: y1/; s/host: b1/host: y1/g; s/name: b2/name: y2/; s/host: b2/host: y2/g' "$TMP/topology.yaml" > "$TMP/topology-fl.yaml"
cat >> "$TMP/topology-fl.yaml" <<'YAML'
flow_logs:
  - {name: all, resource: "vpc:v", traffic_type: ALL, aggregation_interval: 1s, destination: "file://flows/{host}.log"}
YAML
! needed vpcd_cross_fl || "$VPCD" lab up --name "${LAB}f" --topology "$TMP/topology-fl.yaml" >/dev/null
# The same with a mirror session taking all of e1's traffic, both ways, cut
# to 128 bytes, to a collector ENI on the other host. e3, on the session's
# host but without a session of its own, is the case of an ENI without a
# session on a host that has sessions (vpcd_cross_nosession; the same e3
# in the plain lab is vpcd_cross_e3).
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
! needed vpcd_cross_mirror vpcd_cross_nosession || "$VPCD" lab up --name "${LAB}m" --topology "$TMP/topology-m.yaml" >/dev/null
# The same with a session on e1 whose filter matches none of the benchmark's
# traffic (it accepts only UDP to port 9; iperf3 is TCP): what a session
# costs that copies nothing. Its own lab, hosts k1 and k2.
sed 's/name: b1/name: k1/; s/host: b1/host: k1/g; s/name: b2/name: k2/; s/host: b2/host: k2/g' "$TMP/topology.yaml" > "$TMP/topology-n.yaml"
cat >> "$TMP/topology-n.yaml" <<'YAML'
  - {name: e4, host: k2, subnet: s, ip: 10.0.1.13, security_groups: [open]}
mirror_filters:
  - name: udp9
    ingress: [{rule_number: 1, action: accept, protocol: udp, destination_port_range: "9-9"}]
    egress: [{rule_number: 1, action: accept, protocol: udp, destination_port_range: "9-9"}]
mirror_sessions:
  - {name: none-e1, source_eni: e1, filter: udp9, session_number: 1, virtual_network_id: 4243, packet_length: 128, target: {eni: e4}}
YAML
! needed vpcd_cross_mirror_none || "$VPCD" lab up --name "${LAB}n" --topology "$TMP/topology-n.yaml" >/dev/null

# measure CLIENT SERVER ADDR KIND [STREAMS] -> Gbit/s received (the sum
# over streams). KIND is "ns" for plain namespaces or a lab's name.
measure() {
	local cns=$1 sns=$2 addr=$3 kind=$4 p=${5:-1}
	local srv cli
	if [ "$kind" != ns ]; then
		"$VPCD" lab exec --name "$kind" "$sns" -- iperf3 -s -1 >/dev/null 2>&1 &
		srv=$!
		sleep 0.4
		cli=$("$VPCD" lab exec --name "$kind" "$cns" -- iperf3 -c "$addr" -P "$p" -t "$SECS" -f g 2>&1 || true)
	else
		nsx "$sns" iperf3 -s -1 >/dev/null 2>&1 &
		srv=$!
		sleep 0.4
		cli=$(nsx "$cns" iperf3 -c "$addr" -P "$p" -t "$SECS" -f g 2>&1 || true)
	fi
	wait "$srv" 2>/dev/null || true
	echo "$cli" | awk '/receiver/ {v = $(NF-2)} END {print (v == "" ? "0" : v)}'
}

# run_case CASE -> Gbit/s of one run of it.
run_case() {
	local c=$1
	case $c in
	veth) measure vb-va vb-vb 10.97.0.2 ns ;;
	vxlan) measure vb-wa vb-wb 10.96.0.2 ns ;;
	veth4) measure vb-va vb-vb 10.97.0.2 ns 4 ;;
	wggo4) measure vb-wa vb-wb 10.99.0.2 ns 4 ;;
	vpcd_cross4) measure e1 e2 10.0.1.11 "$LAB" 4 ;;
	vpcd_same4) measure e1 e3 10.0.1.12 "$LAB" 4 ;;
	wggo) measure vb-wa vb-wb 10.99.0.2 ns ;;
	wggo1) measure vb-ua vb-ub 10.99.2.2 ns ;;
	wggo14) measure vb-ua vb-ub 10.99.2.2 ns 4 ;;
	vxlanwg) measure vb-wa vb-wb 10.98.0.2 ns ;;
	vpcd_cross) measure e1 e2 10.0.1.11 "$LAB" ;;
	vpcd_same) measure e1 e3 10.0.1.12 "$LAB" ;;
	vpcd_cross_xdp) measure e1 e2 10.0.1.11 "${LAB}x" ;;
	vpcd_cross_fl) measure e1 e2 10.0.1.11 "${LAB}f" ;;
	vpcd_cross_mirror) measure e1 e2 10.0.1.11 "${LAB}m" ;;
	vpcd_cross_mirror_none) measure e1 e2 10.0.1.11 "${LAB}n" ;;
	vpcd_cross_e3) measure e3 e2 10.0.1.11 "$LAB" ;;
	vpcd_cross_nosession) measure e3 e2 10.0.1.11 "${LAB}m" ;;
	*) echo "bench: unknown case $c" >&2; exit 1 ;;
	esac
}

# One unmeasured run of every case first (WARM seconds, 0: none): a
# path's first transfer pays once for what later ones find made (the
# WireGuard handshake, neighbour and connection-tracking entries, the
# daemon's first heap growth), and the round that met it would measure
# that instead of the path. (A daemon still gives its buffers back after
# 10 s without traffic, so every run regrows them, as on a real host.)
WARM=${WARM:-2}
if [ "$WARM" -gt 0 ]; then
	log "warming every case up: ${WARM}s each, not measured"
	for c in $CASES; do SECS=$WARM run_case "$c" >/dev/null; done
fi

declare -A R
# run_round LABEL CASE...: one run of each CASE, in order, added to R.
run_round() {
	local label=$1 c v
	shift
	for c in "$@"; do
		v=$(run_case "$c")
		R[$c]="${R[$c]:-} $v"
		log "$label $c: $v Gbit/s"
	done
}
for round in $(seq "$ROUNDS"); do
	run_round "round $round/$ROUNDS" $CASES
done

# The mirroring goals are ratios between five of these paths (0.9x and
# 0.97x, docs/mirroring.md), closer than a median of five 5 s runs
# resolves on this machine (single runs spread about ±0.1). Those five get
# COMPARE (6) more rounds of their own, the order reversed every other
# round, so their medians are over ROUNDS + COMPARE runs.
COMPARE=${COMPARE:-6}
CMP=""
for c in vpcd_cross vpcd_cross_mirror vpcd_cross_mirror_none vpcd_cross_e3 vpcd_cross_nosession; do
	case " $CASES " in *" $c "*) CMP="$CMP $c" ;; esac
done
if [ -n "$CMP" ]; then
	for round in $(seq "$COMPARE"); do
		order=$CMP
		[ $((round % 2)) = 1 ] && order=$(echo $CMP | tr ' ' '\n' | tac | tr '\n' ' ')
		run_round "compare round $round/$COMPARE" $order
	done
fi

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# latency NS/LAB FROM DST: the round-trip times of 100 pings 10 ms apart,
# in ms, one per line.
latency() {
	local kind=$1 from=$2 dst=$3 out
	if [ "$kind" = ns ]; then
		out=$(nsx "$from" ping -n -c 100 -i 0.01 "$dst" 2>/dev/null || true)
	else
		out=$("$VPCD" lab exec --name "$kind" "$from" -- ping -n -c 100 -i 0.01 "$dst" 2>/dev/null || true)
	fi
	echo "$out" | sed -n 's/.*time=\([0-9.]*\) ms/\1/p'
}
# percentiles: p50 and p99 of the numbers on stdin.
percentiles() {
	sort -g | awk '{a[NR]=$1} END {if (NR) printf "%s %s", a[int(NR*0.5+0.5)], a[int(NR*0.99+0.5)]; else print "null null"}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

declare -A M
for c in $CASES; do M[$c]=$(echo "${R[$c]}" | median); done
# Rows of cases not run (CASES=...) print n/a.

# metric LAB HOST SERIES: the value of one series (name and labels as
# exposed) from a lab host daemon's metrics, or n/a (also when the lab is
# not up, as with QUICK=1 and none of its cases).
metric() {
	{ "$VPCD" lab host --name "$1" "$2" -- bash -c "exec 3<>/dev/tcp/127.0.0.1/9477; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3" 2>/dev/null || true; } |
		awk -v m="$3" '$1 == m {printf "%.0f\n", $2; found=1} END {if (!found) print "n/a"}'
}

# BPF cost per packet in place: the kernel's own run-time statistics of
# each program during one more vpcd cross-host run (per skb: a GSO
# super-packet is one run).
progstats() {
	bpftool prog show --json 2>/dev/null | python3 -c '
import json, sys
tot = {}
for p in json.load(sys.stdin):
    n = p.get("name", "")
    if n in ("from_workload", "from_tunnel", "from_underlay", "mirror_inject"):
        t = tot.setdefault(n, [0, 0])
        t[0] += p.get("run_time_ns", 0)
        t[1] += p.get("run_cnt", 0)
for n, (ns, cnt) in sorted(tot.items()):
    print(n, ns, cnt)'
}
# QUICK=1 leaves out everything but throughput; their readings stay empty
# (n/a in the report, null in the JSON).
LWG50= LWG99= LWS50= LWS99= LVP50= LVP99= INSITU= TESTRUN=
MEM_RSS= MEM_MAPS= MEM_ENIS=n/a MEM_TOP=n/a MEM_CT=
LOAD_PEAK1= LOAD_PEAK2= LOAD_NOW1= LOAD_NOW2= STOCK_PEAK1= STOCK_PEAK2=
if [ -z "$QUICK" ]; then
log "ping latency: stock wireguard-go and vpcd across hosts, interleaved"
for round in $(seq "$ROUNDS"); do
	latency ns vb-wa 10.99.0.2 >>"$TMP/ping-wggo"
	latency ns vb-ua 10.99.2.2 >>"$TMP/ping-wggo1"
	latency "$LAB" e1 10.0.1.11 >>"$TMP/ping-vpcd"
done
read -r LWG50 LWG99 <<<"$(percentiles <"$TMP/ping-wggo")"
read -r LWS50 LWS99 <<<"$(percentiles <"$TMP/ping-wggo1")"
read -r LVP50 LVP99 <<<"$(percentiles <"$TMP/ping-vpcd")"

log "BPF run-time statistics during one vpcd cross-host run"
old_stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
echo 1 > /proc/sys/kernel/bpf_stats_enabled
progstats > "$TMP/ps0"
measure e1 e2 10.0.1.11 "$LAB" >/dev/null
progstats > "$TMP/ps1"
echo "$old_stats" > /proc/sys/kernel/bpf_stats_enabled
INSITU=$(join "$TMP/ps0" "$TMP/ps1" | awk '{dn = $4 - $2; dc = $5 - $3; if (dc > 0) printf "| %s | %d | %.0f |\n", $1, dc, dn / dc}')

log "BPF_PROG_TEST_RUN per program (go test -bench)"
TESTRUN=$("$GO" test -run XXX -bench 'BenchmarkENIFullPath|BenchmarkPrograms' -benchtime 300000x ./dataplane 2>/dev/null |
	awk '/ns\/pkt/ {name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name); for (i = 1; i < NF; i++) if ($(i+1) == "ns/pkt") printf "| %s | %s |\n", name, $i}')

log "memory: one host with 1,000 ENIs and 100,000 tracked connections"
"$GO" build -o ./bin/flowgen ./tools/flowgen
python3 - "$TMP/mem.yaml" <<'PY'
import sys
lines = ["version: 1", "hosts:", "  - {name: mm, underlay_ip: 198.18.0.61}", "vpcs:", "  - name: big", "    vni: 900",
         "    cidr: 10.50.0.0/16", "    subnets:"]
lines += ["      - {name: s%d, cidr: 10.50.%d.0/24}" % (s, s) for s in range(5)]
lines += ["security_groups:", "  - {name: open, vpc: big, ingress: [{protocol: all, cidr: 10.50.0.0/16}]}", "enis:"]
lines += ["  - {name: n%d, host: mm, subnet: s%d, ip: 10.50.%d.%d, security_groups: [open]}" % (i, i // 240, i // 240, 10 + i % 240)
          for i in range(1000)]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
"$VPCD" lab up --name "${LAB}big" --topology "$TMP/mem.yaml" >/dev/null
"$VPCD" lab exec --name "${LAB}big" n0 -- ./bin/flowgen -pace 0 -ports 10000-59999 10.50.0.11 >/dev/null
sleep 3 # a conntrack sample and the flow drain run with the table full
# One status read: resident memory, map memory, ENIs, the largest maps.
{ read -r MEM_RSS MEM_MAPS MEM_ENIS; read -r MEM_TOP; } <<<"$("$VPCD" status --socket "/run/vpcd/labs/${LAB}big/hosts/mm/vpcd.sock" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["resident_bytes"], d["map_memory_bytes"], len(d.get("enis", [])))
print(", ".join("%s %.1f" % (m["name"], m["bytes"] / 2**20) for m in d["map_memory"][:4]))')"
MEM_CT=$(metric "${LAB}big" mm vpcd_conntrack_entries)
# The two-host lab's daemons after all the traffic: the peak (wireguard-go
# holds a 64 KiB buffer per packet in flight) and now, after the quiet
# spell of the memory lab (the daemon returns buffers 10 s after traffic).
# statusbytes PID KEY: a VmXXX line of a process's status, in bytes, or
# nothing when the process is gone.
statusbytes() { awk -v k="$2" '$1 == k":" {print $2 * 1024}' "/proc/$1/status" 2>/dev/null || true; }
procmem() { local v; v=$(statusbytes "$(cat "/run/vpcd/labs/$LAB/hosts/$1/vpcd.pid" 2>/dev/null)" "$2"); echo "${v:-n/a}"; }
LOAD_PEAK1=$(procmem b1 VmHWM); LOAD_PEAK2=$(procmem b2 VmHWM)
LOAD_NOW1=$(procmem b1 VmRSS); LOAD_NOW2=$(procmem b2 VmRSS)
# Stock wireguard-go's peaks over the same runs, for comparison.
# (The daemon is the process in the host's namespace; see cleanup.)
nspeak() { for p in $(ip netns pids "$1" 2>/dev/null); do statusbytes "$p" VmHWM; done | sort -n | tail -1; }
STOCK_PEAK1=$(nspeak vb-wa); STOCK_PEAK2=$(nspeak vb-wb)
"$VPCD" lab down --name "${LAB}big" >/dev/null
fi
num() { case $1 in '' | *[!0-9]*) echo null ;; *) echo "$1" ;; esac; }
mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.1f", b / 1048576; else print "n/a" }'; }

# What each mirror session copied and dropped over all its runs (its lab's
# every run: e3's runs in the mirror lab add no copies). The session whose
# filter matches nothing must have copied nothing.
MIRRORED=$(metric "${LAB}m" z1 'vpcd_mirror_packets_total{session="all-e1"}')
MIRROR_DROPPED=$(metric "${LAB}m" z1 'vpcd_mirror_dropped_total{session="all-e1"}')
MIRRORED_NONE=$(metric "${LAB}n" k1 'vpcd_mirror_packets_total{session="none-e1"}')
MIRROR_NONE_DROPPED=$(metric "${LAB}n" k1 'vpcd_mirror_dropped_total{session="none-e1"}')


cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
VPCD_CPUS=$("$VPCD" status --socket "/run/vpcd/labs/$LAB/hosts/b1/vpcd.sock" --json | python3 -c 'import json, sys; print(json.load(sys.stdin).get("cpus", "n/a"))' || echo n/a)
# make bench-controlplane's section (and JSON key) are its own: kept as they are.
CP_SECTION=$(sed -n '/^<!-- controlplane -->$/,/^<!-- \/controlplane -->$/p' "$OUT" 2>/dev/null || true)
# make bench-cni's section likewise.
CNI_SECTION=$(sed -n '/^<!-- cni -->$/,/^<!-- \/cni -->$/p' "$OUT" 2>/dev/null || true)
CP_JSON=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(json.dumps(d["controlplane"]) if "controlplane" in d else "")' "${OUT%.md}.json" 2>/dev/null || true)
{
	echo "# vpcd benchmarks"
	echo
	echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d) — $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)."
	echo "iperf3, one TCP stream, ${SECS}s per run, $ROUNDS rounds interleaved after an unmeasured ${WARM}s run of every case, median shown; every path shares the same 2 cores"
	echo "(both ends of each connection run on this machine), so compare ratios, not absolutes. The five paths the mirroring goals"
	echo "compare (vpcd across hosts, with either mirror session, and e3 on either host) get $COMPARE more rounds of their own. Each vpcd daemon runs"
	echo "with its default CPU budget, $VPCD_CPUS of the $(nproc) CPUs (\`vpcd run --cpus\`); stock wireguard-go as shipped uses all of them."
	echo
	echo "| path | Gbit/s (median) | runs | ratio |"
	echo "|---|---:|---|---|"
	echo "| bare veth pair | ${M[veth]:-n/a} |${R[veth]:-} | 1.00x of itself |"
	echo "| kernel VXLAN, in the clear, over the same underlay | ${M[vxlan]:-n/a} |${R[vxlan]:-} | $(ratio "${M[vxlan]:-n/a}" "${M[wggo]:-n/a}") of wireguard-go |"
	echo "| stock wireguard-go, host to host | ${M[wggo]:-n/a} |${R[wggo]:-} | baseline |"
	echo "| stock wireguard-go held to one CPU (GOMAXPROCS=1), for reference | ${M[wggo1]:-n/a} |${R[wggo1]:-} | $(ratio "${M[wggo1]:-n/a}" "${M[wggo]:-n/a}") of wireguard-go |"
	echo "| kernel VXLAN over wireguard-go | ${M[vxlanwg]:-n/a} |${R[vxlanwg]:-} | $(ratio "${M[vxlanwg]:-n/a}" "${M[wggo]:-n/a}") of wireguard-go |"
	echo "| vpcd ENI→ENI across hosts (VXLAN in WireGuard) | ${M[vpcd_cross]:-n/a} |${R[vpcd_cross]:-} | $(ratio "${M[vpcd_cross]:-n/a}" "${M[wggo]:-n/a}") of wireguard-go; $(ratio "${M[vpcd_cross]:-n/a}" "${M[wggo1]:-n/a}") of it at one CPU |"
	echo "| vpcd ENI→ENI on one host | ${M[vpcd_same]:-n/a} |${R[vpcd_same]:-} | $(ratio "${M[vpcd_same]:-n/a}" "${M[veth]:-n/a}") of a bare veth pair |"
	echo "| vpcd across hosts with a flow log of every flow (1 s interval, file) | ${M[vpcd_cross_fl]:-n/a} |${R[vpcd_cross_fl]:-} | $(ratio "${M[vpcd_cross_fl]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd without |"
	echo "| vpcd across hosts with a mirror session copying all of the sender's traffic (128 bytes) to an ENI on the receiver's host | ${M[vpcd_cross_mirror]:-n/a} |${R[vpcd_cross_mirror]:-} | $(ratio "${M[vpcd_cross_mirror]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd without; $MIRRORED copies sent, $MIRROR_DROPPED dropped |"
	echo "| vpcd across hosts with a mirror session on the sender whose filter matches none of the traffic (UDP port 9 only) to the same kind of target | ${M[vpcd_cross_mirror_none]:-n/a} |${R[vpcd_cross_mirror_none]:-} | $(ratio "${M[vpcd_cross_mirror_none]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd without; $MIRRORED_NONE copies sent, $MIRROR_NONE_DROPPED dropped |"
	echo "| vpcd across hosts from a second ENI (e3) on a host without any session | ${M[vpcd_cross_e3]:-n/a} |${R[vpcd_cross_e3]:-} | $(ratio "${M[vpcd_cross_e3]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd from e1 |"
	echo "| vpcd across hosts from an ENI without a session (e3) on a host that has one (the all-traffic session's) | ${M[vpcd_cross_nosession]:-n/a} |${R[vpcd_cross_nosession]:-} | $(ratio "${M[vpcd_cross_nosession]:-n/a}" "${M[vpcd_cross_e3]:-n/a}") of the same ENI on a host without any session |"
	echo "| vpcd across hosts, underlay filter forced to XDP on the veth | ${M[vpcd_cross_xdp]:-n/a} |${R[vpcd_cross_xdp]:-} | $(ratio "${M[vpcd_cross_xdp]:-n/a}" "${M[vpcd_cross]:-n/a}") of vpcd with tcx there |"
	echo
	echo "Four streams (iperf3 -P 4), same rounds:"
	echo
	echo "| path | Gbit/s (median) | runs | ratio |"
	echo "|---|---:|---|---|"
	echo "| bare veth pair | ${M[veth4]:-n/a} |${R[veth4]:-} | 1.00x of itself |"
	echo "| stock wireguard-go | ${M[wggo4]:-n/a} |${R[wggo4]:-} | baseline |"
	echo "| stock wireguard-go held to one CPU, for reference | ${M[wggo14]:-n/a} |${R[wggo14]:-} | $(ratio "${M[wggo14]:-n/a}" "${M[wggo4]:-n/a}") of wireguard-go |"
	echo "| vpcd ENI→ENI across hosts | ${M[vpcd_cross4]:-n/a} |${R[vpcd_cross4]:-} | $(ratio "${M[vpcd_cross4]:-n/a}" "${M[wggo4]:-n/a}") of wireguard-go; $(ratio "${M[vpcd_cross4]:-n/a}" "${M[wggo14]:-n/a}") of it at one CPU |"
	echo "| vpcd ENI→ENI on one host | ${M[vpcd_same4]:-n/a} |${R[vpcd_same4]:-} | $(ratio "${M[vpcd_same4]:-n/a}" "${M[veth4]:-n/a}") of a bare veth pair |"
	echo
	echo "Mirror sessions over their runs: all of the sender's traffic, $MIRRORED copies sent, $MIRROR_DROPPED dropped (a full"
	echo "mirror path or a failed send); the filter that matches nothing, $MIRRORED_NONE copies sent, $MIRROR_NONE_DROPPED dropped."
	echo
	echo "Ping latency, 100 pings 10 ms apart per path and round, rounds interleaved, milliseconds:"
	echo
	echo "| path | p50 | p99 |"
	echo "|---|---:|---:|"
	echo "| stock wireguard-go | ${LWG50:-n/a} | ${LWG99:-n/a} |"
	echo "| stock wireguard-go held to one CPU | ${LWS50:-n/a} | ${LWS99:-n/a} |"
	echo "| vpcd across hosts | ${LVP50:-n/a} | ${LVP99:-n/a} | "
	echo
	echo "p50 ratio vpcd / wireguard-go: $(ratio "${LVP50:-n/a}" "${LWG50:-n/a}")"
	echo
	echo "## eBPF cost per packet"
	echo
	echo "In place, from the kernel's statistics (\`kernel.bpf_stats_enabled\`) over one more vpcd cross-host"
	echo "iperf3 run; a run is one skb, a GSO super-packet counting once:"
	echo
	echo "| program | runs | ns per run |"
	echo "|---|---:|---:|"
	echo "${INSITU:-| n/a | | |}"
	echo
	echo "BPF_PROG_TEST_RUN with 64-byte packets (\`go test -bench 'BenchmarkENIFullPath|BenchmarkPrograms' ./dataplane\`);"
	echo "the empty programs show what the test harness itself costs per run, to subtract:"
	echo
	echo "| case | ns per packet |"
	echo "|---|---:|"
	echo "${TESTRUN:-| n/a | |}"
	echo
	echo "## Memory"
	echo
	echo "One host with $MEM_ENIS ENIs (a lab with one namespace each) and ${MEM_CT:-n/a} tracked connections"
	echo "(\`tools/flowgen\` opened them from one ENI):"
	echo
	echo "| what | MiB |"
	echo "|---|---:|"
	echo "| vpcd resident memory | $(mib "$MEM_RSS") |"
	echo "| BPF maps, kernel memory (all of vpcd's maps) | $(mib "$MEM_MAPS") |"
	echo
	echo "Largest maps (MiB): $MEM_TOP."
	echo
	echo "Under traffic (the two-host lab's daemons, every run above): peak resident $(mib "$LOAD_PEAK1") MiB (sender host)"
	echo "and $(mib "$LOAD_PEAK2") MiB (receiver host), wireguard-go's 64 KiB buffer per packet in flight; after 10 s without"
	echo "tunnel traffic the daemon gives them back: $(mib "$LOAD_NOW1") and $(mib "$LOAD_NOW2") MiB when measured."
	echo "Stock wireguard-go's peaks over its runs: $(mib "$STOCK_PEAK1") and $(mib "$STOCK_PEAK2") MiB."
} > "$OUT"
{
	printf '{"date":"%s","cores":%s,"kernel":"%s","gbit_per_s":{' "$(date -u +%FT%TZ)" "$(nproc)" "$(uname -r)"
	first=1
	for c in $CASES; do
		[ $first = 1 ] || printf ','
		printf '"%s":{"median":%s,"runs":[%s]}' "$c" "${M[$c]:-null}" "$(echo ${R[$c]:-} | tr ' ' ',')"
		first=0
	done
	printf '},"vpcd_cpus":%s,"ping_ms":{"wireguard_go":{"p50":%s,"p99":%s},"wireguard_go_one_cpu":{"p50":%s,"p99":%s},"vpcd_cross":{"p50":%s,"p99":%s}}' \
		"$(num "$VPCD_CPUS")" "${LWG50:-null}" "${LWG99:-null}" "${LWS50:-null}" "${LWS99:-null}" "${LVP50:-null}" "${LVP99:-null}"
	printf ',"mirror":{"copies":"%s","dropped":"%s"}' "$MIRRORED" "$MIRROR_DROPPED"
	printf ',"mirror_none":{"copies":"%s","dropped":"%s"}' "$MIRRORED_NONE" "$MIRROR_NONE_DROPPED"
	printf ',"memory":{"enis":%s,"conntrack":%s,"resident_bytes":%s,"map_bytes":%s,"under_traffic_peak_bytes":[%s,%s],"after_traffic_bytes":[%s,%s]}}\n' \
		"$(num "$MEM_ENIS")" "$(num "$MEM_CT")" "$(num "$MEM_RSS")" "$(num "$MEM_MAPS")" \
		"$(num "$LOAD_PEAK1")" "$(num "$LOAD_PEAK2")" "$(num "$LOAD_NOW1")" "$(num "$LOAD_NOW2")"
} > "${OUT%.md}.json"
"$GO" run ./tools/benchchart -in "${OUT%.md}.json" -out "${OUT%.md}.png" && echo "![throughput](${OUT%.md}.png)" >> "$OUT"
[ -z "$CP_SECTION" ] || printf '\n%s\n' "$CP_SECTION" >>"$OUT"
[ -z "$CNI_SECTION" ] || printf '\n%s\n' "$CNI_SECTION" >>"$OUT"
[ -z "$CP_JSON" ] || python3 -c 'import json, sys; p = sys.argv[1]; d = json.load(open(p)); d["controlplane"] = json.loads(sys.argv[2]); open(p, "w").write(json.dumps(d, separators=(",", ":")) + "\n")' "${OUT%.md}.json" "$CP_JSON"
# Tap ENIs (VMs): XDP and tcx with a frame generator, iperf3 through frame
# pumps; its own section, written in place (make bench-taps alone).
if [ -z "$QUICK" ]; then
log "tap ENIs"
OUT="$OUT" GO="$GO" ROUNDS=3 ./scripts/bench-taps.sh >/dev/null || log "tap ENIs: failed; BENCHMARKS.md keeps its previous tap section"
fi
cat "$OUT"
log "wrote $OUT, ${OUT%.md}.json and ${OUT%.md}.png"
