#!/usr/bin/env bash
# Packet tracer cost (issue 16): wrk in namespace A against nginx in
# namespace B, across a bridge in namespace R (two veth pairs), alternating
# in one run between
#   off      no tracer
#   miss     `kindling trace-packets` attached, its filter matching nothing:
#            what every packet of the host pays while a trace runs
#   sampled  following one flow in 8 (--sample 8)
#   traced   following every packet of the load, without budget
#            (JSON lines to a file on disk)
# then a profiled `traced` and `miss` run with kernel.bpf_stats_enabled:
# BPF time per traced packet and per hop.
#
# Usage (root): bash benches/packets/run.sh [SECONDS_PER_RUN=10] [ROUNDS=3]
# ROUNDS=0 makes only the profiled runs. PERF_OUT=FILE also records the
# tracer process with `perf record -g` during the profiled `traced` run.
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${CONNS:-16}
cd "$(dirname "$0")/../.."
root=$(pwd)

for p in nginx-light wrk bpftool nftables iproute2; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p"; }
done
cargo build --release -q -p kindling-cli
kindling=$root/target/release/kindling

work=$(mktemp -d /var/tmp/kindling-packets.XXXXXX)
A=kb$$a B=kb$$b R=kb$$r
nginx_pid=""
tracer_pid=""
cleanup() {
  [ -n "$tracer_pid" ] && kill "$tracer_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled=0 || true
  for n in $A $B $R; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for n in $A $B $R; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$R" link add br0 type bridge
ip -n "$R" link set br0 up
for h in $A $B; do
  ip -n "$R" link add "p$h" type veth peer name eth0 netns "$h"
  ip -n "$R" link set "p$h" master br0 up
  ip -n "$h" link set eth0 up
done
ip -n "$A" addr add 10.10.0.10/24 dev eth0
ip -n "$B" addr add 10.10.0.20/24 dev eth0

source benches/nginx.sh
port=8080
start_nginx "$work/nginx" "$port" 10.10.0.20 "$B"
url="http://10.10.0.20:$port/"
ip netns exec "$A" wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null   # warm-up

start_tracer() {
  local mode=$1 args=()
  tracer_pid=""
  case $mode in
    off) return 0 ;;
    miss|miss-profiled) args=(--port 9) ;;
    sampled) args=(--port "$port" --sample 8) ;;
    traced|traced-profiled) args=(--port "$port" --budget 100000000) ;;
  esac
  "$kindling" trace-packets "${args[@]}" -o json >"$work/trace.json" 2>"$work/trace.err" &
  tracer_pid=$!
  for _ in $(seq 300); do grep -q attached "$work/trace.err" 2>/dev/null && break; sleep 0.1; done
  grep -q attached "$work/trace.err" || { cat "$work/trace.err" >&2; exit 1; }
  sleep 0.5
}

stop_tracer() {
  [ -z "$tracer_pid" ] && return 0
  kill -INT "$tracer_pid"; wait "$tracer_pid" 2>/dev/null || true
  tracer_pid=""
}

bpf_time() { # total run_time_ns and run_cnt of the tracer's programs, then each
  bpftool prog show -j | python3 -c '
import json, sys
names = ("on_queue", "on_receive", "on_drop", "on_consume", "on_deliver")
tot = cnt = 0
per = []
for p in json.load(sys.stdin):
    if p.get("name", "") in names:
        t, c = p.get("run_time_ns", 0), p.get("run_cnt", 0)
        tot += t; cnt += c
        if c:
            n = p["name"]
            per.append(f"{n}={c}x{t // c}ns")
print(tot, cnt, ",".join(per))'
}

results=$work/results.tsv
: > "$results"
run_one() {
  local mode=$1 round=$2
  start_tracer "$mode"
  local perf_pid=""
  if [ "$mode" = traced-profiled ] && [ -n "${PERF_OUT:-}" ]; then
    perf record -q -g -o "$PERF_OUT" -p "$tracer_pid" -- sleep "$DUR" 2>/dev/null &
    perf_pid=$!
  fi
  local out; out=$(ip netns exec "$A" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$url")
  [ -n "$perf_pid" ] && wait "$perf_pid" || true
  local bpf="- -"
  [[ $mode == *profiled ]] && bpf=$(bpf_time)
  stop_tracer
  local rps p99 packets="-" hops="-" lost="-"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '/^ +99%/ {print $2; exit}' <<<"$out")
  if [ "$mode" != off ]; then
    packets=$(sed -n 's/^kindling: \([0-9]*\) packets, \([0-9]*\) hops.*/\1/p' "$work/trace.err")
    hops=$(sed -n 's/^kindling: \([0-9]*\) packets, \([0-9]*\) hops.*/\2/p' "$work/trace.err")
    lost=$(sed -n 's/.*ring_full=\([0-9]*\) over_budget=\([0-9]*\).*/\1+\2/p' "$work/trace.err")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$rps" "$p99" "$packets" "$hops" "$lost" "$bpf" >> "$results"
  printf '%-16s round %s: %10s req/s  p99 %8s  packets %s hops %s lost %s bpf %s\n' \
    "$mode" "$round" "$rps" "$p99" "$packets" "$hops" "$lost" "$bpf" >&2
}

for r in $(seq "$ROUNDS"); do
  for m in off miss sampled traced; do run_one "$m" "$r"; done
done
sysctl -qw kernel.bpf_stats_enabled=1
run_one traced-profiled 1
run_one miss-profiled 1
sysctl -qw kernel.bpf_stats_enabled=0

python3 - "$results" "$DUR" <<'PY'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
dur = float(sys.argv[2])
by, rounds = {}, {}
for m, r, rps, p99, packets, hops, lost, bpf in rows:
    by.setdefault(m, []).append(dict(rps=float(rps), p99=p99, packets=packets, hops=hops, lost=lost, bpf=bpf))
    rounds.setdefault(r, {})[m] = float(rps)
if "off" not in by:
    rounds = {}
print("| mode | req/s (median) | vs off (median of per-round ratios) | throughput loss | p99 | packets traced | hops | lost |")
print("|---|---|---|---|---|---|---|---|")
for m in ["off", "miss", "sampled", "traced"]:
    xs = by.get(m, [])
    if not xs:
        continue
    if not rounds:
        break
    ratio = st.median(rd[m] / rd["off"] for rd in rounds.values() if m in rd and "off" in rd)
    print(f"| {m} | {st.median(x['rps'] for x in xs):.0f} | {ratio:.3f} | {100*(1-ratio):.1f}% | "
          f"{','.join(x['p99'] for x in xs)} | {','.join(x['packets'] for x in xs)} | "
          f"{','.join(x['hops'] for x in xs)} | {','.join(x['lost'] for x in xs)} |")
print()
for m in ["traced-profiled", "miss-profiled"]:
    x = by.get(m, [None])[0]
    if not x:
        continue
    parts = x["bpf"].split()
    ns, runs = float(parts[0]), float(parts[1])
    per = parts[2] if len(parts) > 2 else "-"
    line = (f"{m}: {x['rps']:.0f} req/s; BPF {ns/1e9:.2f} s CPU over {runs:.0f} program runs "
            f"({ns/max(runs,1):.0f} ns/run, {100*ns/1e9/dur:.1f}% of one core)")
    if x["packets"] not in ("-", "", "0"):
        line += (f"; {ns/float(x['packets']):.0f} ns per traced packet, "
                 f"{ns/float(x['hops']):.0f} ns per hop written")
    print(line)
    print(f"  per program (runs x ns/run): {per}")
PY
