#!/usr/bin/env bash
# make bench-controlplane: `vpcd fleet-sim` at N = 10, 100 and 1,000
# simulated hosts against one real etcd (Debian's etcd-server) on
# loopback, with its data in a temporary directory, stopped by PID. Each
# run also restarts that etcd once to measure the herd. Writes the
# "Control plane" section of BENCHMARKS.md (between its markers, the rest
# of the file untouched; `make bench` keeps it) and the "controlplane" key
# of BENCHMARKS.json.
#
#   scripts/bench-controlplane.sh                 the benchmark
#   scripts/bench-controlplane.sh restart-etcd D  restart the etcd of state dir D
#                                                 (fleet-sim's --restart-cmd)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"10 100 1000"}
ENIS=${ENIS:-2}
OUT=${OUT:-BENCHMARKS.md}
VPCD=${VPCD:-./bin/vpcd}
SELF="$(pwd)/scripts/bench-controlplane.sh"

log() { printf '[bench-controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# start_etcd DIR: starts etcd with the arguments in DIR/args, its PID in
# DIR/pid, and waits until it answers.
start_etcd() {
	local dir=$1
	# shellcheck disable=SC2046
	etcd $(cat "$dir/args") >>"$dir/etcd.log" 2>&1 &
	echo $! >"$dir/pid"
	disown # killed on purpose by stop_etcd: no "Killed" line from bash
	for _ in $(seq 300); do
		curl -sf "$(cat "$dir/url")/health" >/dev/null 2>&1 && return 0
		kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -20 "$dir/etcd.log" >&2; return 1; }
		sleep 0.05
	done
	echo "etcd did not answer within 15 s" >&2
	return 1
}

# stop_etcd DIR: kills the etcd whose PID DIR/pid holds and waits for it.
stop_etcd() {
	local dir=$1 pid
	pid=$(cat "$dir/pid" 2>/dev/null) || return 0
	[ -n "$pid" ] || return 0
	kill -KILL "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
	: >"$dir/pid"
}

if [ "${1:-}" = restart-etcd ]; then
	stop_etcd "$2"
	start_etcd "$2"
	exit 0
fi

command -v etcd >/dev/null || { echo "bench-controlplane: etcd not found (make deps installs etcd-server)" >&2; exit 1; }
[ -x "$VPCD" ] || { echo "bench-controlplane: $VPCD not built (make build)" >&2; exit 1; }

TMP=$(mktemp -d)
cleanup() {
	stop_etcd "$TMP"
	rm -rf "$TMP"
}
trap cleanup EXIT

read -r CPORT PPORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
URL="http://127.0.0.1:$CPORT"
echo "$URL" >"$TMP/url"
echo "--name bench --data-dir $TMP/data --listen-client-urls $URL --advertise-client-urls $URL" \
	"--listen-peer-urls http://127.0.0.1:$PPORT --initial-advertise-peer-urls http://127.0.0.1:$PPORT" \
	"--initial-cluster bench=http://127.0.0.1:$PPORT --initial-cluster-state new" >"$TMP/args"
# 1,000 clients hold 1,000 connections.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "etcd $(etcd --version | head -1 | awk '{print $3}') on $URL"
start_etcd "$TMP"

# Other work on the machine shares the cores with the simulation: say how busy it was.
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
for n in $SIZES; do
	log "fleet-sim with $n hosts"
	"$VPCD" fleet-sim --etcd "$URL" --hosts "$n" --enis-per-host "$ENIS" --json \
		--restart-cmd "$SELF restart-etcd $TMP" >"$TMP/fleet-$n.json" 2>"$TMP/fleet-$n.log" ||
		{ tail -20 "$TMP/fleet-$n.log" >&2; exit 1; }
done

ETCD_VERSION=$(etcd --version | head -1 | awk '{print $3}')
python3 - "$OUT" "${OUT%.md}.json" "$ETCD_VERSION" "$LOAD0" $(for n in $SIZES; do echo "$TMP/fleet-$n.json"; done) <<'EOF'
import datetime, json, os, platform, re, sys

md_path, json_path, etcd_version, load0, *runs = sys.argv[1:]
load1 = open("/proc/loadavg").read().split()[0]
res = [json.load(open(p)) for p in runs]
begin, end = "<!-- controlplane -->", "<!-- /controlplane -->"
today = datetime.date.today().isoformat()

def f(x, nd=0):
    return f"{x:,.{nd}f}"

lines = [begin, "## Control plane", "",
    f"Measured by `make bench-controlplane` on {today} — {os.cpu_count()} cores, Linux {platform.release()}, one etcd "
    f"{etcd_version} (Debian) on loopback, data in a temporary directory. `vpcd fleet-sim` runs N simulated hosts in one "
    "process, each with its own etcd client, its own lease-bound registration carrying its own WireGuard public key, "
    "its own watch (`controlplane.Source`) and its own plan (`plan.ForHostWith`, as etcd mode plans), with a datapath that only records what it would "
    "program. Base: N hosts, "
    f"{res[0]['enis_per_host']} ENIs each, {res[0]['vpcs']} VPCs, two security groups per VPC. Convergence is measured from "
    "the start of the apply (its reads, lock and write included) until every host that needs the change has it "
    "programmed: a new ENI (every host needs its route), then a rule added to one security group (the hosts with an "
    f"ENI in it). Load average {load0} before the runs and {load1} after them (this machine has "
    f"{os.cpu_count()} cores; the simulated hosts, etcd and anything else running share them, so the 1,000-host "
    "latencies move with it). Requests and events are per host, from the apply until the last host converged; the requests are "
    "lease keepalives that fell in that window (a change itself costs a host no request, only watch events: the "
    "apply's lock, its transaction of object and commit record, the lock's release).", "",
    "| hosts | change | hosts in need | p50 ms | p99 ms | max ms | etcd requests / host | watch events / host |",
    "|---:|---|---:|---:|---:|---:|---:|---:|"]
for r in res:
    for c in r["changes"]:
        lines.append(f"| {f(r['hosts'])} | {c['name']} | {f(c['needed'])} | {f(c['p50_ms'])} | {f(c['p99_ms'])} | "
                     f"{f(c['max_ms'])} | {c['etcd_requests_per_host']:.2f} | {c['watch_events_per_host']:.2f} |")
lines += ["",
    "| hosts | objects | base programmed everywhere, ms | heap per simulated host, KiB | one decoded topology, KiB | "
    "one assembly (decode + validate), ms | one plan, ms | idle etcd requests/s |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in res:
    lines.append(f"| {f(r['hosts'])} | {f(r['objects'])} | {f(r['base_ms'])} | {f(r['heap_per_host_bytes']/1024)} | "
                 f"{f(max(0, r['topology_bytes'])/1024)} | {r['assemble_ms']:.1f} | {r['plan_ms']:.2f} | "
                 f"{f(r['idle_requests_per_second'])} |")
lines += ["", "etcd restarted (killed and started on the same data) once per run:", "",
    "| hosts | etcd down, ms | all clients reconnected, ms | all watches resumed, ms | full re-reads | "
    "peak requests/s sent | peak messages/s received by etcd | registrations after |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in res:
    h = r.get("herd")
    if not h:
        continue
    srv = f(h["peak_server_rps"]) if h["peak_server_rps"] >= 0 else "n/a"
    lines.append(f"| {f(r['hosts'])} | {f(h['restart_ms'])} | {f(h['reconnect_ms'])} | {f(h['resume_ms'])} | "
                 f"{h['full_reads']} | {f(h['peak_client_rps'])} | {srv} | {f(h['registrations'])} |")
big = res[-1]
goal = max(c["p99_ms"] for c in big["changes"])
lines += ["",
    f"Goal (SPEC §11): p99 ≤ 2 s at 1,000 hosts; measured p99 {f(goal)} ms at {f(big['hosts'])} hosts. "
    "\"Resumed\" is measured from etcd answering again until every host programmed a change applied right then; "
    "reconnections and resumed watches need no re-read of the prefix (full re-reads 0).", "",
    "One piece of work is shared between the simulated hosts: decoding and validating each revision's state "
    "(`controlplane.SharedAssembly`), which every real daemon does once per change on its own CPU — done N times on "
    "this machine's cores it would measure the simulator, not a host. Each host's latency still includes one "
    "assembly (the first host to need a revision assembles it, the others wait for it); everything else (watch, "
    "events, plan, digest) runs per host. `vpcd fleet-sim --no-share` turns the sharing off.", "",
    f"What limits it ({f(big['hosts'])} hosts): {big['limits']}.", end]
section = "\n".join(lines) + "\n"

md = open(md_path).read() if os.path.exists(md_path) else "# vpcd benchmarks\n"
if begin in md and end in md:
    md = re.sub(re.escape(begin) + ".*?" + re.escape(end) + "\n?", lambda m: section, md, flags=re.S)
else:
    md = md.rstrip("\n") + "\n\n" + section
open(md_path, "w").write(md)

data = json.load(open(json_path)) if os.path.exists(json_path) else {}
data["controlplane"] = {"date": today, "etcd": etcd_version, "load_average": [float(load0), float(load1)], "runs": res}
with open(json_path, "w") as fh:
    json.dump(data, fh, separators=(",", ":"))
    fh.write("\n")
print(section)
EOF
log "wrote the control plane section of $OUT and ${OUT%.md}.json"
